package collector

import (
	"errors"
	"fmt"

	"github.com/prometheus/procfs"

	"github.com/hotplugheaven/hotplug/proto"
)

// maxMemoryBytes mirrors proto.Report.Validate: a PiB of guest memory is a
// misparsed file.
const maxMemoryBytes = 1 << 50

// errNoMemAvailable marks the meminfo source as degraded.
var errNoMemAvailable = errors.New("MemAvailable missing (kernel before 3.14): reporting MemFree+Buffers+Cached instead, which overstates what can be reclaimed")

type memory struct{ total, available uint64 }

// meminfoSource reads MemTotal and MemAvailable from /proc/meminfo
// (Documentation/filesystems/proc.rst, "meminfo") through procfs.
type meminfoSource struct {
	fs   procfs.FS
	path string
	cur  memory
}

func (s *meminfoSource) Name() string { return SourceMeminfo }
func (s *meminfoSource) Path() string { return s.path }

func (s *meminfoSource) Read() error {
	m, degraded, err := s.parse()
	if err != nil {
		return fmt.Errorf("collector: %w", inFile(s.path, err))
	}
	s.cur = m
	if degraded != nil {
		return Degraded(degraded)
	}
	return nil
}

func (s *meminfoSource) parse() (memory, error, error) {
	mi, err := s.fs.Meminfo()
	if err != nil {
		return memory{}, nil, err
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
		return memory{}, nil, err
	}
	// MemAvailable is an estimate; never let it exceed the total.
	m.available = min(m.available, m.total)
	return m, degraded, nil
}

func (s *meminfoSource) Fill(r *proto.Report) error {
	r.MemTotalBytes, r.MemAvailableBytes = s.cur.total, s.cur.available
	return nil
}

func deref(p *uint64) uint64 {
	if p == nil {
		return 0
	}
	return *p
}
