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
// longer than the agent timeout) is measured from the host — the CPU time
// of each vCPU's host thread — and scaled by the same engine. Plugging
// then relies on the guest onlining new CPUs itself (a udev rule such as
// SUBSYSTEM=="cpu", ACTION=="add", TEST=="online", ATTR{online}=="0",
// ATTR{online}="1"), and unplugging on ACPI eject, in which the guest
// kernel offlines the CPU before letting it go.

// VCPUTimer is implemented by hypervisor backends that report the CPU
// time each vCPU has used (libvirt's vCPU statistics, VirtualBox metrics).
// Backends that report host thread ids instead (QEMU) are measured from
// /proc/<tid>/stat.
type VCPUTimer interface {
	VCPUTimes(ctx context.Context) (map[int]time.Duration, error) // by slot index
}

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

// vcpuStatser is a backend with per-vCPU statistics (libvirt).
type vcpuStatser interface {
	VCPUStats(ctx context.Context) ([]hypervisor.VCPUStat, error)
}

// vmLoader is a backend that only knows the whole VM's CPU load, as a
// share of the host's CPUs (VirtualBox's metrics).
type vmLoader interface {
	CPULoad(ctx context.Context) (hypervisor.CPULoad, error)
}

// times reads each plugged vCPU's cumulative CPU time.
func (m *hostMeter) times(ctx context.Context, hyp hypervisor.Hypervisor, st hypervisor.State) (map[int]time.Duration, error) {
	if t, ok := hyp.(VCPUTimer); ok {
		return t.VCPUTimes(ctx)
	}
	out := map[int]time.Duration{}
	if vs, ok := hyp.(vcpuStatser); ok {
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
func (v *VM) blackBoxDue(now time.Time) bool {
	return v.blackbox && v.sess == nil && now.Sub(v.agentSeen) >= v.agentTimeout
}

// hostSample measures the VM from the host and feeds the engine; it runs
// on the VM's tick while black-box is due.
func (v *VM) hostSample(ctx context.Context) {
	if !v.refresh(ctx) {
		return
	}
	if v.meter == nil {
		m, err := newHostMeter(v.procRoot)
		if err != nil {
			v.log.Error("black-box measurement impossible", "error", err)
			return
		}
		v.meter = m
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	now := time.Now()
	var busy float64
	ok := true
	if l, isLoader := v.hyp.(vmLoader); isLoader {
		// VirtualBox: the VM process's load as a share of all host CPUs.
		load, err := l.CPULoad(cctx)
		if err != nil {
			v.log.Warn("black-box measurement failed", "error", err)
			return
		}
		busy = (load.User + load.Kernel) * float64(runtime.NumCPU())
	} else {
		times, err := v.meter.times(cctx, v.hyp, v.state)
		if err != nil {
			v.log.Warn("black-box measurement failed", "error", err)
			v.meter.prev = nil
			return
		}
		busy, ok = v.meter.sample(now, times)
	}
	if !v.blackboxOn {
		v.blackboxOn = true
		v.log.Warn("no agent: measuring the VM from the host (black-box)", "since", v.agentSeen, "agent_timeout", v.agentTimeout)
		v.publish(func(s *Status) { s.Source = SourceHost })
	}
	if !ok {
		return
	}
	s := engine.Sample{Time: now, Online: v.current, Busy: busy}
	v.engine.Observe(s)
	v.publish(func(st *Status) {
		st.Online = v.current
		st.Signals = Signals{At: now, Busy: busy, Demand: busy, Utilisation: busy / float64(max(1, v.current))}
		st.ReportsSeen++
	})
	v.obs.report(v.name, v.Status())
	v.decideAndAct(ctx)
}

// plugBlackBox adds a vCPU without an agent: plug, then confirm from the
// hypervisor. The guest must online it by itself.
func (v *VM) plugBlackBox(ctx context.Context, rec *record) error {
	_, err := v.plugSlot(ctx, rec)
	start := time.Now()
	if !v.refresh(ctx) {
		return rec.step("confirm", start, fmt.Errorf("hypervisor state unreadable after plug"))
	}
	if err != nil {
		return err
	}
	return rec.step("confirm", start, nil)
}

// unplugBlackBox removes the highest removable vCPU; the guest offlines it
// as part of the ACPI eject. If the guest never ejects, the hypervisor
// still shows the CPU and it stays online in the guest: nothing to roll
// back.
func (v *VM) unplugBlackBox(ctx context.Context, rec *record) error {
	if !v.refresh(ctx) {
		return rec.step("unplug", time.Now(), fmt.Errorf("hypervisor unreachable"))
	}
	var victim *hypervisor.Slot
	for i := range v.state.Slots {
		if s := v.state.Slots[i]; s.Plugged && s.Removable && (victim == nil || s.Index > victim.Index) {
			victim = &v.state.Slots[i]
		}
	}
	if victim == nil {
		return rec.step("unplug", time.Now(), fmt.Errorf("no removable vCPU"))
	}
	start := time.Now()
	err := v.unplugSlot(ctx, *victim)
	v.budget.Set(v.name, v.current)
	return rec.step("unplug", start, err)
}

// Sources of a VM's measurements, for Status.
const (
	SourceAgent = "agent"
	SourceHost  = "host" // black-box
)
