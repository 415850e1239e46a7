package cpu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/hotplugheaven/hotplug/proto"
)

// Errors returned by Controller, wrapped with the CPU and file; test with
// errors.Is.
var (
	// ErrNotRemovable: the CPU must not or cannot be taken offline — cpu0,
	// or a CPU whose directory has no online file because the kernel cannot
	// hot-remove it.
	ErrNotRemovable = errors.New("CPU cannot be taken offline")
	// ErrNoCPU: the CPU number is out of range or the kernel has no
	// directory for it (not present in the guest).
	ErrNoCPU = errors.New("no such CPU")
	// ErrStillOnline: the kernel accepted the write of 0 but the CPU still
	// reads as online.
	ErrStillOnline = errors.New("CPU still online after offlining it")
	// ErrStillOffline: the kernel accepted the write of 1 but the CPU still
	// reads as offline.
	ErrStillOffline = errors.New("CPU still offline after onlining it")
)

// pollInterval is how often Online looks for a hot-added CPU's online file.
// The guest's ACPI handler creates it asynchronously: tens of milliseconds
// under KVM, seconds under TCG emulation.
const pollInterval = 50 * time.Millisecond

// maxListFile bounds what is read from a list or online file. The longest
// honest list (every other CPU up to proto.MaxCPUs) is under 4 KiB.
const maxListFile = 8 << 10

// Controller reads and changes CPU state under one sysfs root. It keeps no
// state between calls and is safe for concurrent use; the kernel serialises
// hotplug operations itself (cpu_hotplug_lock).
type Controller struct {
	root string // sysfs mount point
	dir  string // <root>/devices/system/cpu
	poll time.Duration
	// write performs one write to a sysfs attribute. Tests replace it to
	// inject the failures a root-owned temp dir cannot produce (EBUSY, a
	// write the kernel accepts without effect).
	write func(path string, data []byte) error
}

// NewController returns a Controller for the sysfs tree mounted at sysRoot
// ("/sys" when empty).
func NewController(sysRoot string) *Controller {
	if sysRoot == "" {
		sysRoot = "/sys"
	}
	return &Controller{
		root:  sysRoot,
		dir:   filepath.Join(sysRoot, "devices", "system", "cpu"),
		poll:  pollInterval,
		write: writeAttr,
	}
}

// Possible returns the CPUs the kernel has allocated resources for, including
// those that may be hot-added later (<sys>/devices/system/cpu/possible, see
// Documentation/admin-guide/cputopology.rst).
func (c *Controller) Possible() (proto.CPUSet, error) { return c.readList("possible") }

// Present returns the CPUs the hypervisor has plugged in
// (<sys>/devices/system/cpu/present, see
// Documentation/admin-guide/cputopology.rst).
func (c *Controller) Present() (proto.CPUSet, error) { return c.readList("present") }

// OnlineCPUs returns the CPUs the scheduler is using
// (<sys>/devices/system/cpu/online, see
// Documentation/admin-guide/cputopology.rst). It is not called Online because
// that name is the action.
func (c *Controller) OnlineCPUs() (proto.CPUSet, error) { return c.readList("online") }

func (c *Controller) readList(name string) (proto.CPUSet, error) {
	path := filepath.Join(c.dir, name)
	b, err := readAttr(path)
	if err != nil {
		return proto.CPUSet{}, fmt.Errorf("reading CPU list: %w (is sysfs mounted at %s?)", err, c.root)
	}
	set, err := proto.ParseCPUList(string(b))
	if err != nil {
		return proto.CPUSet{}, fmt.Errorf("%s: %w", path, err)
	}
	return set, nil
}

// Online brings cpu online by writing 1 to <sys>/devices/system/cpu/cpuN/online
// (Documentation/core-api/cpu_hotplug.rst). A CPU the hypervisor has just
// hot-added may not have its directory yet, so Online waits until the online
// file appears or ctx ends. A CPU that is already online, including one
// without an online file such as cpu0 on most kernels, is left alone and
// Online returns nil. After writing, Online reads the file back and returns
// ErrStillOffline if the CPU did not come up.
func (c *Controller) Online(ctx context.Context, cpu int) error {
	if err := checkRange(cpu); err != nil {
		return err
	}
	path := c.onlinePath(cpu)
	var tick *time.Ticker
	for {
		up, err := readState(path)
		switch {
		case err == nil && up:
			return nil
		case err == nil:
			return c.set(cpu, path, true)
		case !errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("cpu %d: %w", cpu, err)
		}
		// No online file: either the CPU cannot be hot-removed (it is then
		// online for good) or its directory is still being created.
		online, err := c.OnlineCPUs()
		if err != nil {
			return fmt.Errorf("cpu %d: %w", cpu, err)
		}
		if online.Has(cpu) {
			return nil
		}
		if tick == nil {
			tick = time.NewTicker(c.poll)
			defer tick.Stop()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cpu %d: %s did not appear before the deadline: the hot-add has not reached the guest (ACPI handler still running, or the hypervisor never plugged the CPU); see the guest's kernel log: %w",
				cpu, path, ctx.Err())
		case <-tick.C:
		}
	}
}

// Offline takes cpu offline by writing 0 to <sys>/devices/system/cpu/cpuN/online
// (Documentation/core-api/cpu_hotplug.rst). cpu0 and CPUs without an online
// file are never offlined: Offline returns ErrNotRemovable. A CPU already
// offline is left alone. The kernel's refusal (EBUSY and the like) is
// returned wrapped with the CPU and file; a write the kernel accepts while
// the CPU stays online is reported as ErrStillOnline, so a CPU that fails to
// go offline is never reported as gone.
func (c *Controller) Offline(cpu int) error {
	if err := checkRange(cpu); err != nil {
		return err
	}
	if cpu == 0 {
		return fmt.Errorf("%w: cpu 0 is the boot CPU and stays online", ErrNotRemovable)
	}
	path := c.onlinePath(cpu)
	up, err := readState(path)
	if errors.Is(err, fs.ErrNotExist) {
		if _, derr := os.Stat(filepath.Dir(path)); errors.Is(derr, fs.ErrNotExist) {
			return fmt.Errorf("%w: cpu %d: %s does not exist (the CPU is not present in the guest)", ErrNoCPU, cpu, filepath.Dir(path))
		}
		return fmt.Errorf("%w: cpu %d has no %s: the kernel cannot hot-remove it", ErrNotRemovable, cpu, path)
	}
	if err != nil {
		return fmt.Errorf("cpu %d: %w", cpu, err)
	}
	if !up {
		return nil
	}
	return c.set(cpu, path, false)
}

// set writes the wanted state and reads it back.
func (c *Controller) set(cpu int, path string, up bool) error {
	val := []byte("0\n")
	if up {
		val = []byte("1\n")
	}
	if err := c.write(path, val); err != nil {
		return fmt.Errorf("cpu %d: writing %c to %s: %w%s", cpu, val[0], path, err, hint(err, up))
	}
	got, err := readState(path)
	if err != nil {
		return fmt.Errorf("cpu %d: reading back after writing %c: %w", cpu, val[0], err)
	}
	switch {
	case got == up:
		return nil
	case up:
		return fmt.Errorf("%w: cpu %d: %s reads 0 after writing 1; see the guest's kernel log", ErrStillOffline, cpu, path)
	default:
		return fmt.Errorf("%w: cpu %d: %s reads 1 after writing 0; see the guest's kernel log", ErrStillOnline, cpu, path)
	}
}

// hint says what the user can do about a refused write.
func hint(err error, up bool) string {
	switch {
	case errors.Is(err, syscall.EBUSY) && !up:
		return " (the kernel refused: tasks or interrupts bound to the CPU, the last CPU of a cpuset or isolated partition, or another hotplug operation in progress; retry later)"
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES):
		return " (changing CPU state needs root; with SMT disabled by nosmt, sibling threads cannot be onlined)"
	}
	return ""
}

func (c *Controller) onlinePath(cpu int) string {
	return filepath.Join(c.dir, "cpu"+strconv.Itoa(cpu), "online")
}

func checkRange(cpu int) error {
	if cpu < 0 || cpu >= proto.MaxCPUs {
		return fmt.Errorf("%w: cpu %d is outside [0, %d)", ErrNoCPU, cpu, proto.MaxCPUs)
	}
	return nil
}

// readState reads an online file: "1" online, "0" offline.
func readState(path string) (bool, error) {
	b, err := readAttr(path)
	if err != nil {
		return false, err
	}
	switch string(bytes.TrimSpace(b)) {
	case "1":
		return true, nil
	case "0":
		return false, nil
	}
	return false, fmt.Errorf("%s: want 0 or 1, got %q", path, bytes.TrimSpace(b))
}

// readAttr reads a small sysfs attribute. sysfs reports every attribute as
// 4096 bytes long, so os.ReadFile's size hint is useless here.
func readAttr(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxListFile+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, unwrapPath(err))
	}
	if len(b) > maxListFile {
		return nil, fmt.Errorf("%s is longer than %d bytes: not a sysfs attribute", path, maxListFile)
	}
	return b, nil
}

// writeAttr writes one value to a sysfs attribute. It never creates the file:
// a missing attribute is an error, not something to make up. The kernel's
// answer comes back as the bare errno so that callers can name the file once.
func writeAttr(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return unwrapPath(err)
	}
	_, werr := f.Write(data)
	cerr := f.Close()
	if werr != nil {
		return unwrapPath(werr)
	}
	return unwrapPath(cerr)
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Op, pe.Err)
	}
	return err
}
