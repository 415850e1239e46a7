package hypervisor

import (
	"errors"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/host/qmp/qmptest"
)

const mib = uint64(1) << 20

// A real QEMU with a virtio-mem device and no guest OS: the device is read
// as QEMU reports it, and a resize the guest never performs ends partial,
// with the request set back to what was reached.
func TestQEMUVirtioMemWithoutGuest(t *testing.T) {
	checkGoroutines(t)
	vm := qmptest.StartQEMUWith(t, "1", "size=128M,maxmem=1G",
		"-object", "memory-backend-ram,id=vmem0,size=512M,reserve=off",
		"-device", "virtio-mem-pci,id=vm0,memdev=vmem0,block-size=2M,requested-size=0")
	q := newQEMU(t, vm.Path, time.Second)
	ctx := testCtx(t)
	mem, err := q.Memory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := Memory{Device: MemVirtioMem, ID: "vm0", Base: 128 * mib, Total: 128 * mib, Requested: 128 * mib,
		Max: 640 * mib, Min: 128 * mib, Block: 2 * mib}
	if mem != want {
		t.Fatalf("Memory = %+v\nwant %+v", mem, want)
	}
	start := time.Now()
	mem, err = q.ResizeMemory(ctx, 384*mib+12345, 500*time.Millisecond)
	if !errors.Is(err, ErrResizePartial) {
		t.Fatalf("resize without a guest driver: %v", err)
	}
	if took := time.Since(start); took < 500*time.Millisecond {
		t.Errorf("gave up after %v, timeout 500ms", took)
	}
	if mem.Total != 128*mib || mem.Requested != 128*mib {
		t.Errorf("after a partial resize: %+v", mem)
	}
	// The request really was set back: QEMU says so.
	if mem, err = q.Memory(ctx); err != nil || mem.Requested != 128*mib {
		t.Errorf("QEMU's request after the partial resize: %+v, %v", mem, err)
	}
	// Beyond the maximum is held to it (and still not reached).
	if _, err = q.ResizeMemory(ctx, 8<<30, 200*time.Millisecond); !errors.Is(err, ErrResizePartial) {
		t.Fatalf("resize past max: %v", err)
	}
	// Asking for what the VM has is immediate.
	if mem, err = q.ResizeMemory(ctx, 128*mib, time.Second); err != nil || mem.Total != 128*mib {
		t.Fatalf("resize to the current size: %+v, %v", mem, err)
	}
}

// A balloon only: it resizes (within boot memory) and reports what QEMU
// reports; without a guest the balloon never moves.
func TestQEMUBalloonWithoutGuest(t *testing.T) {
	checkGoroutines(t)
	vm := qmptest.StartQEMUWith(t, "1", "256", "-device", "virtio-balloon-pci,id=balloon0,free-page-reporting=on")
	q := newQEMU(t, vm.Path, time.Second)
	ctx := testCtx(t)
	mem, err := q.Memory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if mem.Device != MemBalloon || mem.Total != 256*mib || mem.Max != 256*mib || mem.Base != 256*mib {
		t.Fatalf("Memory = %+v", mem)
	}
	if _, err := q.ResizeMemory(ctx, 128*mib, 300*time.Millisecond); !errors.Is(err, ErrResizePartial) {
		t.Fatalf("balloon without a guest: %v", err)
	}
}

func TestQEMUNoMemoryDevice(t *testing.T) {
	checkGoroutines(t)
	vm := qmptest.StartQEMU(t, "1")
	q := newQEMU(t, vm.Path, time.Second)
	if _, err := q.Memory(testCtx(t)); !errors.Is(err, ErrNoMemoryDevice) {
		t.Fatalf("Memory on a VM without a device: %v", err)
	}
	if _, err := q.ResizeMemory(testCtx(t), 64*mib, time.Second); !errors.Is(err, ErrNoMemoryDevice) {
		t.Fatalf("ResizeMemory on a VM without a device: %v", err)
	}
}
