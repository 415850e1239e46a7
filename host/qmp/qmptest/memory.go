package qmptest

import (
	"encoding/json"
	"strconv"
	"time"
)

// VirtioMem models QEMU 10.0's virtio-mem-pci device (-object
// memory-backend-ram,id=vmem0,size=Max -device virtio-mem-pci,id=ID,
// memdev=vmem0,block-size=Block,requested-size=0), with a guest driver
// that plugs or unplugs what is requested after PlugDelay, as the Debian
// cloud kernel does under TCG, when Guest is set; without it, as QEMU with
// no guest OS, nothing ever moves the size.
type VirtioMem struct {
	// ID is the device id (default "vm0"); Max the backend's size and
	// Block the block size (default 512 MiB and 2 MiB).
	ID         string
	Max, Block uint64
	// Guest plugs and unplugs; PlugDelay is how long it takes (default
	// 50 ms). Unmovable bytes cannot be unplugged: a shrink stops there.
	Guest     bool
	PlugDelay time.Duration
	Unmovable uint64
}

// memState is the device's state in the fake.
type memState struct {
	cfg             VirtioMem
	size, requested uint64
}

// baseMemory is what -m 128 gives, query-memory-size-summary's
// base-memory.
const baseMemory = 128 << 20

func newMemState(c *VirtioMem) *memState {
	if c == nil {
		return nil
	}
	m := &memState{cfg: *c}
	if m.cfg.ID == "" {
		m.cfg.ID = "vm0"
	}
	if m.cfg.Max == 0 {
		m.cfg.Max = 512 << 20
	}
	if m.cfg.Block == 0 {
		m.cfg.Block = 2 << 20
	}
	if m.cfg.PlugDelay == 0 {
		m.cfg.PlugDelay = 50 * time.Millisecond
	}
	return m
}

func (m *memState) path() string { return "/machine/peripheral/" + m.cfg.ID }

type memSummary struct {
	Base    uint64 `json:"base-memory"`
	Plugged uint64 `json:"plugged-memory"`
}

type virtioMemInfo struct {
	BlockSize     uint64 `json:"block-size"`
	ID            string `json:"id"`
	MaxSize       uint64 `json:"max-size"`
	Memaddr       uint64 `json:"memaddr"`
	Memdev        string `json:"memdev"`
	Node          int    `json:"node"`
	RequestedSize uint64 `json:"requested-size"`
	Size          uint64 `json:"size"`
}

type memoryDeviceInfo struct {
	Data virtioMemInfo `json:"data"`
	Type string        `json:"type"`
}

// memoryCommandLocked answers the memory commands; ok false when cmd is
// not one.
func (s *Server) memoryCommandLocked(cmd string, args map[string]json.RawMessage) (ret any, e *qmpError, ok bool) {
	m := s.mem
	switch cmd {
	case "query-memory-size-summary":
		if e := noArgs(args); e != nil {
			return nil, e, true
		}
		out := memSummary{Base: baseMemory}
		if m != nil {
			out.Plugged = m.size
		}
		return out, nil, true
	case "query-memory-devices":
		if e := noArgs(args); e != nil {
			return nil, e, true
		}
		out := []memoryDeviceInfo{}
		if m != nil {
			out = append(out, memoryDeviceInfo{Type: "virtio-mem", Data: virtioMemInfo{BlockSize: m.cfg.Block, ID: m.cfg.ID,
				MaxSize: m.cfg.Max, Memaddr: 4 << 30, Memdev: "/objects/vmem0", RequestedSize: m.requested, Size: m.size}})
		}
		return out, nil, true
	case "query-balloon":
		if e := noArgs(args); e != nil {
			return nil, e, true
		}
		return nil, &qmpError{"DeviceNotActive", "No balloon device has been activated"}, true
	}
	return nil, nil, false
}

// memQOMGetLocked is qom-get of the device's size properties.
func (s *Server) memQOMGetLocked(path, prop string) (any, bool) {
	m := s.mem
	if m == nil || path != m.path() {
		return nil, false
	}
	switch prop {
	case "requested-size":
		return m.requested, true
	case "size":
		return m.size, true
	}
	return nil, false
}

// memQOMSetLocked is qom-set of requested-size, checked in QEMU's order.
func (s *Server) memQOMSetLocked(path, prop string, raw json.RawMessage) (any, *qmpError, bool) {
	m := s.mem
	if m == nil || path != m.path() {
		return nil, nil, false
	}
	if prop == "size" {
		return nil, genericError("Property 'virtio-mem.size' is not writable"), true
	}
	if prop != "requested-size" {
		return nil, nil, false
	}
	lit, ok := intLiteral(raw)
	if !ok {
		return nil, genericError("Parameter 'requested-size' expects uint64"), true
	}
	v, err := parseUint64(lit)
	if err != nil {
		return nil, genericError("Parameter 'requested-size' expects uint64"), true
	}
	if v%m.cfg.Block != 0 {
		return nil, genericError("'requested-size' has to be multiples of 'block-size' (0x%x)", m.cfg.Block), true
	}
	if v > m.cfg.Max {
		return nil, genericError("'requested-size' cannot exceed the memory backend size(0x%x)", m.cfg.Max), true
	}
	m.requested = v
	if m.cfg.Guest {
		s.afterLocked(m.cfg.PlugDelay, func() {
			want := max(m.requested, min(m.size, m.cfg.Unmovable))
			if want == m.size {
				return
			}
			m.size = want
			s.emitLocked("MEMORY_DEVICE_SIZE_CHANGE", map[string]any{"id": m.cfg.ID, "size": m.size, "qom-path": m.path()})
		})
	}
	return struct{}{}, nil, true
}

// parseUint64 reads a JSON integer as QEMU's uint64 visitor does: a
// negative one as its two's complement.
func parseUint64(lit string) (uint64, error) {
	if len(lit) > 0 && lit[0] == '-' {
		n, err := strconv.ParseInt(lit, 10, 64)
		return uint64(n), err
	}
	return strconv.ParseUint(lit, 10, 64)
}

// PluggedMemory is what the virtio-mem device has plugged now, bytes (0
// without one), for fake guests that report MemTotal.
func (s *Server) PluggedMemory() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mem == nil {
		return 0
	}
	return s.mem.size
}
