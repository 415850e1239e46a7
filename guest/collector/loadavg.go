package collector

import (
	"fmt"
	"math"

	"github.com/prometheus/procfs"

	"github.com/hotplugheaven/hotplug/proto"
)

// maxLoad mirrors proto.Report.Validate: a load average past a million is
// not a real guest but a misparsed file.
const maxLoad = 1e6

// loadAvgSource reads /proc/loadavg (Documentation/filesystems/proc.rst,
// "1.2 Kernel data", loadavg) through procfs.
type loadAvgSource struct {
	fs   procfs.FS
	path string
	cur  procfs.LoadAvg
}

func (s *loadAvgSource) Name() string { return SourceLoadAvg }
func (s *loadAvgSource) Path() string { return s.path }

func (s *loadAvgSource) Read() error {
	load, err := s.fs.LoadAvg()
	if err == nil {
		err = checkLoad(load)
	}
	if err != nil {
		return fmt.Errorf("collector: %w", inFile(s.path, err))
	}
	s.cur = *load
	return nil
}

func (s *loadAvgSource) Fill(r *proto.Report) error {
	r.Load1 = s.cur.Load1
	return nil
}

// checkLoad rejects what the kernel cannot print. strconv, which procfs
// uses, accepts "NaN" and "Inf".
func checkLoad(l *procfs.LoadAvg) error {
	for _, v := range [...]float64{l.Load1, l.Load5, l.Load15} {
		if math.IsNaN(v) || v < 0 || v > maxLoad {
			return fmt.Errorf("%w: load average %v outside [0, %g]", ErrParse, v, float64(maxLoad))
		}
	}
	return nil
}
