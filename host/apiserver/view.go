package apiserver

import (
	"math"

	"github.com/hotplugheaven/hotplug/host/actuator"
	"github.com/hotplugheaven/hotplug/host/api"
)

// viewOf is the API's view of a VM's status.
func viewOf(st actuator.Status) api.VM {
	s := statusOf(st)
	x, hot := api.Explain(st.LastDecision, st.LastDecisionAt, st.Policy)
	return api.VM{Status: s, Hotspot: hot, Explanation: x}
}

// statusOf copies the actuator's status into the API's shape, making the
// guest-derived figures encodable: a guest controls them, and one NaN
// must not break the API for every VM.
func statusOf(st actuator.Status) api.Status {
	g := st.Signals
	out := api.Status{Name: st.Name, Mode: st.Mode, Policy: st.Policy, Current: st.Current, Online: st.Online,
		Target: st.Target, MaxSlots: st.MaxSlots, Paused: st.Paused, Connected: st.Agent.Connected, Source: st.Agent.Source,
		Reachable: st.Reachable, Degraded: st.Degraded, Agent: st.Agent.Version, LastDecision: st.LastDecision,
		LastDecisionAt: st.LastDecisionAt, ReportsSeen: st.Agent.Reports,
		Signals: api.Signals{At: g.At, Utilisation: finite(g.Utilisation), Demand: finite(g.Demand), Busy: finite(g.Busy),
			Waiting: finite(g.Waiting), Load1: finite(g.Load1), PSISome10: finite(g.PSISome10), RunQSource: g.RunQ.Source,
			RunQP50: finite(g.RunQ.P50), RunQP95: finite(g.RunQ.P95), RunQP99: finite(g.RunQ.P99), Steal: finite(g.Steal),
			MemTotal: g.MemTotal, MemAvailable: g.MemAvailable, SwapIn: finite(g.SwapIn), SwapOut: finite(g.SwapOut)}}
	if m := st.Memory; m.Mode != "off" || m.Device != "" {
		d := m.LastDecision
		out.Memory = &api.Memory{Mode: m.Mode, Device: m.Device, Total: m.Total, Requested: m.Requested, Max: m.Max,
			Target: m.Target, LastRule: d.Rule, LastReason: d.Reason, LastDecisionAt: m.LastDecisionAt, Degraded: m.Degraded}
		if d.Rule != "" {
			out.Memory.LastAction = d.Action.String()
		}
	}
	for _, a := range g.Apps {
		out.Signals.Apps = append(out.Signals.Apps, api.AppSignal{Name: a.Name, Rate: finite(a.Rate), RespP95: finite(a.RespP95),
			ServiceMean: finite(a.ServiceMean), SLAMean: finite(a.SLAMean), SLAPct: finite(a.SLAPct),
			SLATarget: finite(a.SLATarget), DropRate: finite(a.DropRate)})
	}
	return out
}

// finite turns NaN and ±Inf (which JSON cannot carry) into 0.
func finite(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return f
}
