package actuator

import (
	"fmt"

	"github.com/prometheus/procfs"
)

// HostMemory reads the host's own memory, for the host-pressure override
// (squeeze.go).
type HostMemory interface {
	// Available is the host's MemAvailable and MemTotal, bytes.
	Available() (avail, total uint64, err error)
}

// ProcHostMemory reads the host's /proc/meminfo through procfs.
type ProcHostMemory struct {
	fs procfs.FS
}

// NewProcHostMemory reads the meminfo under root (default /proc).
func NewProcHostMemory(root string) (*ProcHostMemory, error) {
	if root == "" {
		root = "/proc"
	}
	fs, err := procfs.NewFS(root)
	if err != nil {
		return nil, fmt.Errorf("host memory: %w", err)
	}
	return &ProcHostMemory{fs: fs}, nil
}

// Available implements HostMemory.
func (p *ProcHostMemory) Available() (uint64, uint64, error) {
	mi, err := p.fs.Meminfo()
	if err != nil {
		return 0, 0, fmt.Errorf("host memory: %w", err)
	}
	if mi.MemTotalBytes == nil || mi.MemAvailableBytes == nil {
		return 0, 0, fmt.Errorf("host memory: /proc/meminfo has no MemTotal or MemAvailable")
	}
	return *mi.MemAvailableBytes, *mi.MemTotalBytes, nil
}
