package api

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/hotplugheaven/hotplug/host/engine"
	"github.com/hotplugheaven/hotplug/host/eventlog"
)

// VM is the API's view of one VM: the actuator's status (its fields at
// the top level) plus whether it is in a hotspot and why the last
// decision was taken.
type VM struct {
	Status
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

// Explain explains decision d taken at at under policy p, and says
// whether it found a hotspot.
func Explain(d engine.Decision, at time.Time, p engine.Policy) (Explanation, bool) {
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

// Health is the answer to GET /healthz.
type Health struct {
	Status        string  `json:"status"` // "ok"
	Version       string  `json:"version"`
	UptimeSeconds float64 `json:"uptime_seconds"`
	VMs           int     `json:"vms"`
}

// VMList is the answer to GET /v1/vms.
type VMList struct {
	VMs  []VM `json:"vms"`
	Host Host `json:"host"`
}

// Host is the host-wide budget.
type Host struct {
	// VCPUBudget caps the sum of vCPUs over all VMs; 0 means none.
	VCPUBudget int `json:"vcpu_budget"`
	// VCPUs is the sum of vCPUs plugged over all VMs.
	VCPUs int `json:"vcpus"`
}

// History is the answer to GET /v1/vms/{id}/history.
type History struct {
	Points []Point `json:"points"`
}

// VCPUsRequest is the body of POST /v1/vms/{id}/vcpus.
type VCPUsRequest struct {
	VCPUs int `json:"vcpus"`
}

// MemoryRequest is the body of POST /v1/vms/{id}/memory: the VM's memory
// in bytes (boot memory plus what the device adds).
type MemoryRequest struct {
	Bytes uint64 `json:"bytes"`
	// Force shrinks below the guest's safety floor (what it uses plus
	// headroom), at the risk of the guest's OOM killer.
	Force bool `json:"force,omitempty"`
}

// Error is the body of every error answer.
type Error struct {
	Error string `json:"error"`
	// Field names the request field or parameter at fault, when one is.
	Field string `json:"field,omitempty"`
}

// Stream message types (the SSE "event:" field).
const (
	TypeReport   = "report"   // a report was accepted; data is the VM view after it
	TypeDecision = "decision" // the engine decided; data is a DecisionMessage
	TypeEvent    = "event"    // a scaling event; data is an EventMessage
	TypeRejected = "rejected" // a message from an agent was refused; data is a RejectedMessage
	TypeMissed   = "missed"   // this client fell behind; data is a MissedMessage
)

// StreamTypes are the message types a stream client may ask for.
var StreamTypes = []string{TypeReport, TypeDecision, TypeEvent, TypeRejected}

// DecisionMessage is the data of a "decision" stream message.
type DecisionMessage struct {
	VM       string          `json:"vm"`
	At       time.Time       `json:"at"`
	Decision engine.Decision `json:"decision"`
	// Hotspot and Explanation are as in the VM view once this decision
	// is the VM's last.
	Hotspot     bool        `json:"hotspot"`
	Explanation Explanation `json:"explanation"`
}

// EventMessage is the data of an "event" stream message: the event as it
// is (or would have been) written to the event log.
type EventMessage struct {
	Event eventlog.Event `json:"event"`
	// Committed is false when the event could not be written to the log.
	Committed bool `json:"committed"`
}

// RejectedMessage is the data of a "rejected" stream message.
type RejectedMessage struct {
	VM     string `json:"vm"`
	Reason string `json:"reason"`
	// Suppressed counts this VM's refusals not sent since the last
	// rejected message (the stream carries a few a second at most; the
	// metrics count every one).
	Suppressed uint64 `json:"suppressed,omitempty"`
}

// MissedMessage tells a client how many messages it did not get because
// it read too slowly.
type MissedMessage struct {
	Missed uint64 `json:"missed"`
}

// Point is one report's figures, as the dashboard charts them.
type Point struct {
	At          time.Time `json:"at"`
	Utilisation float64   `json:"utilisation"`
	RunQP95     float64   `json:"runq_p95_seconds,omitempty"`
	Online      int       `json:"online_vcpus"`
	Current     int       `json:"current_vcpus"`
	// RespP95 and SLA are the first application's p95 response time and
	// its SLA target, when the guest reports applications.
	RespP95 float64 `json:"response_p95_seconds,omitempty"`
	SLA     float64 `json:"sla_seconds,omitempty"`
	// Memory is the VM's memory as the hypervisor reports it, and
	// GuestTotal and GuestUsed the guest's MemTotal and what it does not
	// have available, for VMs with a memory device.
	Memory     uint64 `json:"memory_bytes,omitempty"`
	GuestTotal uint64 `json:"guest_mem_total_bytes,omitempty"`
	GuestUsed  uint64 `json:"guest_mem_used_bytes,omitempty"`
}

// Status is a VM as the actuator sees it: the top-level fields of a VM
// view.
type Status struct {
	Name   string        `json:"name"`
	Mode   string        `json:"mode"`
	Policy engine.Policy `json:"policy"`
	// Current is the vCPU count the hypervisor reports; Online the guest's
	// online CPUs in its latest report; Target what the last decision
	// asked for.
	Current   int  `json:"current_vcpus"`
	Online    int  `json:"online_vcpus"`
	Target    int  `json:"target_vcpus"`
	MaxSlots  int  `json:"max_slots"`
	Paused    bool `json:"paused"`
	Connected bool `json:"agent_connected"`
	// Source is where the measurements come from: "agent", or "host"
	// (black-box fallback); empty before the first.
	Source    string `json:"source,omitempty"`
	Reachable bool   `json:"hypervisor_reachable"`
	// Degraded says why the last action failed; empty when healthy.
	Degraded       string          `json:"degraded,omitempty"`
	Agent          string          `json:"agent_version,omitempty"`
	LastDecision   engine.Decision `json:"last_decision"`
	LastDecisionAt time.Time       `json:"last_decision_at,omitzero"`
	Signals        Signals         `json:"signals"`
	ReportsSeen    uint64          `json:"reports_seen"`
	// Memory is the VM's memory sizing; nil when its mode is off and no
	// memory device is known.
	Memory *Memory `json:"memory,omitempty"`
}

// Memory is a VM's memory as the hypervisor reports it, in bytes, and the
// memory policy's last decision.
type Memory struct {
	Mode string `json:"mode"`
	// Device is "virtio-mem" or "balloon"; empty when none was found.
	Device    string `json:"device,omitempty"`
	Total     uint64 `json:"total_bytes"`
	Requested uint64 `json:"requested_bytes"`
	Max       uint64 `json:"max_bytes"`
	Target    uint64 `json:"target_bytes"`
	// LastAction, LastRule and LastReason are the memory engine's last
	// decision (grow, shrink, hold), the rule that took it and its numbers.
	LastAction     string    `json:"last_action,omitempty"`
	LastRule       string    `json:"last_rule,omitempty"`
	LastReason     string    `json:"last_reason,omitempty"`
	LastDecisionAt time.Time `json:"last_decision_at,omitzero"`
	// Degraded says why the last resize fell short; empty when healthy.
	Degraded string `json:"degraded,omitempty"`
}

// Signals are the latest measurements of a VM.
type Signals struct {
	At          time.Time `json:"at,omitzero"`
	Utilisation float64   `json:"utilisation"` // demand ÷ online vCPUs
	Demand      float64   `json:"demand_cpus"`
	Busy        float64   `json:"busy_cpus"`
	Waiting     float64   `json:"waiting_tasks"`
	Load1       float64   `json:"load1"`
	PSISome10   float64   `json:"psi_cpu_some_avg10,omitempty"`
	RunQSource  string    `json:"runq_source,omitempty"`
	RunQP50     float64   `json:"runq_p50_seconds,omitempty"`
	RunQP95     float64   `json:"runq_p95_seconds,omitempty"`
	RunQP99     float64   `json:"runq_p99_seconds,omitempty"`
	// Steal is the share of the online CPUs' time the hypervisor ran
	// something else, in the latest interval.
	Steal float64 `json:"steal_ratio"`
	// Memory as the guest reports it, and its swap traffic (pages/s).
	MemTotal     uint64      `json:"mem_total_bytes,omitempty"`
	MemAvailable uint64      `json:"mem_available_bytes,omitempty"`
	SwapIn       float64     `json:"swap_in_pages_per_second"`
	SwapOut      float64     `json:"swap_out_pages_per_second"`
	Apps         []AppSignal `json:"apps,omitempty"`
}

// AppSignal is one application's latest figures against its SLA.
type AppSignal struct {
	Name        string  `json:"name"`
	Rate        float64 `json:"arrival_rate"`
	RespP95     float64 `json:"response_p95_seconds"`
	ServiceMean float64 `json:"service_mean_seconds"`
	SLAMean     float64 `json:"sla_mean_seconds,omitempty"`
	SLAPct      float64 `json:"sla_percentile,omitempty"`
	SLATarget   float64 `json:"sla_target_seconds,omitempty"`
	DropRate    float64 `json:"drop_rate"`
}

// SLA is the response-time bound an application's SLA sets: its
// percentile target, or else its mean.
func (a AppSignal) SLA() float64 {
	if a.SLATarget > 0 {
		return a.SLATarget
	}
	return a.SLAMean
}
