package cpu

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/guest/cpu/cputest"
)

// vbox4 is a VirtualBox guest whose CPUs 2 and 3 were hot-added in the
// other order: Linux's cpu2 is VirtualBox's CPU 3 (LNXCPU:03).
var vbox4 = []cputest.CPU{{Linux: 0, VBox: 0}, {Linux: 1, VBox: 1}, {Linux: 2, VBox: 3}, {Linux: 3, VBox: 2}}

// vboxGuest writes the tree with cpu2 and cpu3 offline and starts a
// kernel on it; edit, if set, changes the tree first.
func vboxGuest(t *testing.T, edit func(root string)) (*Controller, *cputest.Kernel, string) {
	t.Helper()
	root := t.TempDir()
	if err := cputest.WriteVirtualBox(root, 4, vbox4); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"cpu2", "cpu3"} {
		os.WriteFile(filepath.Join(root, "devices/system/cpu", n, "online"), []byte("0\n"), 0o644)
	}
	if edit != nil {
		edit(root)
	}
	k := cputest.NewKernel(root, vbox4)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { k.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	c := NewController(root)
	c.poll = 5 * time.Millisecond
	return c, k, root
}

func TestEject(t *testing.T) {
	c, k, root := vboxGuest(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Eject(ctx, 2); err != nil {
		t.Fatal(err)
	}
	// The firmware_node link led to VirtualBox's CPU 3, not to LNXCPU:02.
	if got := k.Ejected(); len(got) != 1 || got[0] != 3 {
		t.Fatalf("ejected VirtualBox CPUs %v, want [3]", got)
	}
	if present, _ := c.Present(); present.String() != "0-1,3" {
		t.Fatalf("present %s after ejecting cpu2", present)
	}
	if _, err := os.Stat(filepath.Join(root, "devices/system/cpu/cpu2")); !os.IsNotExist(err) {
		t.Fatalf("cpu2's directory is still there: %v", err)
	}
	// Once gone, ejecting again is a no-op.
	if err := c.Eject(ctx, 2); err != nil {
		t.Fatalf("second eject of cpu2: %v", err)
	}
}

// TestEjectThroughACPIDevices: without firmware_node links the LNXCPU
// device whose physical_node is the CPU is ejected.
func TestEjectThroughACPIDevices(t *testing.T) {
	c, k, _ := vboxGuest(t, func(root string) {
		for _, n := range []string{"cpu0", "cpu1", "cpu2", "cpu3"} {
			os.Remove(filepath.Join(root, "devices/system/cpu", n, "firmware_node"))
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Eject(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if got := k.Ejected(); len(got) != 1 || got[0] != 2 {
		t.Fatalf("ejected VirtualBox CPUs %v, want [2] (cpu3's device)", got)
	}
}

func TestEjectFailures(t *testing.T) {
	short := func() context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		t.Cleanup(cancel)
		return ctx
	}
	t.Run("boot CPU", func(t *testing.T) {
		c, _, _ := vboxGuest(t, nil)
		if err := c.Eject(short(), 0); !errors.Is(err, ErrNotRemovable) {
			t.Fatalf("got %v, want ErrNotRemovable", err)
		}
	})
	t.Run("online CPU", func(t *testing.T) {
		c, k, _ := vboxGuest(t, nil)
		if err := c.Eject(short(), 1); !errors.Is(err, ErrNotRemovable) || !strings.Contains(err.Error(), "offline it") {
			t.Fatalf("got %v, want ErrNotRemovable telling to offline first", err)
		}
		if len(k.Ejected()) != 0 {
			t.Fatal("an online CPU was ejected")
		}
	})
	t.Run("no eject attribute", func(t *testing.T) {
		c, _, _ := vboxGuest(t, func(root string) {
			os.RemoveAll(filepath.Join(root, "devices/LNXSYSTM:00"))
			os.RemoveAll(filepath.Join(root, "bus"))
		})
		err := c.Eject(short(), 2)
		if !errors.Is(err, ErrNotEjectable) || !strings.Contains(err.Error(), "firmware_node/eject") {
			t.Fatalf("got %v, want ErrNotEjectable naming the path it looked for", err)
		}
	})
	t.Run("ACPI device without _EJ0", func(t *testing.T) {
		c, _, _ := vboxGuest(t, func(root string) {
			os.Remove(filepath.Join(root, "devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0004:03/LNXCPU:03/eject"))
		})
		if err := c.Eject(short(), 2); !errors.Is(err, ErrNotEjectable) || !strings.Contains(err.Error(), "LNXCPU:03") {
			t.Fatalf("got %v, want ErrNotEjectable naming LNXCPU:03", err)
		}
	})
	t.Run("kernel refuses the write", func(t *testing.T) {
		c, _, _ := vboxGuest(t, nil)
		c.write = func(string, []byte) error { return syscall.ENODEV }
		if err := c.Eject(short(), 2); !errors.Is(err, syscall.ENODEV) || !strings.Contains(err.Error(), "hotplug/processor/enabled") {
			t.Fatalf("got %v, want ENODEV with the hint", err)
		}
	})
	t.Run("firmware refuses _EJ0", func(t *testing.T) {
		c, k, _ := vboxGuest(t, nil)
		k.SetEJ0(func(int) error { return errors.New("locked") })
		err := c.Eject(short(), 2)
		if !errors.Is(err, ErrStillPresent) || !strings.Contains(err.Error(), "kernel log") {
			t.Fatalf("got %v, want ErrStillPresent", err)
		}
		if present, _ := c.Present(); !present.Has(2) {
			t.Fatal("cpu2 left present although _EJ0 failed")
		}
	})
}
