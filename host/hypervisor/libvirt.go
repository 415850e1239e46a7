package hypervisor

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"
	"github.com/hashicorp/go-hclog"

	"github.com/hotplugheaven/hotplug/host/qmp"
)

// What libvirt does, as checked against libvirtd 9.0.0 (Debian
// 9.0.0-4+deb12u2) driving qemu-system-x86_64 10.0.2 (bookworm-backports),
// domain type qemu (TCG), machine pc-i440fx-10.0, with and without a Linux
// 6.1 guest:
//
//   - <vcpu current='1'>N</vcpu> without a <vcpus> element starts QEMU with
//     -smp 1,maxcpus=N,sockets=N,cores=1,threads=1. The live XML has no
//     <vcpus> element until a vCPU changes; from then on it lists every vCPU:
//     the boot ones hotpluggable='no', the others 'yes'.
//   - virDomainSetVcpu(id, enable, LIVE) device_adds exactly that vCPU, as
//     /machine/peripheral/vcpu<id>, and returns within ~100 ms.
//   - Disabling one, libvirt sends device_del and waits 5 s for QEMU's
//     DEVICE_DELETED naming the CPU. QEMU 10.0 under TCG sends it only for the
//     CPU's lapic child (path .../vcpu<id>/lapic, no device id), so libvirt
//     always fails with VIR_ERR_OPERATION_TIMEOUT "vcpu unplug request timed
//     out. Unplug result must be manually inspected in the domain", even when
//     the guest ejected the CPU 10 ms after the request. libvirt then keeps
//     reporting that vCPU enabled (live XML, vcpucount, domstats with a time
//     of 0) until libvirtd reconnects to QEMU, i.e. is restarted. Disabling
//     it again fails ("An error occurred, but the cause is unknown"),
//     enabling it again fails ("vcpu '3' is already in requested state").
//   - So the backend asks QEMU itself, through libvirt's monitor passthrough
//     (virDomainQemuMonitorCommand): query-hotpluggable-cpus says which slots
//     are plugged, query-cpus-fast gives thread ids, qom-get apic-id the APIC
//     ids. These are read-only queries; libvirt marks the domain tainted
//     "custom-monitor" (one line in the domain's log) and nothing else. A slot
//     QEMU shows empty but libvirt shows enabled is reported unplugged and is
//     never chosen by Plug: libvirt would refuse it. Under TCG that costs
//     nothing extra, since QEMU 10.0 gives each slot one vCPU thread per VM
//     life anyway (see qemu.go); under KVM libvirt should see DEVICE_DELETED
//     for the CPU and stay in step (not checked: no working KVM here).
//   - Without a guest OS (or before it has booted), QEMU refuses the
//     device_del: libvirt passes on "acpi: device unplug request for not
//     supported device type: qemu64-x86_64-cpu".
//   - Libvirt emits no DEVICE_REMOVED event for a vCPU it did not see go, and
//     when it does see it, virDomainSetVcpu has already returned success; so
//     Unplug subscribes to no events and polls QEMU's state instead.

// LibvirtOptions configures NewLibvirt. The zero value means defaults.
type LibvirtOptions struct {
	// Socket is libvirtd's unix socket. Default /run/libvirt/libvirt-sock.
	Socket string
	// URI is the hypervisor connection libvirtd opens. Default
	// qemu:///system.
	URI string
	// UnplugTimeout bounds how long Unplug waits for the guest to eject a
	// CPU, libvirt's own 5 s wait included. Default 30 s.
	UnplugTimeout time.Duration
	// LibvirtViewOnly reports libvirt's view of the vCPUs and never uses
	// the QEMU monitor passthrough, for sites that forbid it or drivers
	// without it. APIC ids are then derived from the topology and thread
	// ids are unknown. Under TCG libvirt never learns that an unplug
	// completed, so every Unplug ends in ErrUnplugTimeout.
	LibvirtViewOnly bool
	// Logger, nil to discard.
	Logger hclog.Logger
	// RunDir is libvirtd's run directory, where the QEMU driver keeps
	// <domain>.pid under qemu/ (default /run/libvirt); ProcRoot the host's
	// /proc (default /proc). Tests set them.
	RunDir, ProcRoot string
}

func (o LibvirtOptions) runDir() string {
	if o.RunDir == "" {
		return "/run/libvirt"
	}
	return o.RunDir
}

func (o LibvirtOptions) procRoot() string {
	if o.ProcRoot == "" {
		return "/proc"
	}
	return o.ProcRoot
}

// Defaults of LibvirtOptions.
const (
	DefaultLibvirtSocket = "/run/libvirt/libvirt-sock"
	DefaultLibvirtURI    = "qemu:///system"
)

// libvirtPoll is how often Unplug re-reads the state while the guest ejects.
const libvirtPoll = 100 * time.Millisecond

// Libvirt drives one libvirt domain's vCPUs over libvirtd's RPC socket. It
// connects on first use and again after the connection drops; while
// libvirtd or the domain is gone every call fails with ErrUnavailable.
//
// go-libvirt calls take no context, so each runs in a goroutine the calling
// method waits for; when the context ends first the connection is closed,
// which ends the call, and the next call reconnects.
type Libvirt struct {
	domain string
	opts   LibvirtOptions
	log    hclog.Logger

	// connSem guards conn and closed; a channel so waiting honours ctx.
	connSem chan struct{}
	conn    *libvirtConn
	closed  bool

	// opSem serialises Plug and Unplug: two concurrent Plugs would pick
	// the same free slot.
	opSem chan struct{}

	// staleMu guards stale: vCPUs already reported as enabled in libvirt
	// but gone from QEMU, so the warning is logged once per vCPU.
	staleMu sync.Mutex
	stale   map[int]bool
}

var _ Hypervisor = (*Libvirt)(nil)

// libvirtConn is one connection to libvirtd with the domain looked up.
type libvirtConn struct {
	l   *libvirt.Libvirt
	nc  net.Conn
	dom libvirt.Domain
	// kvm is query-kvm's answer once kvmKnown; set by VCPULifetime, which
	// runs on the VM's goroutine only.
	kvm, kvmKnown bool
}

// close drops the connection without the ConnectClose round trip, which
// would wait on a libvirtd that may be hung. libvirtd cleans up on EOF.
func (c *libvirtConn) close() {
	c.nc.Close()
	select {
	case <-c.l.Disconnected():
	case <-time.After(5 * time.Second):
	}
}

func (c *libvirtConn) alive() bool {
	select {
	case <-c.l.Disconnected():
		return false
	default:
		return true
	}
}

// NewLibvirt returns a backend for the libvirt domain named domain. It does
// not connect yet.
func NewLibvirt(domain string, opts LibvirtOptions) *Libvirt {
	if opts.Socket == "" {
		opts.Socket = DefaultLibvirtSocket
	}
	if opts.URI == "" {
		opts.URI = DefaultLibvirtURI
	}
	if opts.UnplugTimeout <= 0 {
		opts.UnplugTimeout = DefaultUnplugTimeout
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	return &Libvirt{
		domain:  domain,
		opts:    opts,
		log:     opts.Logger.With("libvirt_domain", domain),
		connSem: make(chan struct{}, 1),
		opSem:   make(chan struct{}, 1),
	}
}

// String names the domain and the connection, for errors and logs.
func (lv *Libvirt) String() string {
	return fmt.Sprintf("libvirt domain %q (%s via %s)", lv.domain, lv.opts.URI, lv.opts.Socket)
}

// Close drops the connection. Later calls fail.
func (lv *Libvirt) Close() error {
	lv.connSem <- struct{}{}
	defer func() { <-lv.connSem }()
	lv.closed = true
	if lv.conn != nil {
		lv.conn.close()
		lv.conn = nil
	}
	return nil
}

// connect returns a live connection, dialling if there is none or the last
// one died.
func (lv *Libvirt) connect(ctx context.Context) (*libvirtConn, error) {
	if err := acquire(ctx, lv.connSem); err != nil {
		return nil, fmt.Errorf("hypervisor: %s: waiting for the connection: %w", lv, err)
	}
	defer func() { <-lv.connSem }()
	if lv.closed {
		return nil, fmt.Errorf("hypervisor: %s: backend is closed", lv)
	}
	if lv.conn != nil && lv.conn.alive() {
		return lv.conn, nil
	}
	if lv.conn != nil {
		lv.log.Info("reconnecting to libvirtd")
		lv.conn.close()
		lv.conn = nil
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", lv.opts.Socket)
	if err != nil {
		return nil, fmt.Errorf("%w: cannot reach libvirtd at %s (is libvirtd running, and may this user use its socket?): %w",
			ErrUnavailable, lv.opts.Socket, err)
	}
	c := &libvirtConn{l: libvirt.NewWithDialer(dialers.NewAlreadyConnected(nc)), nc: nc}
	err = runAborting(ctx, c, func() error {
		if err := c.l.ConnectToURI(libvirt.ConnectURI(lv.opts.URI)); err != nil {
			return fmt.Errorf("opening %s: %w", lv.opts.URI, err)
		}
		dom, err := c.l.DomainLookupByName(lv.domain)
		if err != nil {
			return fmt.Errorf("looking up the domain: %w", err)
		}
		c.dom = dom
		return nil
	})
	if err != nil {
		nc.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: connecting to %s: %w", ErrUnavailable, lv, ctx.Err())
		}
		return nil, fmt.Errorf("%w: %s: %w (does `virsh -c %s dominfo %s` work?)", ErrUnavailable, lv, err, lv.opts.URI, lv.domain)
	}
	lv.log.Debug("connected to libvirtd")
	lv.conn = c
	return c, nil
}

// runAborting runs f, which uses c, and returns its error; if ctx ends
// first it closes c's socket, which makes f's pending RPC fail, waits for f
// and returns ctx's error.
func runAborting(ctx context.Context, c *libvirtConn, f func() error) error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		c.nc.Close()
		<-done
		return ctx.Err()
	}
}

// do runs one libvirt operation under ctx. A lost connection, a domain that
// is gone or not running become ErrUnavailable; other libvirt errors are
// returned wrapped, as *libvirt.Error in the chain.
func (lv *Libvirt) do(ctx context.Context, what string, f func(c *libvirtConn) error) error {
	c, err := lv.connect(ctx)
	if err != nil {
		return err
	}
	err = runAborting(ctx, c, func() error { return f(c) })
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		lv.dropConn(c)
		return fmt.Errorf("hypervisor: %s: %s: %w (the connection was closed; the next call reconnects)", lv, what, ctx.Err())
	}
	var le libvirt.Error
	switch {
	case errors.Is(err, libvirt.ErrInterrupted) || !c.alive():
		lv.dropConn(c)
		return fmt.Errorf("%w: %s: libvirtd went away during %s (the next call reconnects): %v", ErrUnavailable, lv, what, err)
	case errors.As(err, &le) && le.Code == uint32(libvirt.ErrNoDomain):
		lv.dropConn(c) // look the domain up again next time
		return fmt.Errorf("%w: %s: %s: the domain no longer exists (was it undefined or, if transient, shut down?): %v", ErrUnavailable, lv, what, err)
	case errors.As(err, &le) && le.Code == uint32(libvirt.ErrOperationInvalid) && strings.Contains(le.Message, "not running"):
		return fmt.Errorf("%w: %s: %s: the domain is not running (start it with virsh start %s): %v", ErrUnavailable, lv, what, lv.domain, err)
	}
	return fmt.Errorf("hypervisor: %s: %s: %w", lv, what, err)
}

func (lv *Libvirt) dropConn(c *libvirtConn) {
	lv.connSem <- struct{}{}
	defer func() { <-lv.connSem }()
	if lv.conn == c {
		lv.conn = nil
	}
	c.close()
}

// libvirtDomainXML is what the backend reads from the live domain XML.
type libvirtDomainXML struct {
	Type string `xml:"type,attr"`
	VCPU struct {
		Max     int  `xml:",chardata"`
		Current *int `xml:"current,attr"`
	} `xml:"vcpu"`
	VCPUs []struct {
		ID           int    `xml:"id,attr"`
		Enabled      string `xml:"enabled,attr"`
		Hotpluggable string `xml:"hotpluggable,attr"`
	} `xml:"vcpus>vcpu"`
	Topology *struct {
		Sockets  int `xml:"sockets,attr"`
		Dies     int `xml:"dies,attr"`
		Clusters int `xml:"clusters,attr"`
		Cores    int `xml:"cores,attr"`
		Threads  int `xml:"threads,attr"`
	} `xml:"cpu>topology"`
}

// libvirtVCPU is one vCPU as libvirt describes it.
type libvirtVCPU struct {
	id           int
	enabled      bool
	hotpluggable bool
	// topo is the vCPU's place in topoKeys order.
	topo []int64
}

// parseLibvirtVCPUs reads the vCPUs out of a live domain XML. It is pure so
// tests and the fuzzer can feed it directly.
func parseLibvirtVCPUs(doc []byte) ([]libvirtVCPU, error) {
	var d libvirtDomainXML
	if err := xml.Unmarshal(doc, &d); err != nil {
		return nil, fmt.Errorf("parsing the domain XML: %w", err)
	}
	const maxVCPUs = 4096 // far above any x86 machine libvirt supports
	if d.VCPU.Max < 1 || d.VCPU.Max > maxVCPUs {
		return nil, fmt.Errorf("domain XML: <vcpu> is %d, want 1..%d", d.VCPU.Max, maxVCPUs)
	}
	current := d.VCPU.Max
	if d.VCPU.Current != nil {
		current = *d.VCPU.Current
	}
	if current < 1 || current > d.VCPU.Max {
		return nil, fmt.Errorf("domain XML: <vcpu current='%d'> is outside 1..%d", current, d.VCPU.Max)
	}
	// Default topology (libvirt's -smp when <cpu><topology> is absent):
	// one socket per vCPU.
	sockets, dies, clusters, cores, threads := d.VCPU.Max, 1, 1, 1, 1
	if t := d.Topology; t != nil {
		sockets, dies, clusters, cores, threads = t.Sockets, max(t.Dies, 1), max(t.Clusters, 1), t.Cores, t.Threads
		if sockets < 1 || cores < 1 || threads < 1 || sockets*dies*clusters*cores*threads != d.VCPU.Max {
			return nil, fmt.Errorf("domain XML: topology %d sockets × %d dies × %d clusters × %d cores × %d threads does not give the %d vCPUs of <vcpu>",
				sockets, dies, clusters, cores, threads, d.VCPU.Max)
		}
	}
	out := make([]libvirtVCPU, d.VCPU.Max)
	for i := range out {
		// libvirt's vCPU id is QEMU's cpu-index: the topology, linearised.
		n := i
		thread := n % threads
		n /= threads
		core := n % cores
		n /= cores
		cluster := n % clusters
		n /= clusters
		die := n % dies
		socket := n / dies
		out[i] = libvirtVCPU{id: i, enabled: i < current, hotpluggable: i >= current,
			topo: []int64{int64(socket), int64(die), int64(cluster), 0, int64(core), int64(thread)}}
	}
	if len(d.VCPUs) > 0 {
		if len(d.VCPUs) != d.VCPU.Max {
			return nil, fmt.Errorf("domain XML: <vcpus> lists %d vCPUs, <vcpu> says %d", len(d.VCPUs), d.VCPU.Max)
		}
		seen := make([]bool, len(out))
		enabled := 0
		for _, v := range d.VCPUs {
			if v.ID < 0 || v.ID >= len(out) || seen[v.ID] {
				return nil, fmt.Errorf("domain XML: <vcpus> has vcpu id %d twice or outside 0..%d", v.ID, len(out)-1)
			}
			seen[v.ID] = true
			out[v.ID].enabled = v.Enabled == "yes"
			out[v.ID].hotpluggable = v.Hotpluggable == "yes"
			if out[v.ID].enabled {
				enabled++
			}
		}
		if enabled != current {
			return nil, fmt.Errorf("domain XML: <vcpus> enables %d vCPUs, <vcpu current> says %d", enabled, current)
		}
	}
	return out, nil
}

// A libvirt vCPU's topology is in topoKeys order (qemumodel.go). libvirt
// 9.0's <topology> has no modules, so module-id is always 0; x86 QEMU does
// not list clusters.

// x86APICID computes the APIC id QEMU gives a CPU on x86 from its topology
// ids (topoKeys order) and the topology's widths (QEMU
// include/hw/i386/topology.h: each level takes ceil(log2(count)) bits, the
// thread lowest; x86 has no cluster level).
func x86APICID(topo []int64, dies, cores, threads int) int {
	bits := func(n int) uint {
		b := uint(0)
		for (1 << b) < n {
			b++
		}
		return b
	}
	apic := topo[topoSocket]
	apic = apic<<bits(dies) | topo[topoDie]
	apic = apic<<bits(cores) | topo[topoCore]
	apic = apic<<bits(threads) | topo[topoThread]
	return int(apic)
}

// lvSlot is a Slot with what the backend keeps about it.
type lvSlot struct {
	Slot
	// libvirtEnabled is libvirt's view, which lags QEMU's after an unplug
	// under TCG (see the notes above).
	libvirtEnabled bool
	hotpluggable   bool
}

// lvMonitor runs QMP commands through libvirt's monitor passthrough
// (virDomainQemuMonitorCommand) on one connection. It runs inside lv.do,
// which bounds it by the context (go-libvirt calls take none).
type lvMonitor struct{ c *libvirtConn }

var _ qmp.Executor = lvMonitor{}

func (m lvMonitor) Execute(_ context.Context, cmd string, args, result any) error {
	req, err := qmp.EncodeCommand(cmd, args)
	if err != nil {
		return err
	}
	out, err := m.c.l.QEMUDomainMonitorCommand(m.c.dom, string(req), 0)
	if err != nil {
		return fmt.Errorf("QEMU monitor passthrough %s: %w (set libvirt_view_only to do without it)", cmd, err)
	}
	if err := qmp.DecodeReply(cmd, []byte(out), result); err != nil {
		return fmt.Errorf("QEMU monitor passthrough: %w", err)
	}
	return nil
}

// slots reads the domain's vCPUs: libvirt's live XML for the slots and
// what libvirt believes, QEMU's own state (unless LibvirtViewOnly) for what
// is plugged, its thread and APIC id.
func (lv *Libvirt) slots(ctx context.Context) ([]lvSlot, error) {
	var out []lvSlot
	err := lv.do(ctx, "reading vCPU state", func(c *libvirtConn) error {
		doc, err := c.l.DomainGetXMLDesc(c.dom, 0)
		if err != nil {
			return fmt.Errorf("DomainGetXMLDesc: %w", err)
		}
		vcpus, err := parseLibvirtVCPUs([]byte(doc))
		if err != nil {
			return err
		}
		var d libvirtDomainXML
		_ = xml.Unmarshal([]byte(doc), &d) // parsed fine above
		dies, cores, threads := 1, 1, 1
		if t := d.Topology; t != nil {
			dies, cores, threads = max(t.Dies, 1), t.Cores, t.Threads
		}
		// QEMU's own view of the slots, by place in the topology.
		byTopo := map[string]qslot{}
		if !lv.opts.LibvirtViewOnly {
			qs, err := readState(ctx, lvMonitor{c}, lv.log)
			if err != nil {
				return err
			}
			for _, q := range qs {
				if q.Plugged {
					byTopo[topoKey(q.topo)] = q
				}
			}
		}
		out = make([]lvSlot, len(vcpus))
		for i, v := range vcpus {
			s := lvSlot{Slot: Slot{Index: v.id, APICID: -1}, libvirtEnabled: v.enabled, hotpluggable: v.hotpluggable}
			if lv.opts.LibvirtViewOnly {
				s.Plugged = v.enabled
				if s.Plugged {
					s.APICID = x86APICID(v.topo, dies, cores, threads)
				}
			} else if q, ok := byTopo[topoKey(v.topo)]; ok && q.APICID >= 0 {
				// (No APIC id: unplugged between the queries.)
				s.Plugged, s.ThreadID, s.APICID = true, q.ThreadID, q.APICID
				// A CPU libvirt plugged is /machine/peripheral/vcpu<id>;
				// anything else there means the topology mapping is wrong.
				if id, ok := strings.CutPrefix(q.Ref, "/machine/peripheral/vcpu"); ok && id != strconv.Itoa(v.id) {
					return fmt.Errorf("QEMU has %s in the slot of libvirt vCPU %d: unexpected topology mapping", q.Ref, v.id)
				}
			}
			if s.Plugged {
				s.Ref = strconv.Itoa(v.id)
				s.Removable = v.hotpluggable
			}
			lv.noteStale(v.id, !lv.opts.LibvirtViewOnly && s.libvirtEnabled && !s.Plugged)
			out[i] = s
		}
		return nil
	})
	return out, err
}

// noteStale logs, once, that libvirt counts vCPU id enabled while QEMU has
// removed it.
func (lv *Libvirt) noteStale(id int, stale bool) {
	lv.staleMu.Lock()
	defer lv.staleMu.Unlock()
	if stale == lv.stale[id] {
		return
	}
	if lv.stale == nil {
		lv.stale = map[int]bool{}
	}
	lv.stale[id] = stale
	if stale {
		lv.log.Warn("libvirt still counts a vCPU enabled that QEMU has removed (libvirt missed the unplug completing); the slot stays unused until libvirtd is restarted", "vcpu", id)
	}
}

// State reads the domain's vCPU slots. Index is libvirt's vCPU id (the
// argument of virsh setvcpu), Ref the same id while the slot is plugged.
func (lv *Libvirt) State(ctx context.Context) (State, error) {
	slots, err := lv.slots(ctx)
	if err != nil {
		return State{}, err
	}
	return lvState(slots), nil
}

func lvState(slots []lvSlot) State {
	st := State{Slots: make([]Slot, len(slots))}
	for i, s := range slots {
		st.Slots[i] = s.Slot
	}
	return st
}

// setVCPU enables or disables one vCPU live.
func (lv *Libvirt) setVCPU(ctx context.Context, id int, enable bool) error {
	state, verb := int32(0), "disabling"
	if enable {
		state, verb = 1, "enabling"
	}
	return lv.do(ctx, fmt.Sprintf("%s vCPU %d", verb, id), func(c *libvirtConn) error {
		return c.l.DomainSetVcpu(c.dom, strconv.Itoa(id), state, libvirt.DomainAffectLive)
	})
}

// Plug enables the lowest vCPU that libvirt may hot-plug and QEMU has free,
// with virDomainSetVcpu(LIVE), and returns its slot as QEMU then reports it.
func (lv *Libvirt) Plug(ctx context.Context) (Slot, State, error) {
	if err := acquire(ctx, lv.opSem); err != nil {
		return Slot{}, State{}, fmt.Errorf("hypervisor: %s: plug: %w", lv, err)
	}
	defer func() { <-lv.opSem }()
	slots, err := lv.slots(ctx)
	if err != nil {
		return Slot{}, State{}, err
	}
	free, stale := -1, 0
	for _, s := range slots {
		switch {
		case s.Plugged || !s.hotpluggable:
		case s.libvirtEnabled:
			stale++
		case free < 0:
			free = s.Index
		}
	}
	if free < 0 {
		msg := fmt.Sprintf("all %d vCPUs of %s are plugged (raise <vcpu> to allow more)", len(slots), lv)
		if stale > 0 {
			msg = fmt.Sprintf("%s: %d more are free in QEMU but libvirt still counts them enabled after unplugs it did not see complete; restart libvirtd to resynchronise it", msg, stale)
		}
		return Slot{}, State{}, fmt.Errorf("%w: %s", ErrNoFreeSlot, msg)
	}
	lv.log.Debug("plugging vCPU", "vcpu", free)
	if err := lv.setVCPU(ctx, free, true); err != nil {
		return Slot{}, State{}, fmt.Errorf("%w (re-read State: another client may have plugged it)", err)
	}
	after, err := lv.slots(ctx)
	if err != nil {
		return Slot{}, State{}, fmt.Errorf("hypervisor: %s: vCPU %d was plugged but reading it back failed: %w", lv, free, err)
	}
	for _, s := range after {
		if s.Index == free && s.Plugged {
			lv.log.Info("plugged vCPU", "vcpu", free, "apic_id", s.APICID)
			return s.Slot, lvState(after), nil
		}
	}
	return Slot{}, State{}, fmt.Errorf("hypervisor: %s: libvirt enabled vCPU %d but QEMU does not list it plugged", lv, free)
}

// Unplug disables the vCPU in slot with virDomainSetVcpu(LIVE) and waits, up
// to UnplugTimeout, until QEMU reports the slot empty. libvirt's own answer
// does not decide: it times out under TCG even when the guest ejected the
// CPU (see the notes above).
func (lv *Libvirt) Unplug(ctx context.Context, slot Slot) (State, error) {
	if err := acquire(ctx, lv.opSem); err != nil {
		return State{}, fmt.Errorf("hypervisor: %s: unplug vCPU %d: %w", lv, slot.Index, err)
	}
	defer func() { <-lv.opSem }()
	if slot.Ref == "" {
		return State{}, fmt.Errorf("%w: slot %d of %s holds no CPU", ErrNotUnpluggable, slot.Index, lv)
	}
	start := time.Now()
	slots, err := lv.slots(ctx)
	if err != nil {
		return State{}, err
	}
	if slot.Index < 0 || slot.Index >= len(slots) {
		return State{}, fmt.Errorf("%w: %s has no vCPU %d (it has %d)", ErrNotUnpluggable, lv, slot.Index, len(slots))
	}
	cur := slots[slot.Index]
	if !cur.Plugged {
		lv.log.Debug("vCPU already gone", "vcpu", slot.Index)
		return lvState(slots), nil
	}
	if !cur.Removable {
		return State{}, fmt.Errorf("%w: vCPU %d of %s is not hot-pluggable in libvirt (a boot vCPU); only vCPUs above <vcpu current> are removed",
			ErrNotUnpluggable, slot.Index, lv)
	}
	if !cur.libvirtEnabled {
		return State{}, fmt.Errorf("%w: QEMU has vCPU %d of %s plugged but libvirt counts it disabled, so libvirt cannot remove it; restart libvirtd to resynchronise it",
			ErrNotUnpluggable, slot.Index, lv)
	}

	lv.log.Debug("unplugging vCPU", "vcpu", slot.Index)
	err = lv.setVCPU(ctx, slot.Index, false)
	var le libvirt.Error
	switch {
	case err == nil:
	case errors.As(err, &le) && le.Code == uint32(libvirt.ErrOperationTimeout):
		// libvirt gave up waiting; the guest may still finish or have
		// finished already. QEMU says which.
		lv.log.Debug("libvirt timed out waiting for the unplug; polling QEMU", "vcpu", slot.Index, "error", le.Message)
	case strings.Contains(err.Error(), "acpi: device unplug request for not supported device type"):
		return State{}, fmt.Errorf("%w: QEMU refused to remove vCPU %d of %s: the guest has not enabled ACPI CPU hot-unplug (still booting, or no ACPI); retry once the guest OS is up: %v",
			ErrNotUnpluggable, slot.Index, lv, err)
	default:
		return State{}, err
	}
	return lv.waitGone(ctx, slot.Index, start)
}

// waitGone polls until the slot is empty (QEMU's view, or libvirt's with
// LibvirtViewOnly) or UnplugTimeout has passed since start.
func (lv *Libvirt) waitGone(ctx context.Context, id int, start time.Time) (State, error) {
	deadline := start.Add(lv.opts.UnplugTimeout)
	for {
		slots, err := lv.slots(ctx)
		if err != nil {
			return State{}, fmt.Errorf("hypervisor: %s: vCPU %d was being unplugged but reading state failed (re-read State): %w", lv, id, err)
		}
		if !slots[id].Plugged {
			lv.log.Info("unplugged vCPU", "vcpu", id, "libvirt_in_step", !slots[id].libvirtEnabled)
			return lvState(slots), nil
		}
		if time.Now().After(deadline) {
			hint := "the CPU goes away if the guest finishes later, so re-read State"
			if lv.opts.LibvirtViewOnly {
				hint += "; under TCG libvirt never notices, so libvirt_view_only cannot confirm unplugs there"
			}
			return State{}, fmt.Errorf("%w: the guest of %s did not eject vCPU %d within %s; %s",
				ErrUnplugTimeout, lv, id, lv.opts.UnplugTimeout, hint)
		}
		select {
		case <-time.After(libvirtPoll):
		case <-ctx.Done():
			return State{}, fmt.Errorf("hypervisor: %s: waiting for the guest to eject vCPU %d: %w (the unplug may still complete; re-read State)",
				lv, id, ctx.Err())
		}
	}
}

// VCPUStat is libvirt's accounting of one vCPU (virConnectGetAllDomainStats
// with VIR_DOMAIN_STATS_VCPU).
type VCPUStat struct {
	// Index is the libvirt vCPU id, as Slot.Index.
	Index int
	// Running is vcpu.<n>.state == VIR_VCPU_RUNNING.
	Running bool
	// Time is the CPU time the vCPU's host thread used.
	Time time.Duration
	// Wait is time spent waiting for I/O, Delay time spent runnable but
	// waiting for a host CPU (schedstat), where the host reports them.
	Wait, Delay time.Duration
}

// VCPUStats returns libvirt's per-vCPU statistics, for measuring a guest
// without an agent. It lists the vCPUs libvirt counts online: after an
// unplug libvirt did not see complete (TCG) that includes a vCPU QEMU no
// longer has, with a Time that no longer grows; State tells them apart.
func (lv *Libvirt) VCPUStats(ctx context.Context) ([]VCPUStat, error) {
	var recs []libvirt.DomainStatsRecord
	err := lv.do(ctx, "reading vCPU statistics", func(c *libvirtConn) error {
		var err error
		recs, err = c.l.ConnectGetAllDomainStats([]libvirt.Domain{c.dom}, uint32(libvirt.DomainStatsVCPU), 0)
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(recs) != 1 {
		return nil, fmt.Errorf("hypervisor: %s: libvirt returned statistics for %d domains, want 1", lv, len(recs))
	}
	return parseVCPUStats(recs[0].Params)
}

// parseVCPUStats turns vcpu.<n>.<field> typed parameters into VCPUStats.
func parseVCPUStats(params []libvirt.TypedParam) ([]VCPUStat, error) {
	byID := map[int]*VCPUStat{}
	for _, p := range params {
		rest, ok := strings.CutPrefix(p.Field, "vcpu.")
		if !ok {
			continue
		}
		idStr, field, ok := strings.Cut(rest, ".")
		if !ok {
			continue // vcpu.current, vcpu.maximum
		}
		id, err := strconv.Atoi(idStr)
		if err != nil || id < 0 || id > 4096 {
			return nil, fmt.Errorf("vCPU statistics: bad field %q", p.Field)
		}
		s := byID[id]
		if s == nil {
			s = &VCPUStat{Index: id}
			byID[id] = s
		}
		var n uint64
		switch v := p.Value.I.(type) {
		case uint64:
			n = v
		case int64:
			n = uint64(max(v, 0))
		case int32:
			n = uint64(max(v, 0))
		case uint32:
			n = uint64(v)
		default:
			continue
		}
		switch field {
		case "state":
			s.Running = n == uint64(libvirt.VCPURunning)
		case "time":
			s.Time = time.Duration(n)
		case "wait":
			s.Wait = time.Duration(n)
		case "delay":
			s.Delay = time.Duration(n)
		}
	}
	out := make([]VCPUStat, 0, len(byID))
	for _, s := range byID {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Index < out[j].Index })
	return out, nil
}
