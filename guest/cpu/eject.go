package cpu

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Errors of Eject, wrapped with the CPU and file; test with errors.Is.
var (
	// ErrNotEjectable: the CPU has no ACPI eject attribute — its firmware
	// object has no _EJ0, or the kernel has no ACPI processor hot-remove.
	ErrNotEjectable = errors.New("CPU cannot be ejected")
	// ErrStillPresent: the kernel accepted the eject but the CPU is still
	// present when the deadline passes.
	ErrStillPresent = errors.New("CPU still present after ejecting it")
)

// Eject asks the firmware to remove cpu, which must be offline, and waits
// until the kernel has removed it: what VirtualBox needs before its
// unplugcpu succeeds, since without the Guest Additions nothing else in
// the guest ejects the CPU.
//
// It writes 1 to the eject attribute of the CPU's ACPI device
// (Documentation/ABI/testing/sysfs-bus-acpi): the one its firmware_node
// link names (<sys>/devices/system/cpu/cpuN/firmware_node/eject) or, on a
// kernel without that link, the LNXCPU device under <sys>/bus/acpi/devices
// whose physical_node is cpuN. The kernel runs the hot-remove, _EJ0
// included, asynchronously, so Eject then waits for cpuN to leave
// <sys>/devices/system/cpu/present; if ctx ends first it returns
// ErrStillPresent. A CPU that is not present is left alone and Eject
// returns nil; cpu0 and online CPUs are refused (ErrNotRemovable).
func (c *Controller) Eject(ctx context.Context, cpu int) error {
	if err := checkRange(cpu); err != nil {
		return err
	}
	if cpu == 0 {
		return fmt.Errorf("%w: cpu 0 is the boot CPU and is never ejected", ErrNotRemovable)
	}
	gone, err := c.gone(cpu)
	if err != nil || gone {
		return err
	}
	if up, err := readState(c.onlinePath(cpu)); err == nil && up {
		return fmt.Errorf("%w: cpu %d is online: offline it before ejecting it", ErrNotRemovable, cpu)
	}
	path, err := c.ejectPath(cpu)
	if err != nil {
		return err
	}
	if err := c.write(path, []byte("1\n")); err != nil {
		return fmt.Errorf("cpu %d: writing 1 to %s: %w%s", cpu, path, err, ejectHint(err))
	}
	start := time.Now()
	var tick *time.Ticker
	for {
		gone, err := c.gone(cpu)
		if err != nil || gone {
			return err
		}
		if tick == nil {
			tick = time.NewTicker(c.poll)
			defer tick.Stop()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: cpu %d: wrote 1 to %s but the CPU is still in %s after %v: the firmware's _EJ0 refused it or the kernel's hot-remove failed; see the guest's kernel log",
				ErrStillPresent, cpu, path, filepath.Join(c.dir, "present"), time.Since(start).Round(time.Millisecond))
		case <-tick.C:
		}
	}
}

// gone says whether cpu has left the present list.
func (c *Controller) gone(cpu int) (bool, error) {
	present, err := c.Present()
	if err != nil {
		return false, fmt.Errorf("cpu %d: %w", cpu, err)
	}
	return !present.Has(cpu), nil
}

// ejectPath finds the eject attribute of cpu's ACPI device.
func (c *Controller) ejectPath(cpu int) (string, error) {
	name := "cpu" + strconv.Itoa(cpu)
	direct := filepath.Join(c.dir, name, "firmware_node", "eject")
	if _, err := os.Stat(direct); err == nil {
		return direct, nil
	}
	// No firmware_node link (or no eject under it): the ACPI processor
	// devices themselves, each linking to the CPU it is.
	devices, err := filepath.Glob(filepath.Join(c.root, "bus", "acpi", "devices", "LNXCPU:*"))
	if err != nil {
		return "", err
	}
	for _, d := range devices {
		target, err := filepath.EvalSymlinks(filepath.Join(d, "physical_node"))
		if err != nil {
			continue
		}
		cpuDir, err := filepath.EvalSymlinks(filepath.Join(c.dir, name))
		if err != nil || target != cpuDir {
			continue
		}
		p := filepath.Join(d, "eject")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		return "", fmt.Errorf("%w: cpu %d: its ACPI device %s has no eject attribute (no _EJ0 in the firmware)", ErrNotEjectable, cpu, d)
	}
	return "", fmt.Errorf("%w: cpu %d: neither %s nor an LNXCPU device under %s whose physical_node is %s (kernel without ACPI processor hot-remove, CONFIG_ACPI_HOTPLUG_CPU?)",
		ErrNotEjectable, cpu, direct, filepath.Join(c.root, "bus", "acpi", "devices"), name)
}

// ejectHint says what a refused eject write means (drivers/acpi/
// device_sysfs.c: eject_store).
func ejectHint(err error) string {
	switch {
	case errors.Is(err, syscall.ENODEV):
		return " (the kernel's processor hot-remove is off — see /sys/firmware/acpi/hotplug/processor/enabled — or the device is not ejectable)"
	case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.ENOMEM):
		return " (the kernel could not queue the hot-remove; retry later)"
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES):
		return " (ejecting a device needs root)"
	case errors.Is(err, fs.ErrNotExist):
		return " (the CPU's ACPI device went away meanwhile)"
	}
	return ""
}
