package actuator

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/prometheus/procfs"

	"github.com/hotplugheaven/hotplug/host/engine"
	"github.com/hotplugheaven/hotplug/host/hypervisor"
)

// Black-box fallback: a VM without an agent (or whose agent has been gone
// longer than the agent timeout) is measured from the host — what the
// backend's hypervisor.VCPUStatser or hypervisor.VMLoader reports, or else
// the CPU time of each vCPU's host thread — and scaled by the same engine. Plugging
// then relies on the guest onlining new CPUs itself (a udev rule such as
// SUBSYSTEM=="cpu", ACTION=="add", TEST=="online", ATTR{online}=="0",
// ATTR{online}="1"), and unplugging on ACPI eject, in which the guest
// kernel offlines the CPU before letting it go.

// hostMeter turns cumulative vCPU CPU times into busy fractions.
type hostMeter struct {
	proc procfs.FS
	prev map[int]time.Duration // by slot index
	at   time.Time
}

func newHostMeter(procRoot string) (*hostMeter, error) {
	fs, err := procfs.NewFS(procRoot)
	if err != nil {
		return nil, err
	}
	return &hostMeter{proc: fs}, nil
}

// times reads each plugged vCPU's cumulative CPU time.
func (m *hostMeter) times(ctx context.Context, hyp hypervisor.Hypervisor, st hypervisor.State) (map[int]time.Duration, error) {
	out := map[int]time.Duration{}
	if vs, ok := hyp.(hypervisor.VCPUStatser); ok {
		stats, err := vs.VCPUStats(ctx)
		if err != nil {
			return nil, err
		}
		plugged := map[int]bool{}
		for _, s := range st.Slots {
			plugged[s.Index] = s.Plugged
		}
		for _, x := range stats {
			if plugged[x.Index] { // libvirt may still list a vCPU QEMU no longer has
				out[x.Index] = x.Time
			}
		}
		return out, nil
	}
	for _, s := range st.Slots {
		if !s.Plugged {
			continue
		}
		if s.ThreadID <= 0 {
			return nil, fmt.Errorf("hypervisor gives no thread id for vCPU slot %d", s.Index)
		}
		p, err := m.proc.Proc(s.ThreadID)
		if err != nil {
			return nil, fmt.Errorf("vCPU slot %d thread %d: %w", s.Index, s.ThreadID, err)
		}
		ps, err := p.Stat()
		if err != nil {
			return nil, fmt.Errorf("vCPU slot %d thread %d: %w", s.Index, s.ThreadID, err)
		}
		out[s.Index] = time.Duration(ps.CPUTime() * float64(time.Second))
	}
	return out, nil
}

// sample returns the VM's busy CPUs since the previous call; ok is false on
// the first call (no baseline) and after a gap.
func (m *hostMeter) sample(now time.Time, times map[int]time.Duration) (busy float64, ok bool) {
	prev, at := m.prev, m.at
	m.prev, m.at = times, now
	elapsed := now.Sub(at)
	if prev == nil || elapsed <= 0 || elapsed > 10*time.Minute {
		return 0, false
	}
	for slot, t := range times {
		if p, seen := prev[slot]; seen && t >= p {
			busy += min(1, float64(t-p)/float64(elapsed))
		}
	}
	return busy, true
}

// blackBoxDue reports whether the VM should be measured from the host now:
// no agent session, and none for longer than the agent timeout.
func (c *cpuResource) blackBoxDue(now time.Time) bool {
	l := c.l
	return l.vm.cfg.blackbox && l.agent.sess == nil && now.Sub(l.agent.seen) >= l.vm.cfg.agentTimeout
}

// hostSample measures the VM from the host and feeds the engine; it runs
// on the VM's tick while black-box is due.
func (c *cpuResource) hostSample(ctx context.Context) {
	l, v := c.l, c.l.vm
	if !l.hv.refresh(ctx) {
		return
	}
	if c.meter == nil {
		m, err := newHostMeter(v.cfg.procRoot)
		if err != nil {
			v.log.Error("black-box measurement impossible", "error", err)
			return
		}
		c.meter = m
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	now := time.Now()
	var busy float64
	ok := true
	if ld, isLoader := v.env.hyp.(hypervisor.VMLoader); isLoader {
		// VirtualBox: the VM process's load as a share of all host CPUs.
		load, err := ld.CPULoad(cctx)
		if err != nil {
			v.log.Warn("black-box measurement failed", "error", err)
			return
		}
		busy = (load.User + load.Kernel) * float64(runtime.NumCPU())
	} else {
		times, err := c.meter.times(cctx, v.env.hyp, l.hv.state)
		if err != nil {
			v.log.Warn("black-box measurement failed", "error", err)
			c.meter.prev = nil
			return
		}
		busy, ok = c.meter.sample(now, times)
	}
	if !c.blackboxOn {
		c.blackboxOn = true
		v.log.Warn("no agent: measuring the VM from the host (black-box)", "since", l.agent.seen, "agent_timeout", v.cfg.agentTimeout)
		v.publish(func(s *Status) { s.Agent.Source = SourceHost })
	}
	if !ok {
		return
	}
	s := engine.Sample{Time: now, Online: l.hv.current, Busy: busy}
	for _, res := range l.res {
		res.observe(s, nil)
	}
	v.publish(func(st *Status) {
		st.Online = l.hv.current
		st.Signals = Signals{At: now, Busy: busy, Demand: busy, Utilisation: busy / float64(max(1, l.hv.current))}
		st.Agent.Reports++
	})
	v.env.obs.report(v.name, v.Status())
	l.decide(ctx)
}

// plugBlind adds vCPUs without an agent: plug, then confirm once from the
// hypervisor. The guest must online them by itself.
func (c *cpuResource) plugBlind(ctx context.Context, a *action) {
	l := c.l
	for l.hv.current < a.d.To {
		at := time.Now()
		slot, err := c.plugSlot(ctx, a.rec)
		if err != nil {
			a.fail(err)
			break
		}
		a.plugged = append(a.plugged, slot)
		a.pluggedAt(slot, at)
	}
	// The guest onlines the CPUs itself: the hypervisor's state (which
	// Plug returned) is the only confirmation there is.
	start := time.Now()
	if a.err != nil {
		if !l.hv.refresh(ctx) {
			a.fail(a.rec.step("confirm", start, fmt.Errorf("hypervisor state unreadable after plug")))
			return
		}
	}
	if len(a.plugged) > 0 {
		a.rec.step("confirm", start, nil)
		for _, s := range a.plugged {
			a.rec.latency(a.plugAt[s.Ref])
		}
	}
}

// unplugBlind removes the highest removable vCPUs one by one; the guest
// offlines each as part of the ACPI eject. If the guest never ejects, the
// hypervisor still shows the CPU and it stays online in the guest: nothing
// to roll back.
func (c *cpuResource) unplugBlind(ctx context.Context, a *action) {
	l, v := c.l, c.l.vm
	// One read of the state; after that, each Unplug returns it.
	if !l.hv.refresh(ctx) {
		a.fail(a.rec.step("unplug", time.Now(), fmt.Errorf("hypervisor unreachable")))
		return
	}
	for a.err == nil && l.hv.current > a.d.To {
		var victim *hypervisor.Slot
		for i := range l.hv.state.Slots {
			if s := l.hv.state.Slots[i]; s.Plugged && s.Removable && (victim == nil || s.Index > victim.Index) {
				victim = &l.hv.state.Slots[i]
			}
		}
		if victim == nil {
			a.fail(a.rec.step("unplug", time.Now(), fmt.Errorf("no removable vCPU")))
			return
		}
		start := time.Now()
		err := c.unplugSlot(ctx, *victim)
		v.env.budget.Set(v.name, l.hv.current)
		if a.fail(a.rec.step("unplug", start, err)); err == nil {
			a.rec.latency(start)
		}
	}
}

// Sources of a VM's measurements, for Status.
const (
	SourceAgent = "agent"
	SourceHost  = "host" // black-box
)
