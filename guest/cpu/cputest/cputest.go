// Package cputest writes the sysfs trees of guests for CPU hot-plug tests
// and plays the guest kernel's part in an ACPI eject on them, so the
// agent's side of a VirtualBox unplug can be tested without VirtualBox.
//
// The trees follow what Linux 6.1 builds for VirtualBox's ACPI tables
// (src/VBox/Devices/PC/vbox-cpuhotplug.dsl: one ACPI0004 module device
// per CPU socket, each holding a Processor object with _EJ0): the ACPI
// device of a CPU is /sys/devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0004:NN/
// LNXCPU:NN, linked from the CPU's firmware_node and from
// /sys/bus/acpi/devices, with a physical_node link back and an eject
// attribute (Documentation/ABI/testing/sysfs-bus-acpi). None of it was
// read from a running VirtualBox guest.
//
// It is test support: no shipped binary may import it.
package cputest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hotplugheaven/hotplug/proto"
)

// CPU is one CPU of a VirtualBox guest: Linux's number for it and
// VirtualBox's (the ACPI processor id, which VBoxManage's plugcpu and
// unplugcpu take). They differ once CPUs were hot-added out of order: Linux
// gives a new CPU the lowest free number.
type CPU struct{ Linux, VBox int }

// WriteVirtualBox writes under sysRoot the tree of a VirtualBox guest
// (DMI "innotek GmbH" "VirtualBox") with possible CPUs 0…possible−1, cpus
// present and online; cpu0 has no online file, as on most x86 kernels.
func WriteVirtualBox(sysRoot string, possible int, cpus []CPU) error {
	files := map[string]string{
		"class/dmi/id/sys_vendor":     "innotek GmbH\n",
		"class/dmi/id/product_name":   "VirtualBox\n",
		"devices/system/cpu/possible": fmt.Sprintf("0-%d\n", possible-1),
	}
	var present proto.CPUSet
	links := map[string]string{}
	for _, c := range cpus {
		present.Add(c.Linux)
		dev := acpiDir(c.VBox)
		cpuDir := "devices/system/cpu/cpu" + strconv.Itoa(c.Linux)
		files[dev+"/hid"] = "LNXCPU\n"
		files[dev+"/path"] = fmt.Sprintf("\\_SB_.SCK%X.CPU%X\n", c.VBox, c.VBox)
		files[dev+"/status"] = "15\n"
		files[dev+"/eject"] = ""
		if c.Linux != 0 {
			files[cpuDir+"/online"] = "1\n"
		}
		links[cpuDir+"/firmware_node"] = rel(cpuDir, dev)
		links[dev+"/physical_node"] = rel(dev, cpuDir)
		links["bus/acpi/devices/"+filepath.Base(dev)] = rel("bus/acpi/devices", dev)
	}
	files["devices/system/cpu/present"] = present.String() + "\n"
	files["devices/system/cpu/online"] = present.String() + "\n"
	for p, content := range files {
		if err := os.MkdirAll(filepath.Join(sysRoot, filepath.Dir(p)), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(sysRoot, p), []byte(content), 0o644); err != nil {
			return err
		}
	}
	for p, target := range links {
		if err := os.MkdirAll(filepath.Join(sysRoot, filepath.Dir(p)), 0o755); err != nil {
			return err
		}
		if err := os.Symlink(target, filepath.Join(sysRoot, p)); err != nil {
			return err
		}
	}
	return nil
}

// acpiDir is the ACPI device of VirtualBox CPU id under the sysfs root.
func acpiDir(id int) string {
	return fmt.Sprintf("devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0004:%02X/LNXCPU:%02X", id, id)
}

// rel is the relative link from a file in dir to target, both relative
// to the sysfs root, as sysfs writes its links.
func rel(dir, target string) string {
	r, err := filepath.Rel(dir, target)
	if err != nil {
		panic(err)
	}
	return r
}

// Kernel plays the guest kernel's ACPI hot-remove on a tree written by
// WriteVirtualBox: when 1 is written to a CPU's eject attribute it runs
// the firmware's _EJ0 (see SetEJ0: VirtualBox unlocking the CPU)
// and, if that succeeds, removes the CPU as Linux does — its directory,
// its ACPI device and links, its number from the present and online
// lists. Like the kernel's, the work is asynchronous: the write returns
// at once and the CPU goes a moment later.
type Kernel struct {
	root string
	cpus []CPU
	// Delay is how long the hot-remove takes after the write; set it
	// before Run.
	Delay time.Duration

	mu      sync.Mutex
	ej0     func(id int) error
	ejected []int // VirtualBox ids, in order
	errs    []error
}

// NewKernel returns a kernel for the tree at sysRoot with cpus, whose
// firmware ejects every CPU.
func NewKernel(sysRoot string, cpus []CPU) *Kernel {
	return &Kernel{root: sysRoot, cpus: cpus, ej0: func(int) error { return nil }, Delay: 20 * time.Millisecond}
}

// SetEJ0 replaces the firmware's eject of VirtualBox CPU id (VirtualBox
// unlocking the CPU, or the fake VirtualBox told so); an error leaves the
// CPU in place, as a failed _EJ0 does.
func (k *Kernel) SetEJ0(f func(id int) error) {
	k.mu.Lock()
	k.ej0 = f
	k.mu.Unlock()
}

// Run watches the eject attributes until ctx ends.
func (k *Kernel) Run(ctx context.Context) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for _, c := range k.cpus {
			eject := filepath.Join(k.root, acpiDir(c.VBox), "eject")
			b, err := os.ReadFile(eject)
			if err != nil || strings.TrimSpace(string(b)) != "1" {
				continue
			}
			os.WriteFile(eject, nil, 0o644) // handled: a sysfs attribute keeps nothing
			time.Sleep(k.Delay)
			if err := k.remove(c); err != nil {
				k.mu.Lock()
				k.errs = append(k.errs, err)
				k.mu.Unlock()
			}
		}
	}
}

// Ejected returns the VirtualBox ids of the CPUs removed so far.
func (k *Kernel) Ejected() []int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]int(nil), k.ejected...)
}

// Err returns the failures seen, joined (a refused _EJ0, a tree it could
// not change).
func (k *Kernel) Err() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return errors.Join(k.errs...)
}

func (k *Kernel) remove(c CPU) error {
	k.mu.Lock()
	ej0 := k.ej0
	k.mu.Unlock()
	if err := ej0(c.VBox); err != nil {
		return fmt.Errorf("_EJ0 of VirtualBox CPU %d (cpu%d): %w", c.VBox, c.Linux, err)
	}
	k.mu.Lock()
	k.ejected = append(k.ejected, c.VBox)
	k.mu.Unlock()
	dev := acpiDir(c.VBox)
	for _, p := range []string{
		"devices/system/cpu/cpu" + strconv.Itoa(c.Linux),
		dev,
		"bus/acpi/devices/" + filepath.Base(dev),
	} {
		if err := os.RemoveAll(filepath.Join(k.root, p)); err != nil {
			return err
		}
	}
	for _, list := range []string{"present", "online"} {
		p := filepath.Join(k.root, "devices/system/cpu", list)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		set, err := proto.ParseCPUList(string(b))
		if err != nil {
			return err
		}
		set.Remove(c.Linux)
		if err := os.WriteFile(p, []byte(set.String()+"\n"), 0o644); err != nil {
			return err
		}
	}
	return nil
}
