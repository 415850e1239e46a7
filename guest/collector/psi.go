package collector

import (
	"errors"
	"fmt"
	"math"
	"syscall"

	"github.com/hotplugheaven/hotplug/proto"
)

// readPSI reads the "some" line of /proc/pressure/cpu
// (Documentation/accounting/psi.rst) through procfs. It returns nil when the
// kernel has no PSI (before 4.20, CONFIG_PSI off, or booted with psi=0, when
// reading fails with EOPNOTSUPP); the reason is kept for Sources.
func (s *Sampler) readPSI() *proto.PSI {
	st, err := s.fs.PSIStatsForResource("cpu")
	if errors.Is(err, syscall.EOPNOTSUPP) {
		err = fmt.Errorf("%w: PSI is built in but disabled (psi=0 on the kernel command line, or CONFIG_PSI_DEFAULT_DISABLED without psi=1)", err)
	}
	if err == nil && st.Some == nil {
		err = fmt.Errorf("%w: no \"some\" line", ErrParse)
	}
	if err == nil && (math.IsNaN(st.Some.Avg10) || st.Some.Avg10 < 0) {
		// procfs scans with fmt, which accepts "NaN" and negative numbers.
		err = fmt.Errorf("%w: some avg10=%v", ErrParse, st.Some.Avg10)
	}
	if err != nil {
		s.setSource(srcPSI, false, absent(s.psiPath, err,
			"this kernel has no PSI (needs 4.20+ with CONFIG_PSI); the host sizes without CPU pressure"))
		return nil
	}
	s.setSource(srcPSI, true, nil)
	return &proto.PSI{
		// A percentage the kernel computes in fixed point: it can print
		// 100.00 but not more; clamp in case of rounding.
		SomeAvg10:       min(st.Some.Avg10, 100),
		SomeTotalMicros: st.Some.Total,
	}
}
