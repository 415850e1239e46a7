package integration_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/host/hypervisor"
	"github.com/hotplugheaven/hotplug/integration/testvm"
)

const mib = uint64(1) << 20

// virtioMemArgs gives a guest a virtio-mem device of max MiB, none of it
// plugged at boot, and a balloon for statistics and free page reporting.
func virtioMemArgs(max int) []string {
	return []string{"-object", "memory-backend-ram,id=vmem0,size=" + strconv.Itoa(max) + "M,reserve=off",
		"-device", "virtio-mem-pci,id=vm0,memdev=vmem0,block-size=2M,requested-size=0",
		"-device", "virtio-balloon-pci,id=balloon0,free-page-reporting=on"}
}

// virtioMemGuest boots the Debian cloud kernel with 512 MiB of boot memory
// and a 2 GiB virtio-mem device; memory the device adds is onlined by the
// kernel into ZONE_MOVABLE (memhp_default_state=online_movable), so that
// it can be unplugged again.
func virtioMemGuest(ctx context.Context, t *testing.T, name string, files map[string]testvm.File) *testvm.VM {
	t.Helper()
	kernel, err := testvm.EnsureKernel(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	img, err := testvm.BuildInitramfs(ctx, testvm.InitramfsOptions{Kernel: kernel, Modules: []string{"virtio_mem", "virtio_balloon"}, Files: files})
	if err != nil {
		t.Fatal(err)
	}
	vm, err := testvm.Start(ctx, testvm.Config{Name: name, Kernel: kernel, Initramfs: img, MemoryMB: 512, MaxMemoryMB: 512 + 2048,
		KernelArgs: "memhp_default_state=online_movable", ExtraArgs: virtioMemArgs(2048)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("guest console tail:\n%s", vm.ConsoleTail(40))
		}
		vm.Stop()
	})
	if err := vm.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if out, st, err := vm.Run(ctx, "modprobe virtio_mem && modprobe virtio_balloon"); err != nil || st != 0 {
		t.Fatalf("modprobe: %d %v\n%s", st, err, out)
	}
	return vm
}

// guestMemTotal is the guest's MemTotal in bytes.
func guestMemTotal(ctx context.Context, t *testing.T, vm *testvm.VM) uint64 {
	t.Helper()
	out, st, err := vm.Run(ctx, "grep MemTotal: /proc/meminfo")
	f := strings.Fields(out)
	if err != nil || st != 0 || len(f) != 3 {
		t.Fatalf("MemTotal: %q %d %v", out, st, err)
	}
	kb, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return kb << 10
}

// TestVirtioMemResizesTheGuest: under TCG with the Debian cloud kernel,
// virtio-mem grows the guest (its MemTotal moves by exactly what QEMU
// reports), a shrink of memory the guest holds ends partial with the
// request set to what was reached, and a shrink of free memory completes.
func TestVirtioMemResizesTheGuest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	vm := virtioMemGuest(ctx, t, "vmem", nil)
	q := hypervisor.NewQEMU(vm.TestQMPSocket(), hypervisor.QEMUOptions{})
	defer q.Close()
	mem, err := q.Memory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if mem.Device != hypervisor.MemVirtioMem || mem.Base != 512*mib || mem.Total != 512*mib || mem.Max != 2560*mib || mem.Block != 2*mib {
		t.Fatalf("Memory = %+v", mem)
	}
	boot := guestMemTotal(ctx, t, vm)

	resize := func(total uint64, timeout time.Duration) (hypervisor.Memory, time.Duration, error) {
		start := time.Now()
		m, err := q.ResizeMemory(ctx, total, timeout)
		return m, time.Since(start), err
	}
	m, took, err := resize(1536*mib, 30*time.Second)
	if err != nil || m.Total != 1536*mib {
		t.Fatalf("grow to 1.5 GiB: %+v, %v", m, err)
	}
	if got := guestMemTotal(ctx, t, vm); got-boot != 1024*mib {
		t.Fatalf("guest MemTotal grew by %d MiB, QEMU plugged 1024", (got-boot)>>20)
	}
	t.Logf("grow 512 → 1536 MiB: QEMU reports it after %v", took)

	// 800 MiB of tmpfs cannot be reclaimed (no swap): a shrink to the
	// boot memory stops where the guest runs out of movable memory.
	if out, st, err := vm.Run(ctx, "mkdir -p /mnt/t && mount -t tmpfs -o size=2G tmpfs /mnt/t && dd if=/dev/zero of=/mnt/t/f bs=1M count=800 2>&1 | tail -1"); err != nil || st != 0 {
		t.Fatalf("fill: %d %v\n%s", st, err, out)
	}
	m, took, err = resize(512*mib, 20*time.Second)
	if !errors.Is(err, hypervisor.ErrResizePartial) || m.Total <= 512*mib || m.Total >= 1536*mib || m.Requested != m.Total {
		t.Fatalf("shrink under 800 MiB of tmpfs: %+v, %v", m, err)
	}
	t.Logf("shrink 1536 → 512 MiB with 800 MiB held: %v after %v", err, took)
	if again, err := q.Memory(ctx); err != nil || again.Requested != m.Total || again.Total != m.Total {
		t.Fatalf("QEMU after the partial shrink: %+v, %v; want request = size = %d MiB", again, err, m.Total>>20)
	}
	if got := guestMemTotal(ctx, t, vm); got-boot != m.Total-512*mib {
		t.Fatalf("guest MemTotal %d MiB above boot, QEMU says %d", (got-boot)>>20, (m.Total-512*mib)>>20)
	}

	if out, st, err := vm.Run(ctx, "rm /mnt/t/f"); err != nil || st != 0 {
		t.Fatalf("rm: %d %v\n%s", st, err, out)
	}
	m, took, err = resize(512*mib, 30*time.Second)
	if err != nil || m.Total != 512*mib {
		t.Fatalf("shrink of free memory: %+v, %v", m, err)
	}
	if got := guestMemTotal(ctx, t, vm); got != boot {
		t.Fatalf("guest MemTotal %d MiB after unplugging all, boot %d", got>>20, boot>>20)
	}
	t.Logf("shrink to 512 MiB once freed: %v", took)
}
