package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/guest/collector"
	"github.com/hotplugheaven/hotplug/guest/cpu/cputest"
	"github.com/hotplugheaven/hotplug/proto"
)

// vboxCPUs: Linux's cpu3 is VirtualBox's CPU 2 and the other way round
// (hot-added out of order), so the eject must follow the CPU's own ACPI
// device, not its number.
var vboxCPUs = []cputest.CPU{{Linux: 0, VBox: 0}, {Linux: 1, VBox: 1}, {Linux: 2, VBox: 3}, {Linux: 3, VBox: 2}}

// vboxFixture is the collector's 4-CPU guest with the sysfs tree of a
// VirtualBox guest, and a kernel that ejects CPUs on it. vendor, if not
// empty, replaces the DMI system vendor.
func vboxFixture(t *testing.T, vendor string) (collector.Options, *cputest.Kernel) {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"proc", "etc"} {
		if err := os.CopyFS(filepath.Join(root, d), os.DirFS(filepath.Join("../collector/testdata/guest4", d))); err != nil {
			t.Fatal(err)
		}
	}
	sys := filepath.Join(root, "sys")
	if err := cputest.WriteVirtualBox(sys, 8, vboxCPUs); err != nil {
		t.Fatal(err)
	}
	if vendor != "" {
		os.WriteFile(filepath.Join(sys, "class/dmi/id/sys_vendor"), []byte(vendor+"\n"), 0o644)
	}
	k := cputest.NewKernel(sys, vboxCPUs)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { k.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return collector.Options{ProcRoot: filepath.Join(root, "proc"), SysRoot: sys, EtcRoot: filepath.Join(root, "etc")}, k
}

// TestVirtualBoxOfflineEjects: on a VirtualBox guest an offline for an
// unplug ends with the CPU ejected — gone from present, its ACPI device's
// _EJ0 run — and a failed eject is reported in the Ack with the CPU back
// online.
func TestVirtualBoxOfflineEjects(t *testing.T) {
	opts, k := vboxFixture(t, "")
	act, _ := startAgent(t, opts, Config{EjectTimeout: 500 * time.Millisecond, OnlineTimeout: time.Second})
	c, _ := act.accept(t, &proto.Welcome{Version: 1, VM: "vb1"})

	a := c.ack(t, &proto.Command{ID: 1, Offline: proto.NewCPUSet(3)})
	if !a.OK || a.Present.Has(3) || a.Online.Has(3) {
		t.Fatalf("offline of cpu3 on VirtualBox: %+v", a)
	}
	if got := k.Ejected(); !slices.Equal(got, []int{2}) {
		t.Fatalf("VirtualBox CPUs ejected: %v, want [2] (Linux's cpu3)", got)
	}
	if len(a.Topology) != 1 || a.Topology[0].CPU != 3 {
		t.Fatalf("the Ack must still carry cpu3's APIC id, read before it went: %+v", a.Topology)
	}

	k.SetEJ0(func(int) error { return errors.New("CPU locked") })
	a = c.ack(t, &proto.Command{ID: 2, Offline: proto.NewCPUSet(2)})
	if a.OK || len(a.Failed) != 1 || a.Failed[0].CPU != 2 {
		t.Fatalf("a refused eject must fail the Ack for cpu2: %+v", a)
	}
	if msg := a.Failed[0].Error; !strings.Contains(msg, "eject failed") || !strings.Contains(msg, "onlined again") ||
		!strings.Contains(msg, "still in") {
		t.Errorf("the failure should say the eject failed, why, and that the CPU is back: %q", msg)
	}
	if got := readFile(t, filepath.Join(opts.SysRoot, "devices/system/cpu/cpu2/online")); got != "1" {
		t.Errorf("cpu2 after a failed eject: online=%q, want it back online", got)
	}
	if !a.Present.Has(2) {
		t.Errorf("cpu2 left present although its eject failed: %s", a.Present)
	}
}

// TestOtherHypervisorsDoNotEject: the same tree with a QEMU DMI vendor is
// only offlined. QEMU ejects on the host's request; an eject the host did
// not ask for would remove the CPU behind the actuator's back.
func TestOtherHypervisorsDoNotEject(t *testing.T) {
	opts, k := vboxFixture(t, "QEMU")
	act, _ := startAgent(t, opts, Config{EjectTimeout: 500 * time.Millisecond})
	c, _ := act.accept(t, &proto.Welcome{Version: 1, VM: "q1"})
	a := c.ack(t, &proto.Command{ID: 1, Offline: proto.NewCPUSet(3)})
	time.Sleep(100 * time.Millisecond) // room for a wrong eject to land
	if !a.OK || !a.Present.Has(3) || len(k.Ejected()) != 0 {
		t.Fatalf("offline on a QEMU guest: ack %+v, ejected %v", a, k.Ejected())
	}
	if got := readFile(t, filepath.Join(opts.SysRoot, "devices/system/cpu/cpu3/online")); got != "0" {
		t.Fatalf("cpu3 online=%q, want 0", got)
	}
}
