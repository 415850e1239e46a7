package api

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/hotplugheaven/hotplug/host/actuator"
	"github.com/hotplugheaven/hotplug/host/engine"
)

// VM is the API's view of one VM: the actuator's status (its fields at
// the top level) plus whether it is in a hotspot and why the last
// decision was taken.
type VM struct {
	actuator.Status
	// Hotspot is true when the last decision found the VM short of CPU:
	// k of the last n samples above the upper threshold with the AR(1)
	// forecast above it too, or a scale-up for run-queue latency or SLA.
	Hotspot     bool        `json:"hotspot"`
	Explanation Explanation `json:"explanation"`
}

// Explanation says which rule fired on which samples.
type Explanation struct {
	Action string    `json:"action"`
	Rule   string    `json:"rule"`
	From   int       `json:"from"`
	To     int       `json:"to"`
	At     time.Time `json:"at,omitzero"`
	Reason string    `json:"reason"`
	// Samples are the last n samples the rule looked at, oldest first,
	// each marked when it was above the upper threshold.
	Samples []ExplainedSample `json:"samples"`
	Upper   float64           `json:"upper"`
	Above   int               `json:"above"`
	K       int               `json:"k"`
	N       int               `json:"n"`
	// Forecast is the AR(1) forecast of the next sample's utilisation.
	Forecast      float64 `json:"forecast"`
	ForecastAbove bool    `json:"forecast_above"`
	// PeakDemand is the Percentile of demand over the window, in CPUs:
	// what a scale-up is sized for.
	PeakDemand float64 `json:"peak_demand_cpus"`
	Percentile float64 `json:"percentile"`
	// WindowSamples is how many samples the engine held.
	WindowSamples int `json:"window_samples"`
	// Text is the whole explanation in one paragraph, for people.
	Text string `json:"text"`
}

// ExplainedSample is one sample behind a decision. Age is its position
// counted back from the newest (0 is the report the decision was taken on,
// -1 the one before, …).
type ExplainedSample struct {
	Age         int     `json:"age"`
	Utilisation float64 `json:"utilisation"`
	Above       bool    `json:"above"`
}

func viewOf(st actuator.Status) VM {
	sanitiseSignals(&st.Signals)
	x, hot := explanationOf(st.LastDecision, st.LastDecisionAt, st.Policy)
	return VM{Status: st, Hotspot: hot, Explanation: x}
}

// explanationOf explains decision d taken at at under policy p, and says
// whether it found a hotspot.
func explanationOf(d engine.Decision, at time.Time, p engine.Policy) (Explanation, bool) {
	ev := d.Evidence
	x := Explanation{Action: d.Action.String(), Rule: d.Rule, From: d.From, To: d.To, At: at,
		Reason: d.Reason, Upper: p.Upper, Above: ev.Above, K: ev.K, N: ev.N,
		Forecast: finite(ev.Forecast), PeakDemand: finite(ev.PeakDemand), Percentile: ev.Percentile,
		WindowSamples: ev.Samples, Samples: make([]ExplainedSample, len(ev.Utilisation))}
	for i, u := range ev.Utilisation {
		u = finite(u)
		x.Samples[i] = ExplainedSample{Age: i - len(ev.Utilisation) + 1, Utilisation: u, Above: u > x.Upper}
	}
	x.ForecastAbove = ev.K > 0 && x.Forecast > x.Upper
	hot := ev.K > 0 && ev.Above >= ev.K && x.ForecastAbove
	if d.Action == engine.ScaleUp {
		switch d.Rule {
		case engine.RuleHotspot, engine.RuleRunQueue, engine.RuleSLA, engine.RuleBudget:
			hot = true
		}
	}
	x.Text = explain(x)
	return x, hot
}

// explain renders an explanation as a paragraph.
func explain(x Explanation) string {
	if x.Rule == "" {
		return "no decision yet: the VM has sent no report since the actuator started"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %d → %d by rule %s: %s.", x.Action, x.From, x.To, x.Rule, x.Reason)
	if len(x.Samples) > 0 {
		var above, all []string
		for _, s := range x.Samples {
			v := fmt.Sprintf("%.0f%%", 100*s.Utilisation)
			all = append(all, v)
			if s.Above {
				above = append(above, fmt.Sprintf("%d (%s)", s.Age, v))
			}
		}
		fmt.Fprintf(&b, " Last %d samples, oldest first: %s.", len(x.Samples), strings.Join(all, ", "))
		if len(above) > 0 {
			fmt.Fprintf(&b, " Above the upper threshold %.0f%%: samples %s — %d of %d, %d needed.",
				100*x.Upper, strings.Join(above, ", "), x.Above, len(x.Samples), x.K)
		} else {
			fmt.Fprintf(&b, " None above the upper threshold %.0f%%.", 100*x.Upper)
		}
		rel := "not above"
		if x.ForecastAbove {
			rel = "above"
		}
		fmt.Fprintf(&b, " AR(1) forecast %.0f%%, %s it.", 100*x.Forecast, rel)
	}
	if x.PeakDemand > 0 {
		fmt.Fprintf(&b, " p%.0f demand over %d samples: %.2f CPUs.", 100*x.Percentile, x.WindowSamples, x.PeakDemand)
	}
	return b.String()
}

// finite turns NaN and ±Inf (which JSON cannot carry) into 0.
func finite(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return f
}

// sanitiseSignals makes the guest-derived figures encodable: a guest
// controls them, and one NaN must not break the API for every VM.
func sanitiseSignals(s *actuator.Signals) {
	for _, f := range []*float64{&s.Utilisation, &s.Demand, &s.Busy, &s.Waiting, &s.Load1, &s.PSISome10,
		&s.RunQP50, &s.RunQP95, &s.RunQP99} {
		*f = finite(*f)
	}
	apps := make([]actuator.AppSignal, len(s.Apps))
	for i, a := range s.Apps {
		for _, f := range []*float64{&a.Rate, &a.RespP95, &a.ServiceMean, &a.SLAMean, &a.SLAPct, &a.SLATarget, &a.DropRate} {
			*f = finite(*f)
		}
		apps[i] = a
	}
	s.Apps = apps
}
