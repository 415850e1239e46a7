package actuator

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotplugheaven/hotplug/host/eventlog"
	"github.com/hotplugheaven/hotplug/host/hypervisor"
	"github.com/hotplugheaven/hotplug/proto"
)

// memHyp is an in-memory hypervisor: slots whose APIC id is their index,
// the first boot ones fixed. It counts its calls.
type memHyp struct {
	mu      sync.Mutex
	plugged []bool
	boot    int
	calls   map[string]int
}

var _ hypervisor.Hypervisor = (*memHyp)(nil)

func newMemHyp(slots, boot int) *memHyp {
	h := &memHyp{plugged: make([]bool, slots), boot: boot, calls: map[string]int{}}
	for i := range boot {
		h.plugged[i] = true
	}
	return h
}

func (h *memHyp) stateLocked() hypervisor.State {
	st := hypervisor.State{}
	for i, p := range h.plugged {
		s := hypervisor.Slot{Index: i, Plugged: p, APICID: -1}
		if p {
			s.APICID, s.Removable, s.Ref = i, i >= h.boot, fmt.Sprint(i)
		}
		st.Slots = append(st.Slots, s)
	}
	return st
}

func (h *memHyp) State(context.Context) (hypervisor.State, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls["state"]++
	return h.stateLocked(), nil
}

func (h *memHyp) Plug(context.Context) (hypervisor.Slot, hypervisor.State, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls["plug"]++
	for i, p := range h.plugged {
		if !p {
			h.plugged[i] = true
			st := h.stateLocked()
			return st.Slots[i], st, nil
		}
	}
	return hypervisor.Slot{}, hypervisor.State{}, hypervisor.ErrNoFreeSlot
}

func (h *memHyp) Unplug(_ context.Context, s hypervisor.Slot) (hypervisor.State, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls["unplug"]++
	h.plugged[s.Index] = false
	return h.stateLocked(), nil
}

func (h *memHyp) Close() error { return nil }

// loopRig drives one VM's loop directly, on the test's goroutine: no
// timers, no agent goroutine; what the agent would answer is fed in as
// events, so every transition is deterministic.
type loopRig struct {
	t      testing.TB
	l      *loop
	hyp    *memHyp
	sess   *session
	cmds   chan proto.Message
	path   string
	events *eventlog.Log
	// memBudget is the VM's host memory budget (unlimited unless set).
	memBudget *Budget
	// unfinished are handed to the VM as a restarted actuator's would be.
	unfinished []eventlog.Event
}

func newLoopRig(t testing.TB, slots, boot int) *loopRig {
	t.Helper()
	return newLoopRigWith(t, slots, boot, nil)
}

// newLoopRigWith is newLoopRig with the VM's configuration changed by
// mod (e.g. a hypervisor with a memory device, a memory policy) and the
// budgets it is given; mod may call setup to prepare the event log
// before the VM starts.
func newLoopRigWith(t testing.TB, slots, boot int, mod func(r *loopRig, c *VMConfig)) *loopRig {
	t.Helper()
	r := &loopRig{t: t, hyp: newMemHyp(slots, boot), cmds: make(chan proto.Message, 16),
		path: filepath.Join(t.TempDir(), "events.jsonl"), memBudget: NewBudget(0)}
	var err error
	if r.events, err = eventlog.Open(r.path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.events.Close() })
	cfg := VMConfig{Name: "vm1", Policy: fastPolicy(), Hypervisor: r.hyp, CommandTimeout: time.Second}
	if mod != nil {
		mod(r, &cfg)
	}
	v, err := newVM(cfg, r.events, NewBudget(0), r.memBudget, nil, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	v.unfinished = r.unfinished
	r.l = v.loop
	r.l.begin(context.Background())
	host, guest := net.Pipe()
	t.Cleanup(func() { host.Close(); guest.Close() })
	go func() { // the guest's side: decode what the host sends
		rd := proto.NewReader(guest, 0)
		for {
			m, err := rd.Next()
			if err != nil {
				close(r.cmds)
				return
			}
			r.cmds <- m
		}
	}()
	online := proto.NewCPUSet()
	for i := range boot {
		online.Add(i)
	}
	r.sess = &session{id: 1, conn: host, w: proto.NewWriter(host),
		hello: &proto.Hello{Present: online, Online: online, Topology: topoOf(online)}}
	return r
}

func topoOf(s proto.CPUSet) []proto.CPUTopology {
	var out []proto.CPUTopology
	for _, c := range s.Slice() {
		out = append(out, proto.CPUTopology{CPU: uint16(c), APICID: uint32(c)})
	}
	return out
}

func (r *loopRig) handle(ev any) { r.l.handle(context.Background(), ev) }

// command returns the next command the host sent.
func (r *loopRig) command() *proto.Command {
	r.t.Helper()
	select {
	case m := <-r.cmds:
		c, ok := m.(*proto.Command)
		if !ok {
			r.t.Fatalf("host sent %T, want a command", m)
		}
		return c
	case <-time.After(10 * time.Second):
		r.t.Fatal("host sent no command")
		return nil
	}
}

func (r *loopRig) phase(want phase) {
	r.t.Helper()
	if got := r.l.phase(); got != want {
		r.t.Fatalf("phase %s, want %s", got, want)
	}
}

var seq uint64

func (r *loopRig) report(online proto.CPUSet) {
	seq++
	now := time.Now()
	r.handle(evReport{s: r.sess, at: now, r: &proto.Report{Seq: seq, WallUnixNanos: now.UnixNano(),
		IntervalNanos: int64(interval), Online: online, Present: online}})
}

func (r *loopRig) lastEvent() eventlog.Event {
	r.t.Helper()
	evs, _, err := eventlog.ReadFile(r.path, eventlog.Filter{})
	if err != nil || len(evs) == 0 {
		r.t.Fatalf("no event: %v", err)
	}
	return evs[len(evs)-1]
}

// setVCPUs sends a set-vcpus request as the control channel would; the
// returned channel gets the answer.
func (r *loopRig) setVCPUs(n int) chan error {
	reply := make(chan error, 1)
	r.l.control(context.Background(), control{kind: "vcpus", vcpus: n, reply: reply})
	return reply
}

func TestLoopTransitions(t *testing.T) {
	t.Run("scale-up: idle, acting, confirming, idle", func(t *testing.T) {
		r := newLoopRig(t, 4, 1)
		r.handle(evSession{s: r.sess})
		r.phase(idle) // nothing plugged but offline: no reconcile
		r.report(proto.NewCPUSet(0))

		reply := r.setVCPUs(4)
		r.phase(acting)
		c := r.command()
		if c.WantOnline != 4 || r.hyp.calls["plug"] != 3 {
			t.Fatalf("one command for the batch: %+v after %d plugs", c, r.hyp.calls["plug"])
		}
		// Controls are served while the action waits for the agent.
		pause := make(chan error, 1)
		r.l.control(context.Background(), control{kind: "pause", reply: pause})
		if err := <-pause; err != nil || !r.l.paused {
			t.Fatalf("pause while acting: %v", err)
		}
		r.phase(acting)
		// A report while acting feeds the engine and starts nothing.
		r.report(proto.NewCPUSet(0))
		r.phase(acting)

		all := proto.NewCPUSet(0, 1, 2, 3)
		r.handle(evAck{s: r.sess, a: &proto.Ack{ID: c.ID, OK: true, Online: all, Present: all, Topology: topoOf(all)}})
		r.phase(confirming)
		r.report(proto.NewCPUSet(0, 1, 2)) // not yet
		r.phase(confirming)
		r.report(all)
		r.phase(idle)
		if err := <-reply; err != nil {
			t.Fatal(err)
		}
		if ev := r.lastEvent(); stepNames(ev) != "plug,plug,plug,online,confirm" || ev.Outcome != eventlog.OutcomeOK || ev.Result != 4 {
			t.Fatalf("event %+v", ev)
		}
	})

	t.Run("acting: no Ack in time rolls every CPU back", func(t *testing.T) {
		r := newLoopRig(t, 4, 1)
		r.handle(evSession{s: r.sess})
		r.report(proto.NewCPUSet(0))
		reply := r.setVCPUs(3)
		r.command()
		r.phase(acting)
		r.l.expire(context.Background())
		r.phase(idle)
		if err := <-reply; err == nil {
			t.Fatal("set-vcpus succeeded without an Ack")
		}
		ev := r.lastEvent()
		if stepNames(ev) != "plug,plug,online,rollback_unplug,rollback_unplug" || ev.Outcome != eventlog.OutcomeRolledBack ||
			ev.Result != 1 || r.hyp.stateLocked().Plugged() != 1 {
			t.Fatalf("event %+v", ev)
		}
	})

	t.Run("confirming: connection lost rolls back", func(t *testing.T) {
		r := newLoopRig(t, 4, 1)
		r.handle(evSession{s: r.sess})
		r.report(proto.NewCPUSet(0))
		reply := r.setVCPUs(2)
		c := r.command()
		on := proto.NewCPUSet(0, 1)
		r.handle(evAck{s: r.sess, a: &proto.Ack{ID: c.ID, OK: true, Online: on, Present: on, Topology: topoOf(on)}})
		r.phase(confirming)
		r.handle(evClosed{s: r.sess})
		r.phase(idle)
		<-reply
		if ev := r.lastEvent(); stepNames(ev) != "plug,online,confirm,rollback_unplug" || ev.Outcome != eventlog.OutcomeRolledBack {
			t.Fatalf("event %+v", ev)
		}
	})

	t.Run("a late Ack and a stale session change nothing", func(t *testing.T) {
		r := newLoopRig(t, 4, 1)
		r.handle(evSession{s: r.sess})
		r.report(proto.NewCPUSet(0))
		r.setVCPUs(2)
		c := r.command()
		r.handle(evAck{s: r.sess, a: &proto.Ack{ID: c.ID + 7, OK: true}})
		r.phase(acting)
		r.handle(evAck{s: &session{}, a: &proto.Ack{ID: c.ID, OK: true}})
		r.phase(acting)
	})

	t.Run("a new session forgets the last one's APIC ids", func(t *testing.T) {
		r := newLoopRig(t, 4, 2)
		// The first agent claims cpu1 sits on APIC id 3.
		r.sess.hello.Topology = []proto.CPUTopology{{CPU: 0, APICID: 0}, {CPU: 1, APICID: 3}}
		r.handle(evSession{s: r.sess})
		if got := r.l.agent.apic[1]; got != 3 {
			t.Fatalf("cpu1 on APIC %d, want 3", got)
		}
		r.handle(evClosed{s: r.sess})
		// The next agent names only cpu0: cpu1's old id must not linger.
		next := &session{id: 2, conn: r.sess.conn, w: r.sess.w, hello: &proto.Hello{Present: r.sess.hello.Present,
			Online: r.sess.hello.Online, Topology: []proto.CPUTopology{{CPU: 0, APICID: 0}}}}
		r.handle(evSession{s: next})
		if apic, ok := r.l.agent.apic[1]; ok {
			t.Fatalf("cpu1 still mapped to APIC %d from the previous session", apic)
		}
	})

	t.Run("set-vcpus while acting waits its turn", func(t *testing.T) {
		r := newLoopRig(t, 4, 1)
		r.handle(evSession{s: r.sess})
		r.report(proto.NewCPUSet(0))
		first := r.setVCPUs(2)
		c := r.command()
		second := r.setVCPUs(1)
		if len(r.l.queued) != 1 {
			t.Fatal("second request not queued")
		}
		on := proto.NewCPUSet(0, 1)
		r.handle(evAck{s: r.sess, a: &proto.Ack{ID: c.ID, OK: true, Online: on, Present: on, Topology: topoOf(on)}})
		r.report(on)
		if err := <-first; err != nil {
			t.Fatal(err)
		}
		// The queued scale-down started at once.
		r.phase(acting)
		if c := r.command(); c.Offline.String() != "1" {
			t.Fatalf("scale-down command %+v", c)
		}
		select {
		case err := <-second:
			t.Fatalf("second answered before its action ended: %v", err)
		default:
		}
	})
}

func testLogger(t testing.TB) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Level: hclog.Debug, Output: testWriter{t}})
}

// Plugged and PluggedAPICIDs make memHyp a fakeguest.Machine.
func (h *memHyp) Plugged() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.stateLocked().Plugged()
}

func (h *memHyp) PluggedAPICIDs() []int {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []int
	for i, p := range h.plugged {
		if p {
			out = append(out, i)
		}
	}
	return out
}
