package collector

import (
	"errors"
	"fmt"
	"math"
	"syscall"

	"github.com/prometheus/procfs"

	"github.com/hotplugheaven/hotplug/proto"
)

// psiSource reads the "some" line of /proc/pressure/cpu
// (Documentation/accounting/psi.rst) through procfs. The kernel has none
// before 4.20, with CONFIG_PSI off, or booted with psi=0 (reading fails
// with EOPNOTSUPP).
type psiSource struct {
	fs   procfs.FS
	path string
	cur  *proto.PSI
}

func (s *psiSource) Name() string { return SourcePSI }
func (s *psiSource) Path() string { return s.path }

func (s *psiSource) Read() error {
	s.cur = nil
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
		return absent(s.path, err, "this kernel has no PSI (needs 4.20+ with CONFIG_PSI); the host sizes without CPU pressure")
	}
	s.cur = &proto.PSI{
		// A percentage the kernel computes in fixed point: it can print
		// 100.00 but not more; clamp in case of rounding.
		SomeAvg10:       min(st.Some.Avg10, 100),
		SomeTotalMicros: st.Some.Total,
	}
	return nil
}

func (s *psiSource) Fill(r *proto.Report) error {
	r.PSI = s.cur
	return nil
}
