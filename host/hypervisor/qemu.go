package hypervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotplugheaven/hotplug/host/qmp"
)

// What QEMU does, as checked against qemu-system-x86_64 10.0.2 (Debian
// 1:10.0.2+ds-2+deb13u1~bpo12+1, bookworm-backports) with -machine pc, TCG,
// and a Linux 6.1 guest; where 7.2 (1:7.2+dfsg-7+deb12u18), which the
// project used before, differed, it says so:
//
//   - query-hotpluggable-cpus lists every slot, highest first; "qom-path" is
//     present only on plugged slots. CPUs from -smp live under
//     /machine/unattached/device[N], device_add'ed ones under
//     /machine/peripheral/<id> (or /machine/peripheral-anon/device[N]
//     without an id). With -smp modules=M>1 (QEMU 9+) slots carry a
//     module-id too.
//   - device_del of CPU 0 always fails: "Boot CPU is unpluggable". Other -smp
//     CPUs CAN be removed: QEMU accepts device_del for them and a Linux
//     guest ejects them. We still report them not Removable and never
//     device_del them: the -smp count is the VM's configured floor, and the
//     Hypervisor contract says only hot-plugged CPUs are removable.
//   - Until the guest's ACPI code switches QEMU to the modern CPU hotplug
//     interface (a Linux guest does it while booting), QEMU refuses every CPU
//     device_del with "acpi: device unplug request for not supported device
//     type: <type>". So a VM with no OS, or one still in firmware, cannot
//     unplug at all; it does not merely time out.
//   - When the guest completes an unplug under TCG, QEMU sends
//     DEVICE_DELETED only for the CPU's child "<qom-path>/lapic" (no
//     "device" member), none for the CPU itself; 7.2 did the same. Under KVM
//     (checked without a guest, ejecting through the ACPI register) a
//     DEVICE_DELETED with the CPU's id and path follows the lapic's. Unplug
//     therefore accepts any DEVICE_DELETED at or below the CPU's QOM path,
//     then confirms from query-hotpluggable-cpus, which already shows the
//     slot free when the event comes.
//   - device_del while an unplug is pending is accepted again ({}).
//   - QEMU serves one client per -qmp socket; a second client connects but
//     gets no greeting until the first hangs up. The actuator needs a -qmp
//     socket of its own.
//   - With TCG, QEMU 7.2 crashed (SIGSEGV in the RCU thread, a use-after-free
//     of the unplugged CPU's address space) on the next CPU device_add after
//     a guest completed an unplug. 10.0.2 re-plugs, but never gives back the
//     TCG context each vCPU thread takes: a VM can create at most maxcpus
//     vCPUs in its life, -smp ones included, and the device_add that would
//     create one more aborts QEMU ("tcg_register_thread: assertion failed:
//     (n < tcg_max_ctxs)"). With -smp 1,maxcpus=4 that is three Plugs in
//     the VM's life, however many Unplugs come between. -accel
//     tcg,thread=single is no way out: QEMU aborts on the first guest eject
//     ("qemu_thread_join: Resource deadlock avoided"), as 7.2 did. KVM has
//     no such limit. Plug cannot see the count; it reports the abort as
//     ErrUnavailable, like any dead QEMU, and names the likely cause.

// QEMUOptions configures NewQEMU. The zero value means defaults.
type QEMUOptions struct {
	// UnplugTimeout bounds how long Unplug waits for the guest to eject a
	// CPU. Default 30s: TCG guests are slow.
	UnplugTimeout time.Duration
	// Logger, nil to discard.
	Logger hclog.Logger
	// ProcRoot is the host's /proc (tests); default /proc.
	ProcRoot string
}

func (o QEMUOptions) procRoot() string {
	if o.ProcRoot == "" {
		return "/proc"
	}
	return o.ProcRoot
}

// DefaultUnplugTimeout is QEMUOptions.UnplugTimeout's default.
const DefaultUnplugTimeout = 30 * time.Second

// QEMU drives one QEMU VM's vCPUs over its QMP socket. It connects on first
// use and again after the connection drops, so it survives QEMU monitor
// hiccups; while QEMU is gone every call fails with ErrUnavailable.
type QEMU struct {
	socket string
	opts   QEMUOptions
	log    hclog.Logger

	// connSem guards client; a channel so waiting honours ctx.
	connSem chan struct{}
	client  *qmp.Client
	closed  bool

	// opSem serialises Plug and Unplug: two concurrent Plugs would pick
	// the same free slot. memSem serialises memory resizes.
	opSem, memSem chan struct{}

	// lifeMu guards life, VCPULifetime's answer for the connection lifeOf.
	lifeMu sync.Mutex
	life   Lifetime
	lifeOf *qmp.Client
}

var _ Hypervisor = (*QEMU)(nil)

// NewQEMU returns a backend for the VM whose QMP socket is socketPath (QEMU
// started with -qmp unix:PATH,server=on,wait=off). It does not connect yet.
func NewQEMU(socketPath string, opts QEMUOptions) *QEMU {
	if opts.UnplugTimeout <= 0 {
		opts.UnplugTimeout = DefaultUnplugTimeout
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	return &QEMU{
		socket:  socketPath,
		opts:    opts,
		log:     opts.Logger.With("qmp_socket", socketPath),
		connSem: make(chan struct{}, 1),
		opSem:   make(chan struct{}, 1),
		memSem:  make(chan struct{}, 1),
	}
}

func acquire(ctx context.Context, sem chan struct{}) error {
	select {
	case sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// conn returns a live client, dialling if there is none or the last one
// died.
func (q *QEMU) conn(ctx context.Context) (*qmp.Client, error) {
	if err := acquire(ctx, q.connSem); err != nil {
		return nil, fmt.Errorf("hypervisor: QEMU %s: waiting for the connection: %w", q.socket, err)
	}
	defer func() { <-q.connSem }()
	if q.closed {
		return nil, fmt.Errorf("hypervisor: QEMU %s: backend is closed", q.socket)
	}
	if q.client != nil && q.client.Err() == nil {
		return q.client, nil
	}
	if q.client != nil {
		q.log.Info("reconnecting to QEMU", "reason", q.client.Err())
		q.client.Close()
		q.client = nil
	}
	c, err := qmp.Dial(ctx, q.socket, q.log)
	if err != nil {
		// err keeps ctx's error in its chain when ctx ended the attempt:
		// a silent socket (another client holding it) is still
		// unavailable, and the caller can also see its deadline.
		return nil, fmt.Errorf("%w: cannot reach QEMU's QMP socket %s (is the VM running, and was QEMU started with -qmp unix:%s,server=on,wait=off?): %w",
			ErrUnavailable, q.socket, q.socket, err)
	}
	q.log.Debug("connected to QEMU", "version", c.Greeting().String())
	q.client = c
	return c, nil
}

// exec runs one QMP command, turning a lost connection into ErrUnavailable.
func (q *QEMU) exec(ctx context.Context, c *qmp.Client, cmd string, args, result any) error {
	err := c.Execute(ctx, cmd, args, result)
	if errors.Is(err, qmp.ErrClosed) {
		return fmt.Errorf("%w: QEMU at %s went away during %s (did QEMU exit? the next call reconnects): %v",
			ErrUnavailable, q.socket, cmd, err)
	}
	return err
}

// Close drops the connection. Later calls fail.
func (q *QEMU) Close() error {
	q.connSem <- struct{}{}
	defer func() { <-q.connSem }()
	q.closed = true
	if q.client != nil {
		q.client.Close()
		q.client = nil
	}
	return nil
}

// State reads the VM's CPU slots: query-hotpluggable-cpus for the slots,
// query-cpus-fast for host thread ids, qom-get apic-id for each plugged CPU.
func (q *QEMU) State(ctx context.Context) (State, error) {
	c, err := q.conn(ctx)
	if err != nil {
		return State{}, err
	}
	slots, err := q.state(ctx, c)
	if err != nil {
		return State{}, err
	}
	return qstate(slots), nil
}

func qstate(slots []qslot) State {
	st := State{Slots: make([]Slot, len(slots))}
	for i, s := range slots {
		st.Slots[i] = s.Slot
	}
	return st
}

func (q *QEMU) state(ctx context.Context, c *qmp.Client) ([]qslot, error) {
	slots, err := readState(ctx, qemuMonitor{q, c}, q.log)
	if err != nil {
		return nil, fmt.Errorf("hypervisor: QEMU %s: %w", q.socket, err)
	}
	return slots, nil
}

// slots reads QEMU's CPU slots, ordered by topology so index 0 is the boot
// CPU. It does not fill APICID or ThreadID.
func (q *QEMU) slots(ctx context.Context, c *qmp.Client) ([]qslot, error) {
	slots, err := readSlots(ctx, qemuMonitor{q, c})
	if err != nil {
		return nil, fmt.Errorf("hypervisor: QEMU %s: %w", q.socket, err)
	}
	return slots, nil
}

// qemuMonitor runs QMP commands on a QEMU's own socket.
type qemuMonitor struct {
	q *QEMU
	c *qmp.Client
}

func (m qemuMonitor) Execute(ctx context.Context, cmd string, args, result any) error {
	return m.q.exec(ctx, m.c, cmd, args, result)
}

// Plug device_adds a CPU into the lowest free slot, with exactly the props
// QEMU listed for it, and returns the slot as QEMU then reports it.
func (q *QEMU) Plug(ctx context.Context) (Slot, State, error) {
	if err := acquire(ctx, q.opSem); err != nil {
		return Slot{}, State{}, fmt.Errorf("hypervisor: QEMU %s: plug: %w", q.socket, err)
	}
	defer func() { <-q.opSem }()
	c, err := q.conn(ctx)
	if err != nil {
		return Slot{}, State{}, err
	}
	slots, err := q.slots(ctx, c)
	if err != nil {
		return Slot{}, State{}, err
	}
	var free *qslot
	for i := range slots {
		if !slots[i].Plugged {
			free = &slots[i]
			break
		}
	}
	if free == nil {
		return Slot{}, State{}, fmt.Errorf("%w: all %d CPU slots of the VM at %s are plugged (raise -smp maxcpus to allow more)",
			ErrNoFreeSlot, len(slots), q.socket)
	}
	id := deviceID(*free)
	args := make(map[string]any, len(free.props)+2)
	for k, v := range free.props {
		args[k] = v
	}
	args["driver"] = free.cpuType
	args["id"] = id
	q.log.Debug("plugging CPU", "slot", free.Index, "id", id)
	if err := q.exec(ctx, c, "device_add", args, nil); err != nil {
		if errors.Is(err, ErrUnavailable) {
			return Slot{}, State{}, fmt.Errorf("%w; it was plugging CPU %s into slot %d (QEMU 10.0 under TCG aborts on the device_add that would create more vCPUs than -smp maxcpus in the VM's life, unplugged ones included: look for \"tcg_max_ctxs\" in QEMU's log)",
				err, id, free.Index)
		}
		return Slot{}, State{}, fmt.Errorf("hypervisor: QEMU %s: device_add CPU %s into slot %d (re-read State: another client may have plugged it): %w",
			q.socket, id, free.Index, err)
	}
	after, err := q.state(ctx, c)
	if err != nil {
		return Slot{}, State{}, fmt.Errorf("hypervisor: QEMU %s: CPU %s was plugged but reading it back failed: %w", q.socket, id, err)
	}
	want := "/machine/peripheral/" + id
	for _, s := range after {
		if s.Ref == want {
			q.log.Info("plugged CPU", "slot", s.Index, "id", id, "apic_id", s.APICID)
			return s.Slot, qstate(after), nil
		}
	}
	return Slot{}, State{}, fmt.Errorf("hypervisor: QEMU %s: device_add CPU %s succeeded but query-hotpluggable-cpus does not list %s", q.socket, id, want)
}

// deviceDeleted is the data of QEMU's DEVICE_DELETED event.
type deviceDeleted struct {
	Device string `json:"device"`
	Path   string `json:"path"`
}

// Unplug asks QEMU to remove the CPU in slot and waits, up to
// UnplugTimeout, for the guest to eject it. It confirms from QEMU that the
// slot is free before returning nil.
func (q *QEMU) Unplug(ctx context.Context, slot Slot) (State, error) {
	if err := acquire(ctx, q.opSem); err != nil {
		return State{}, fmt.Errorf("hypervisor: QEMU %s: unplug slot %d: %w", q.socket, slot.Index, err)
	}
	defer func() { <-q.opSem }()
	if slot.Ref == "" {
		return State{}, fmt.Errorf("%w: slot %d of the VM at %s holds no CPU", ErrNotUnpluggable, slot.Index, q.socket)
	}
	c, err := q.conn(ctx)
	if err != nil {
		return State{}, err
	}
	slots, err := q.state(ctx, c)
	if err != nil {
		return State{}, err
	}
	var cur *qslot
	for i := range slots {
		if slots[i].Ref == slot.Ref {
			cur = &slots[i]
		}
	}
	if cur == nil {
		q.log.Debug("CPU already gone", "qom_path", slot.Ref)
		return qstate(slots), nil
	}
	if !cur.Removable {
		return State{}, fmt.Errorf("%w: CPU %s (slot %d) of the VM at %s was not hot-plugged; only CPUs added by device_add are removed",
			ErrNotUnpluggable, cur.Ref, cur.Index, q.socket)
	}
	ref := cur.Ref
	id := strings.TrimPrefix(ref, "/machine/peripheral/")

	// Subscribe before device_del, or a fast guest's event could be missed.
	sub := c.Subscribe(func(ev qmp.Event) bool {
		if ev.Name != "DEVICE_DELETED" {
			return false
		}
		var d deviceDeleted
		if json.Unmarshal(ev.Data, &d) != nil {
			return false
		}
		return d.Path == ref || strings.HasPrefix(d.Path, ref+"/") || (d.Device != "" && d.Device == id)
	}, 4)
	defer sub.Close()

	q.log.Debug("unplugging CPU", "slot", cur.Index, "qom_path", ref)
	if err := q.exec(ctx, c, "device_del", map[string]string{"id": ref}, nil); err != nil {
		var qe *qmp.Error
		if errors.As(err, &qe) {
			switch {
			case qe.Class == "DeviceNotFound":
				return q.confirmGone(ctx, c, *cur)
			case strings.HasPrefix(qe.Desc, "acpi: device unplug request for not supported device type"):
				return State{}, fmt.Errorf("%w: QEMU %s refused device_del of CPU %s: the guest has not enabled ACPI CPU hot-unplug (still booting, or no ACPI); retry once the guest OS is up: %v",
					ErrNotUnpluggable, q.socket, ref, err)
			case qe.Desc == "Boot CPU is unpluggable":
				return State{}, fmt.Errorf("%w: QEMU %s: CPU %s is the boot CPU: %v", ErrNotUnpluggable, q.socket, ref, err)
			}
		}
		return State{}, fmt.Errorf("hypervisor: QEMU %s: device_del CPU %s (slot %d): %w", q.socket, ref, cur.Index, err)
	}

	timer := time.NewTimer(q.opts.UnplugTimeout)
	defer timer.Stop()
	select {
	case ev, ok := <-sub.C():
		if !ok {
			return State{}, fmt.Errorf("%w: QEMU %s went away while CPU %s was being unplugged (re-read State when it is back): %v",
				ErrUnavailable, q.socket, ref, c.Err())
		}
		q.log.Debug("guest ejected CPU", "qom_path", ref, "device_deleted", string(ev.Data))
	case <-timer.C:
		return State{}, fmt.Errorf("%w: the guest of the VM at %s did not eject CPU %s (slot %d) within %s; QEMU removes it if the guest finishes later, so re-read State",
			ErrUnplugTimeout, q.socket, ref, cur.Index, q.opts.UnplugTimeout)
	case <-ctx.Done():
		return State{}, fmt.Errorf("hypervisor: QEMU %s: waiting for the guest to eject CPU %s: %w (the unplug may still complete; re-read State)",
			q.socket, ref, ctx.Err())
	}
	return q.confirmGone(ctx, c, *cur)
}

// confirmGone checks that QEMU lists the slot as free. QEMU frees the slot
// before it sends DEVICE_DELETED, so one look normally suffices; a few short
// retries cover a QEMU that orders them differently.
func (q *QEMU) confirmGone(ctx context.Context, c *qmp.Client, want qslot) (State, error) {
	const tries = 5
	for i := 0; ; i++ {
		slots, err := q.state(ctx, c)
		if err != nil {
			return State{}, fmt.Errorf("hypervisor: QEMU %s: CPU %s was unplugged but reading state failed: %w", q.socket, want.Ref, err)
		}
		free := true
		for _, s := range slots {
			if s.Ref == want.Ref {
				free = false
			}
		}
		if free {
			q.log.Info("unplugged CPU", "slot", want.Index, "qom_path", want.Ref)
			return qstate(slots), nil
		}
		if i == tries-1 {
			return State{}, fmt.Errorf("hypervisor: QEMU %s: guest ejected CPU %s but QEMU still lists it in slot %d; re-read State",
				q.socket, want.Ref, want.Index)
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return State{}, fmt.Errorf("hypervisor: QEMU %s: confirming CPU %s is gone: %w", q.socket, want.Ref, ctx.Err())
		}
	}
}
