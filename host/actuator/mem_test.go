package actuator

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/host/actuator/fakeguest"
	"github.com/hotplugheaven/hotplug/host/eventlog"
	"github.com/hotplugheaven/hotplug/host/hypervisor"
	"github.com/hotplugheaven/hotplug/host/memory"
	"github.com/hotplugheaven/hotplug/proto"
)

const mib = uint64(1) << 20

// ramHyp is memHyp with a virtio-mem device that behaves as QEMU's does
// under a guest: a request is reached at the next read, except that the
// guest cannot give back memory below pinned (what it holds).
type ramHyp struct {
	*memHyp
	dev    hypervisor.Memory
	pinned uint64 // the device total a shrink cannot go below
	frozen bool   // the guest does nothing with requests
	reqs   []uint64
}

var _ hypervisor.MemoryResizer = (*ramHyp)(nil)

func newRAMHyp() *ramHyp {
	return &ramHyp{memHyp: newMemHyp(2, 1), dev: hypervisor.Memory{Device: hypervisor.MemVirtioMem, ID: "vm0",
		Base: 512 * mib, Total: 512 * mib, Requested: 512 * mib, Max: 4096 * mib, Min: 512 * mib, Block: 2 * mib}}
}

func (h *ramHyp) Memory(context.Context) (hypervisor.Memory, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.frozen {
		h.dev.Total = max(h.dev.Requested, min(h.pinned, h.dev.Total))
	}
	return h.dev, nil
}

func (h *ramHyp) RequestMemory(_ context.Context, total uint64) (hypervisor.Memory, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	total = min(max(total, h.dev.Min), h.dev.Max)
	h.dev.Requested = total
	h.reqs = append(h.reqs, total)
	return h.dev, nil
}

func (h *ramHyp) ResizeMemory(ctx context.Context, total uint64, _ time.Duration) (hypervisor.Memory, error) {
	return h.RequestMemory(ctx, total)
}

func pressurePolicy() memory.Policy {
	p := memory.DefaultPolicy()
	p.Mode, p.Min, p.Max = memory.ModePressure, memory.Size(512*mib), memory.Size(4096*mib)
	p.ResizeTimeout = time.Second
	return p
}

func newRAMRig(t *testing.T, ram *ramHyp, p memory.Policy, setup func(*loopRig)) *loopRig {
	t.Helper()
	return newLoopRigWith(t, 2, 1, func(r *loopRig, c *VMConfig) {
		c.Hypervisor, c.Memory = ram, p
		if setup != nil {
			setup(r)
		}
	})
}

// memReport sends a report of a guest with total and available bytes and
// memory stats m.
func (r *loopRig) memReport(total, avail uint64, m *proto.MemoryStats) {
	seq++
	now := time.Now()
	on := proto.NewCPUSet(0)
	r.handle(evReport{s: r.sess, at: now, r: &proto.Report{Seq: seq, WallUnixNanos: now.UnixNano(),
		IntervalNanos: int64(time.Second), Online: on, Present: on, MemTotalBytes: total, MemAvailableBytes: avail, Memory: m}})
}

// guestTotal is what the fake guest's MemTotal is for a device total: the
// guest kernel keeps 100 MiB of boot memory for itself.
func guestTotal(dev uint64) uint64 { return dev - 100*mib }

func TestMemoryGrowsOnStallAndIsConfirmedByTheGuest(t *testing.T) {
	ram := newRAMHyp()
	r := newRAMRig(t, ram, pressurePolicy(), nil)
	r.handle(evSession{s: r.sess})
	r.memReport(guestTotal(512*mib), 300*mib, &proto.MemoryStats{HavePSI: true})
	r.phase(idle)
	// 5 % of the second stalled on memory: over the 1 % target.
	r.memReport(guestTotal(512*mib), 300*mib, &proto.MemoryStats{HavePSI: true, PSISomeMicros: 50_000, PSIFullMicros: 10_000})
	r.phase(resizing)
	if len(ram.reqs) != 1 || ram.reqs[0] != 640*mib { // +25 %, in 128 MiB blocks
		t.Fatalf("requests %v MiB", ram.reqs)
	}
	// Controls are served while resizing.
	pause := make(chan error, 1)
	r.l.control(context.Background(), control{kind: "pause", reply: pause})
	if err := <-pause; err != nil {
		t.Fatal(err)
	}
	r.l.expire(context.Background()) // the poll: the device reached it
	r.phase(confirming)
	r.memReport(guestTotal(512*mib), 300*mib, nil) // the guest has not onlined it yet
	r.phase(confirming)
	r.memReport(guestTotal(640*mib), 420*mib, nil)
	r.phase(idle)
	ev := r.lastEvent()
	if ev.Kind != eventlog.KindMemoryGrow || ev.From != 512 || ev.To != 640 || ev.Result != 640 || ev.Outcome != eventlog.OutcomeOK ||
		ev.Rule != memory.RuleStall || stepNames(ev) != "resize,confirm" && stepNames(ev) != "resize" {
		t.Fatalf("event %+v", ev)
	}
	var sig memSignals
	if err := json.Unmarshal(ev.Signals, &sig); err != nil || sig.StallSomeMS != 50 || sig.Device != hypervisor.MemVirtioMem {
		t.Fatalf("signals %s: %v", ev.Signals, err)
	}
	st := r.l.vm.Status().Memory
	if st.Total != 640*mib || st.Device != hypervisor.MemVirtioMem || st.Degraded != "" {
		t.Fatalf("status %+v", st)
	}
}

func TestMemoryConfirmTimesOutWhenTheGuestDoesNotOnline(t *testing.T) {
	ram := newRAMHyp()
	r := newRAMRig(t, ram, pressurePolicy(), nil)
	r.handle(evSession{s: r.sess})
	r.memReport(guestTotal(512*mib), 10*mib, nil) // under the headroom
	r.phase(resizing)
	r.l.expire(context.Background())
	r.phase(confirming)
	r.l.expire(context.Background()) // no report moved MemTotal
	r.phase(idle)
	ev := r.lastEvent()
	if ev.Outcome != eventlog.OutcomePartial || !strings.Contains(ev.Steps[len(ev.Steps)-1].Error, "memhp_default_state") {
		t.Fatalf("event %+v", ev)
	}
}

// A shrink the guest completes only partly: the request is set to what
// was reached, the event is partial and says so, and the operator's
// set-memory is told.
func TestMemoryPartialShrinkSetsTheRequestToWhatWasReached(t *testing.T) {
	ram := newRAMHyp()
	ram.dev.Total, ram.dev.Requested, ram.pinned = 2048*mib, 2048*mib, 1280*mib
	r := newRAMRig(t, ram, pressurePolicy(), nil)
	r.handle(evSession{s: r.sess})
	reply := make(chan error, 1)
	r.l.control(context.Background(), control{kind: "memory", memory: 768 * mib, force: true, reply: reply})
	r.phase(resizing)
	r.l.expire(context.Background())
	r.phase(resizing) // 1280 of 768: still trying
	r.l.act.mem.deadline = time.Now()
	r.l.expire(context.Background())
	r.phase(idle)
	err := <-reply
	if err == nil || !strings.Contains(err.Error(), "reached 1280 MiB of 768 MiB") {
		t.Fatalf("set-memory: %v", err)
	}
	if ram.dev.Requested != 1280*mib || ram.reqs[len(ram.reqs)-1] != 1280*mib {
		t.Fatalf("request left at %d MiB (requests %v)", ram.dev.Requested>>20, ram.reqs)
	}
	ev := r.lastEvent()
	if ev.Kind != eventlog.KindMemoryShrink || ev.Outcome != eventlog.OutcomePartial || ev.Result != 1280 || ev.Rule != "operator" ||
		!strings.Contains(ev.Steps[0].Error, "the request is now 1280 MiB") {
		t.Fatalf("event %+v", ev)
	}
	if d := r.l.vm.Status().Memory.Degraded; !strings.Contains(d, "1280 MiB") {
		t.Fatalf("degraded %q", d)
	}
}

// An operator's shrink stops at the guest's safety floor unless forced,
// and needs a report to know it.
func TestSetMemoryHeldToTheSafetyFloor(t *testing.T) {
	ram := newRAMHyp()
	ram.dev.Total, ram.dev.Requested = 2048*mib, 2048*mib
	r := newRAMRig(t, ram, pressurePolicy(), nil)
	r.handle(evSession{s: r.sess})
	reply := make(chan error, 1)
	r.l.control(context.Background(), control{kind: "memory", memory: 512 * mib, reply: reply})
	if err := <-reply; !errors.Is(err, ErrOutOfRange) || !strings.Contains(err.Error(), "no memory report") {
		t.Fatalf("shrink without a report: %v", err)
	}
	// 1948 MiB in the guest, 1000 available: 1048 in use, + 2×10 % of
	// 1948 = 1438 MiB, rounded up to 128 MiB blocks: 1536.
	r.memReport(guestTotal(2048*mib), 1000*mib, nil)
	r.l.control(context.Background(), control{kind: "memory", memory: 512 * mib, reply: reply})
	r.phase(resizing)
	r.l.expire(context.Background())
	r.phase(confirming)
	r.memReport(guestTotal(1536*mib), 488*mib, nil)
	if err := <-reply; err != nil {
		t.Fatal(err)
	}
	if ev := r.lastEvent(); ev.To != 1536 || ev.Result != 1536 || !strings.Contains(ev.Reason, "safety floor of 1536 MiB") {
		t.Fatalf("event %+v", ev)
	}
	// At the floor: nothing to shrink, said so. (1536 − 300 in use,
	// + 287 of headroom: 1523, rounded up to 1536.)
	r.memReport(guestTotal(1536*mib), 300*mib, nil)
	r.phase(idle)
	r.l.control(context.Background(), control{kind: "memory", memory: 1024 * mib, reply: reply})
	if err := <-reply; !errors.Is(err, ErrOutOfRange) || !strings.Contains(err.Error(), "nothing to shrink") {
		t.Fatalf("shrink at the floor: %v", err)
	}
	// Forced: below it.
	r.l.control(context.Background(), control{kind: "memory", memory: 1024 * mib, force: true, reply: reply})
	r.phase(resizing)
}

func TestSetMemoryOutsideTheDevice(t *testing.T) {
	r := newRAMRig(t, newRAMHyp(), pressurePolicy(), nil)
	reply := make(chan error, 1)
	r.l.control(context.Background(), control{kind: "memory", memory: 8192 * mib, reply: reply})
	if err := <-reply; !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("set-memory past the device: %v", err)
	}
	// A backend without a memory device.
	plain := newLoopRig(t, 2, 1)
	plain.l.control(context.Background(), control{kind: "memory", memory: 1024 * mib, reply: reply})
	if err := <-reply; !errors.Is(err, ErrUnsupported) {
		t.Fatalf("set-memory without a device: %v", err)
	}
}

// However loud the guest's pressure, the VM stays within its policy's
// max and the host's memory budget.
func TestMemoryGrowthStaysInsideMaxAndBudget(t *testing.T) {
	ram := newRAMHyp()
	r := newRAMRig(t, ram, pressurePolicy(), func(r *loopRig) { r.memBudget.SetLimit(int(1536 * mib)) })
	r.l.vm.env.memBudget.Set("other-vm", int(256*mib))
	r.handle(evSession{s: r.sess})
	for i := 0; i < 40; i++ {
		r.memReport(guestTotal(ram.dev.Total), 0, &proto.MemoryStats{HavePSI: true, PSISomeMicros: 1_000_000, OOMKills: 3})
		for r.l.phase() != idle {
			if r.l.phase() == confirming {
				r.memReport(guestTotal(ram.dev.Total), 0, nil)
			} else {
				r.l.expire(context.Background())
			}
		}
		r.l.mem.backoff = backoff{}
	}
	if ram.dev.Total != 1280*mib { // 1536 − the other VM's 256
		t.Fatalf("grew to %d MiB, budget leaves 1280", ram.dev.Total>>20)
	}
	for _, q := range ram.reqs {
		if q > 1280*mib {
			t.Fatalf("asked for %d MiB", q>>20)
		}
	}
}

// An actuator killed during a resize: the next one finds the request the
// guest has not reached, sets it to what the guest has, and records what
// it found against the unfinished action.
func TestMemoryRecoverAtStart(t *testing.T) {
	ram := newRAMHyp()
	ram.dev.Total, ram.dev.Requested, ram.frozen = 1024*mib, 2048*mib, true
	unfinished := eventlog.Event{Seq: 7, Kind: eventlog.KindMemoryGrow, From: 1024, To: 2048, Outcome: eventlog.OutcomeStarted}
	r := newRAMRig(t, ram, pressurePolicy(), func(r *loopRig) { r.unfinished = []eventlog.Event{unfinished} })
	if ram.dev.Requested != 1024*mib {
		t.Fatalf("request left at %d MiB", ram.dev.Requested>>20)
	}
	ev := r.lastEvent()
	if ev.Kind != eventlog.KindMemoryRecover || ev.Action != 7 || ev.From != 1024 || ev.To != 1024 ||
		!strings.Contains(ev.Reason, "memory_grow 1024→2048 MiB (action 7)") || !strings.Contains(ev.Reason, "request 2048 MiB; the request is now 1024 MiB") {
		t.Fatalf("event %+v", ev)
	}
	if len(r.l.unfinished) != 0 {
		t.Fatalf("a memory action handed to the CPU's reconcile: %+v", r.l.unfinished)
	}
}

// Memory sizing off: no request is ever made, whatever the guest says.
func TestMemoryOffTouchesNothing(t *testing.T) {
	ram := newRAMHyp()
	r := newRAMRig(t, ram, memory.DefaultPolicy(), nil)
	r.handle(evSession{s: r.sess})
	for i := 0; i < 5; i++ {
		r.memReport(guestTotal(512*mib), 0, &proto.MemoryStats{HavePSI: true, PSISomeMicros: 900_000, OOMKills: 1})
	}
	if len(ram.reqs) != 0 || r.l.phase() != idle {
		t.Fatalf("requests %v, phase %s", ram.reqs, r.l.phase())
	}
}

// While the host is short of memory no VM grows, except to answer an OOM
// kill in its guest.
func TestMemoryHostShortHoldsGrows(t *testing.T) {
	ram := newRAMHyp()
	var short atomic.Bool
	short.Store(true)
	r := newRAMRig(t, ram, pressurePolicy(), nil)
	r.l.vm.env.hostShort = &short
	r.handle(evSession{s: r.sess})
	r.memReport(guestTotal(512*mib), 10*mib, nil) // under the headroom
	if r.l.phase() != idle || len(ram.reqs) != 0 {
		t.Fatalf("grew while the host is short: phase %s, requests %v", r.l.phase(), ram.reqs)
	}
	if d := r.l.vm.Status().Memory.LastDecision; d.Rule != RuleHostPressure || !strings.Contains(d.Reason, "headroom") {
		t.Fatalf("decision %+v", d)
	}
	r.memReport(guestTotal(512*mib), 10*mib, &proto.MemoryStats{OOMKills: 1})
	r.phase(resizing)
	short.Store(false)
}

// The host-pressure override's cut: rule host_pressure, never below the
// policy's floor.
func TestMemorySqueezeControl(t *testing.T) {
	ram := newRAMHyp()
	ram.dev.Total, ram.dev.Requested = 2048*mib, 2048*mib
	r := newRAMRig(t, ram, pressurePolicy(), nil)
	r.handle(evSession{s: r.sess})
	r.memReport(guestTotal(2048*mib), 1500*mib, nil) // 448 MiB in use: floor 640
	reply := make(chan error, 1)
	r.l.control(context.Background(), control{kind: "squeeze", memory: 256 * mib, why: "host short", reply: reply})
	r.phase(resizing)
	r.l.expire(context.Background())
	r.phase(confirming)
	r.memReport(guestTotal(ram.dev.Total), 100*mib, nil)
	<-reply
	ev := r.lastEvent()
	if ev.Rule != RuleHostPressure || ev.Reason != "host short" || ev.To != 640 || ev.Result != 640 {
		t.Fatalf("event %+v", ev)
	}
}

type fakeHostMem struct{ avail, total uint64 }

func (f *fakeHostMem) Available() (uint64, uint64, error) { return f.avail, f.total, nil }

// squeezeOnce over two VMs: the lower priority gives first, each to at
// most its floor, and the shortfall is covered.
func TestSqueezeOnceAcrossVMs(t *testing.T) {
	mk := func(name string, prio int) (VMConfig, *ramHyp) {
		ram := newRAMHyp()
		ram.dev.Total, ram.dev.Requested = 2048*mib, 2048*mib
		p := pressurePolicy()
		p.Priority = prio
		return VMConfig{Name: name, Policy: fastPolicy(), Hypervisor: ram, Channel: fakeguest.NewPipeChannel(), CommandTimeout: time.Second, Memory: p}, ram
	}
	gold, goldRAM := mk("gold", 2)
	bulk, bulkRAM := mk("bulk", 1)
	events, err := eventlog.Open(filepath.Join(t.TempDir(), "events.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer events.Close()
	a, err := New([]VMConfig{gold, bulk}, events, 0, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	host := &fakeHostMem{avail: 1 << 30, total: 8 << 30}
	a.SetHostMemoryReserve(host, 3<<30, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for _, v := range a.VMs() {
		for v.Status().Memory.Device == "" {
			time.Sleep(time.Millisecond)
		}
	}
	// 2 GiB short. Each VM's floor is its boot memory, 512 MiB (no
	// report yet): bulk gives 1536 MiB, gold the 512 MiB left.
	a.squeezeOnce(ctx, host.avail)
	if bulkRAM.dev.Total != 512*mib || goldRAM.dev.Total != 1536*mib {
		t.Fatalf("bulk at %d MiB, gold at %d MiB; want 512 and 1536", bulkRAM.dev.Total>>20, goldRAM.dev.Total>>20)
	}
	if !a.squeeze.short.Load() {
		t.Fatal("host not marked short")
	}
	a.squeezeOnce(ctx, 4<<30)
	if a.squeeze.short.Load() {
		t.Fatal("host still marked short with its reserve back")
	}
}

// A baseline mode sees the host through the memory budget: the MoM-like
// rule shrinks a VM when the budget is nearly used, whatever its guest says.
func TestMemoryBaselineSeesTheBudget(t *testing.T) {
	ram := newRAMHyp()
	ram.dev.Total, ram.dev.Requested = 2048*mib, 2048*mib
	p := pressurePolicy()
	p.Mode = memory.ModeMoM
	r := newRAMRig(t, ram, p, func(r *loopRig) { r.memBudget.SetLimit(int(2176 * mib)) }) // 94 % used by this VM
	r.handle(evSession{s: r.sess})
	r.memReport(guestTotal(2048*mib), 1000*mib, nil)
	r.phase(resizing)
	r.l.expire(context.Background())
	r.phase(confirming)
	r.memReport(guestTotal(ram.dev.Total), 900*mib, nil)
	ev := r.lastEvent()
	if ev.Kind != eventlog.KindMemoryShrink || ev.Rule != memory.RuleHostFree || ev.To != 1920 {
		t.Fatalf("event %+v", ev)
	}
}
