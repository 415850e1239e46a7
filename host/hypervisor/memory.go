package hypervisor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hotplugheaven/hotplug/host/qmp"
)

// Memory devices a VM's memory is resized with.
const (
	// MemVirtioMem: a virtio-mem device plugs and unplugs blocks of the
	// guest's physical memory. The guest sees MemTotal move.
	MemVirtioMem = "virtio-mem"
	// MemBalloon: a virtio-balloon takes pages from the guest, which
	// keeps its MemTotal; the fallback when there is no virtio-mem.
	MemBalloon = "balloon"
)

// Errors of memory resizing; wrap them with detail.
var (
	// ErrNoMemoryDevice: the VM has neither virtio-mem nor a balloon.
	ErrNoMemoryDevice = errors.New("no memory device to resize with")
	// ErrResizePartial: the guest reached only part of a resize in time
	// (a shrink of memory it cannot move, a guest without the driver).
	// The request has been set to what was reached, never left
	// outstanding; the Memory returned says where the VM stands.
	ErrResizePartial = errors.New("the guest completed the resize only partly")
)

// Memory is a VM's resizable memory as the hypervisor reports it. Sizes are
// bytes of guest memory.
type Memory struct {
	// Device is MemVirtioMem or MemBalloon.
	Device string
	// ID is the device's id (QEMU's /machine/peripheral/ID).
	ID string
	// Base is the memory the VM booted with, outside the device.
	Base uint64
	// Total is the memory the guest has now: Base plus what virtio-mem
	// has plugged, or what the balloon leaves it.
	Total uint64
	// Requested is the total the device has been asked for.
	Requested uint64
	// Max is the most Total can reach: Base plus the device's maximum
	// (virtio-mem), or Base (a balloon cannot give more than boot memory).
	Max uint64
	// Min is the least Total can go to: Base for virtio-mem (it unplugs
	// only its own blocks), one block for a balloon.
	Min uint64
	// Block is the resize granularity.
	Block uint64
}

// MemoryResizer is implemented by backends that can resize a VM's memory.
// The actuator looks for it with a type assertion; each implementation
// says so with a compile-time check.
type MemoryResizer interface {
	// Memory reads the VM's memory device.
	Memory(ctx context.Context) (Memory, error)
	// RequestMemory asks for total bytes (rounded down to the device's
	// block, held to [Min, Max]) and returns at once, with Requested what
	// was asked; the caller watches Memory for the guest to reach it, and
	// asks again for what was reached if it gives up.
	RequestMemory(ctx context.Context, total uint64) (Memory, error)
	// ResizeMemory asks for total bytes (rounded down to the device's
	// block, held to [Min, Max]) and waits until the hypervisor reports
	// them, at most timeout. Short of that, it sets the request to what
	// was reached and fails with ErrResizePartial. It returns the memory
	// as the hypervisor then reports it.
	ResizeMemory(ctx context.Context, total uint64, timeout time.Duration) (Memory, error)
}

var _ MemoryResizer = (*QEMU)(nil)

// memoryDevice is an entry of query-memory-devices (QAPI MemoryDeviceInfo)
// of type virtio-mem (VirtioMEMDeviceInfo).
type memoryDevice struct {
	Type string `json:"type"`
	Data struct {
		ID            string `json:"id"`
		Size          uint64 `json:"size"`
		RequestedSize uint64 `json:"requested-size"`
		MaxSize       uint64 `json:"max-size"`
		BlockSize     uint64 `json:"block-size"`
	} `json:"data"`
}

// balloonBlock is the granularity a balloon is resized in here: QEMU takes
// bytes and the guest moves 4 KiB pages, but MiB is what operators set.
const balloonBlock = 1 << 20

// readMemory reads a QEMU's memory over a monitor: the first virtio-mem
// device of query-memory-devices, else the balloon of query-balloon.
// query-memory-size-summary gives the boot memory.
func readMemory(ctx context.Context, m qmp.Executor) (Memory, error) {
	var summary struct {
		Base uint64 `json:"base-memory"`
	}
	if err := m.Execute(ctx, "query-memory-size-summary", nil, &summary); err != nil {
		return Memory{}, fmt.Errorf("query-memory-size-summary: %w", err)
	}
	if summary.Base == 0 || summary.Base > maxGuestMemory {
		return Memory{}, fmt.Errorf("query-memory-size-summary: base memory %d bytes is not a VM's", summary.Base)
	}
	var devs []memoryDevice
	if err := m.Execute(ctx, "query-memory-devices", nil, &devs); err != nil {
		return Memory{}, fmt.Errorf("query-memory-devices: %w", err)
	}
	for _, d := range devs {
		if d.Type != "virtio-mem" {
			continue
		}
		v := d.Data
		if v.ID == "" || v.BlockSize == 0 || v.BlockSize&(v.BlockSize-1) != 0 || v.MaxSize > maxGuestMemory ||
			v.Size > v.MaxSize || v.RequestedSize > v.MaxSize {
			return Memory{}, fmt.Errorf("query-memory-devices: virtio-mem %q: size %d, requested %d, max %d, block %d do not add up",
				v.ID, v.Size, v.RequestedSize, v.MaxSize, v.BlockSize)
		}
		return Memory{Device: MemVirtioMem, ID: v.ID, Base: summary.Base, Total: summary.Base + v.Size,
			Requested: summary.Base + v.RequestedSize, Max: summary.Base + v.MaxSize, Min: summary.Base, Block: v.BlockSize}, nil
	}
	var b struct {
		Actual uint64 `json:"actual"`
	}
	err := m.Execute(ctx, "query-balloon", nil, &b)
	var qe *qmp.Error
	if errors.As(err, &qe) && qe.Class == "DeviceNotActive" {
		return Memory{}, fmt.Errorf("%w: no virtio-mem device and no balloon (QEMU: %s)", ErrNoMemoryDevice, qe.Desc)
	}
	if err != nil {
		return Memory{}, fmt.Errorf("query-balloon: %w", err)
	}
	if b.Actual == 0 || b.Actual > summary.Base {
		return Memory{}, fmt.Errorf("query-balloon: actual %d bytes outside (0, %d]", b.Actual, summary.Base)
	}
	// QEMU does not say what was asked of the balloon; what it has is the
	// best answer, and a request in flight is re-made by its caller.
	return Memory{Device: MemBalloon, ID: "balloon", Base: summary.Base, Total: b.Actual, Requested: b.Actual,
		Max: summary.Base, Min: balloonBlock, Block: balloonBlock}, nil
}

// maxGuestMemory bounds sizes read from the monitor: 64 TiB, beyond any
// VM this tool sizes.
const maxGuestMemory = 64 << 40

// requestMemory asks the device for total bytes.
func requestMemory(ctx context.Context, m qmp.Executor, mem Memory, total uint64) error {
	switch mem.Device {
	case MemVirtioMem:
		err := m.Execute(ctx, "qom-set", map[string]any{"path": "/machine/peripheral/" + mem.ID,
			"property": "requested-size", "value": total - mem.Base}, nil)
		if err != nil {
			return fmt.Errorf("qom-set %s requested-size %d: %w", mem.ID, total-mem.Base, err)
		}
	case MemBalloon:
		if err := m.Execute(ctx, "balloon", map[string]any{"value": total}, nil); err != nil {
			return fmt.Errorf("balloon %d: %w", total, err)
		}
	default:
		return ErrNoMemoryDevice
	}
	return nil
}

// resizeMemory is ResizeMemory over a monitor. wake, if not nil, signals
// that the device may have moved (QEMU's MEMORY_DEVICE_SIZE_CHANGE and
// BALLOON_CHANGE events); the size is also read every poll.
func resizeMemory(ctx context.Context, m qmp.Executor, total uint64, timeout time.Duration, wake <-chan qmp.Event) (Memory, error) {
	mem, err := request(ctx, m, total)
	if err != nil {
		return mem, err
	}
	want := mem.Requested
	const poll = 100 * time.Millisecond
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		mem, err = readMemory(ctx, m)
		if err != nil {
			return Memory{}, err
		}
		if mem.Total == want {
			mem.Requested = want // a balloon does not report it
			return mem, nil
		}
		select {
		case <-ctx.Done():
			return mem, ctx.Err()
		case <-deadline.C:
			// What was reached becomes the request: nothing is left
			// for the guest to do behind the caller's back.
			reached := clampMemory(mem, mem.Total)
			if err := requestMemory(ctx, m, mem, reached); err != nil {
				return mem, fmt.Errorf("%w: reached %d MiB of %d MiB in %v, and setting the request to it failed: %v",
					ErrResizePartial, mem.Total>>20, want>>20, timeout, err)
			}
			mem.Requested = reached
			return mem, fmt.Errorf("%w: reached %d MiB of %d MiB in %v; the request is now %d MiB",
				ErrResizePartial, mem.Total>>20, want>>20, timeout, reached>>20)
		case <-tick.C:
		case _, ok := <-wake:
			if !ok {
				wake = nil // the connection ended: the next read says so
			}
		}
	}
}

// clampMemory holds total to the device's range, in whole blocks above Min.
func clampMemory(mem Memory, total uint64) uint64 {
	total = min(max(total, mem.Min), mem.Max)
	if mem.Block > 0 {
		total = mem.Min + (total-mem.Min)/mem.Block*mem.Block
	}
	return total
}

// Memory implements MemoryResizer.
func (q *QEMU) Memory(ctx context.Context) (Memory, error) {
	c, err := q.conn(ctx)
	if err != nil {
		return Memory{}, err
	}
	mem, err := readMemory(ctx, qemuMonitor{q, c})
	if err != nil {
		return Memory{}, fmt.Errorf("hypervisor: QEMU %s: %w", q.socket, err)
	}
	return mem, nil
}

// RequestMemory implements MemoryResizer.
func (q *QEMU) RequestMemory(ctx context.Context, total uint64) (Memory, error) {
	return q.resizing(ctx, func(c *qmp.Client) (Memory, error) { return request(ctx, qemuMonitor{q, c}, total) })
}

// resizing runs f on a live connection, one resize at a time.
func (q *QEMU) resizing(ctx context.Context, f func(c *qmp.Client) (Memory, error)) (Memory, error) {
	if err := acquire(ctx, q.memSem); err != nil {
		return Memory{}, fmt.Errorf("hypervisor: QEMU %s: waiting for another resize: %w", q.socket, err)
	}
	defer func() { <-q.memSem }()
	c, err := q.conn(ctx)
	if err != nil {
		return Memory{}, err
	}
	mem, err := f(c)
	if err != nil {
		return mem, fmt.Errorf("hypervisor: QEMU %s: %w", q.socket, err)
	}
	return mem, nil
}

// request is RequestMemory over a monitor.
func request(ctx context.Context, m qmp.Executor, total uint64) (Memory, error) {
	mem, err := readMemory(ctx, m)
	if err != nil {
		return Memory{}, err
	}
	want := clampMemory(mem, total)
	if want != mem.Requested || want != mem.Total {
		if err := requestMemory(ctx, m, mem, want); err != nil {
			return mem, err
		}
	}
	mem.Requested = want
	return mem, nil
}

// ResizeMemory implements MemoryResizer: qom-set requested-size on the
// virtio-mem device (or balloon), then query-memory-devices until the
// device reports it, woken early by MEMORY_DEVICE_SIZE_CHANGE.
func (q *QEMU) ResizeMemory(ctx context.Context, total uint64, timeout time.Duration) (Memory, error) {
	return q.resizing(ctx, func(c *qmp.Client) (Memory, error) {
		sub := c.Subscribe(func(e qmp.Event) bool {
			return e.Name == "MEMORY_DEVICE_SIZE_CHANGE" || e.Name == "BALLOON_CHANGE"
		}, 4)
		defer sub.Close()
		return resizeMemory(ctx, qemuMonitor{q, c}, total, timeout, sub.C())
	})
}

var _ MemoryResizer = (*Libvirt)(nil)

// errViewOnly: memory is resized through the monitor passthrough, which
// libvirt_view_only turns off.
var errViewOnly = fmt.Errorf("%w: libvirt_view_only is set, and memory is resized through QEMU's monitor (libvirt's passthrough)", ErrNoMemoryDevice)

// Memory implements MemoryResizer for a libvirt domain: QEMU's own memory
// devices, through libvirt's monitor passthrough, as the vCPUs are. (The
// domain's <memory model='virtio-mem'> in libvirt's XML then shows the
// size it was defined with; virsh dommemstat and QEMU are the truth.)
func (lv *Libvirt) Memory(ctx context.Context) (Memory, error) {
	return lv.memory(ctx, "reading memory", func(m qmp.Executor) (Memory, error) { return readMemory(ctx, m) })
}

// RequestMemory implements MemoryResizer.
func (lv *Libvirt) RequestMemory(ctx context.Context, total uint64) (Memory, error) {
	return lv.memory(ctx, "resizing memory", func(m qmp.Executor) (Memory, error) { return request(ctx, m, total) })
}

// ResizeMemory implements MemoryResizer. It polls; libvirt does not pass
// QEMU's MEMORY_DEVICE_SIZE_CHANGE on to monitor clients.
func (lv *Libvirt) ResizeMemory(ctx context.Context, total uint64, timeout time.Duration) (Memory, error) {
	return lv.memory(ctx, "resizing memory", func(m qmp.Executor) (Memory, error) {
		return resizeMemory(ctx, m, total, timeout, nil)
	})
}

// memory runs f over the monitor passthrough, unless view-only.
func (lv *Libvirt) memory(ctx context.Context, what string, f func(qmp.Executor) (Memory, error)) (Memory, error) {
	if lv.opts.LibvirtViewOnly {
		return Memory{}, errViewOnly
	}
	var mem Memory
	err := lv.do(ctx, what, func(c *libvirtConn) error {
		var err error
		mem, err = f(lvMonitor{c})
		return err
	})
	return mem, err
}
