package collector

import (
	"errors"
	"fmt"
)

// maxMemoryBytes mirrors proto.Report.Validate: a PiB of guest memory is a
// misparsed file.
const maxMemoryBytes = 1 << 50

// errNoMemAvailable marks the meminfo source as degraded.
var errNoMemAvailable = errors.New("MemAvailable missing (kernel before 3.14): reporting MemFree+Buffers+Cached instead, which overstates what can be reclaimed")

type memory struct{ total, available uint64 }

// readMeminfo reads MemTotal and MemAvailable from /proc/meminfo
// (Documentation/filesystems/proc.rst, "meminfo") through procfs.
func (s *Sampler) readMeminfo() (memory, error) {
	mi, err := s.fs.Meminfo()
	if err != nil {
		err = fmt.Errorf("collector: %w", inFile(s.sources[srcMeminfo].Path, err))
		s.setSource(srcMeminfo, false, err)
		return memory{}, err
	}
	var m memory
	var degraded error
	switch {
	case mi.MemTotalBytes == nil:
		err = fmt.Errorf("%w: no MemTotal", ErrParse)
	case *mi.MemTotalBytes > maxMemoryBytes:
		err = fmt.Errorf("%w: MemTotal %d bytes is past %d", ErrParse, *mi.MemTotalBytes, uint64(maxMemoryBytes))
	case mi.MemAvailableBytes != nil:
		m.total, m.available = *mi.MemTotalBytes, *mi.MemAvailableBytes
	case mi.MemFreeBytes != nil:
		// Kernels before 3.14 lack MemAvailable; this is the estimate
		// free(1) printed then. It ignores that not all page cache can
		// be dropped, so it errs high.
		m.total, m.available = *mi.MemTotalBytes, *mi.MemFreeBytes+deref(mi.BuffersBytes)+deref(mi.CachedBytes)
		degraded = errNoMemAvailable
	default:
		err = fmt.Errorf("%w: neither MemAvailable nor MemFree", ErrParse)
	}
	if err != nil {
		err = fmt.Errorf("collector: %w", inFile(s.sources[srcMeminfo].Path, err))
		s.setSource(srcMeminfo, false, err)
		return memory{}, err
	}
	// MemAvailable is an estimate; never let it exceed the total.
	m.available = min(m.available, m.total)
	s.setSource(srcMeminfo, true, degraded)
	return m, nil
}

func deref(p *uint64) uint64 {
	if p == nil {
		return 0
	}
	return *p
}
