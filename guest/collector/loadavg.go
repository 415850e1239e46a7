package collector

import (
	"fmt"
	"math"

	"github.com/prometheus/procfs"
)

// maxLoad mirrors proto.Report.Validate: a load average past a million is
// not a real guest but a misparsed file.
const maxLoad = 1e6

// readLoadAvg reads /proc/loadavg (Documentation/filesystems/proc.rst,
// "1.2 Kernel data", loadavg) through procfs.
func (s *Sampler) readLoadAvg() (*procfs.LoadAvg, error) {
	load, err := s.fs.LoadAvg()
	if err == nil {
		err = checkLoad(load)
	}
	if err != nil {
		err = fmt.Errorf("collector: %w", inFile(s.sources[srcLoadAvg].Path, err))
		s.setSource(srcLoadAvg, false, err)
		return nil, err
	}
	s.setSource(srcLoadAvg, true, nil)
	return load, nil
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
