// Package hypervisor defines how the actuator changes a VM's vCPUs on the
// host. Each hypervisor (QEMU over QMP, libvirt, VirtualBox) is one file
// implementing Hypervisor. The two that reach QEMU share one model of its
// CPU slots (qemumodel.go), run over a qmp.Executor: QEMU's own QMP socket,
// or libvirt's monitor passthrough.
//
// Implementations report what the hypervisor says, never what the caller
// asked for: the actuator relies on State to learn the truth after a restart
// or a timed-out call. They must not decide policy.
package hypervisor

import (
	"context"
	"errors"
)

// Errors shared by implementations; wrap them with detail.
var (
	// ErrNoFreeSlot: every hot-pluggable CPU slot is already plugged.
	ErrNoFreeSlot = errors.New("no free CPU slot")
	// ErrNotUnpluggable: the CPU was not hot-plugged (boot CPU) or the
	// hypervisor refuses to remove it.
	ErrNotUnpluggable = errors.New("CPU cannot be unplugged")
	// ErrUnplugTimeout: the hypervisor asked the guest to eject the CPU and
	// the guest did not finish in time. The CPU may still go away later.
	ErrUnplugTimeout = errors.New("guest did not complete CPU unplug in time")
	// ErrUnavailable: the hypervisor cannot be reached (socket missing,
	// process gone). Callers retry with backoff.
	ErrUnavailable = errors.New("hypervisor unavailable")
)

// Slot is one hot-pluggable CPU position of a VM.
type Slot struct {
	// Index orders slots by topology (socket, die, core, thread); the boot
	// CPU is index 0.
	Index int
	// Plugged reports whether a CPU occupies the slot.
	Plugged bool
	// Removable is true for CPUs that can be unplugged (hot-plugged ones).
	Removable bool
	// Ref is the hypervisor's handle for the plugged CPU (QOM path for QEMU).
	Ref string
	// APICID is the x86 APIC id of the plugged CPU, -1 when unknown. It ties
	// the slot to the guest's CPU number (proto.CPUTopology).
	APICID int
	// ThreadID is the host thread running this vCPU, 0 when unknown.
	ThreadID int
}

// State is a snapshot of a VM's CPU slots.
type State struct {
	Slots []Slot
}

// Plugged is the number of plugged CPUs.
func (s State) Plugged() int {
	n := 0
	for _, sl := range s.Slots {
		if sl.Plugged {
			n++
		}
	}
	return n
}

// Max is the number of slots, the most vCPUs the VM can have.
func (s State) Max() int { return len(s.Slots) }

// Hypervisor changes one VM's vCPUs. Every call takes a context; none may
// block past it.
type Hypervisor interface {
	// State reads the VM's CPU slots from the hypervisor.
	State(ctx context.Context) (State, error)
	// Plug hot-plugs a CPU into the lowest free slot and returns that slot
	// and the VM's state as the hypervisor now reports them, so the caller
	// need not read it again.
	Plug(ctx context.Context) (Slot, State, error)
	// Unplug removes the CPU in slot, waits until the hypervisor reports
	// it gone and returns the state that shows it. On an error the state
	// is unknown (zero) and the caller must re-read State: on
	// ErrUnplugTimeout the CPU may still go away.
	Unplug(ctx context.Context, slot Slot) (State, error)
	// Close releases the connection.
	Close() error
}

// Optional interfaces a backend implements to be measured from the host
// when the VM has no agent (black-box mode). The actuator looks for them
// with a type assertion, so each implementation says so with a
// compile-time check: a renamed method would otherwise turn black-box
// measurement off without a word. A backend with neither is measured from
// the vCPU threads Slot.ThreadID names.

// VCPUStatser reports the CPU time each vCPU has used (libvirt's vCPU
// statistics).
type VCPUStatser interface {
	VCPUStats(ctx context.Context) ([]VCPUStat, error)
}

// VMLoader reports only the whole VM's CPU load, as a share of the host's
// CPUs (VirtualBox's metrics).
type VMLoader interface {
	CPULoad(ctx context.Context) (CPULoad, error)
}

var (
	_ VCPUStatser = (*Libvirt)(nil)
	_ VMLoader    = (*VirtualBox)(nil)
)
