package apiserver

import (
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/hotplugheaven/hotplug/host/actuator"
	"github.com/hotplugheaven/hotplug/host/engine"
	"github.com/hotplugheaven/hotplug/host/eventlog"
)

const namespace = "hotplug"

// rejectReasons are every actuator.Reject constant, so each VM's receive
// error counters exist (at zero) before the first error.
var rejectReasons = []string{actuator.RejectMalformed, actuator.RejectUnknownType, actuator.RejectInvalid,
	actuator.RejectReplayed, actuator.RejectFraming, actuator.RejectHandshake, actuator.RejectSilent,
	actuator.RejectRateLimited, actuator.RejectRehello, actuator.RejectMisbehaving, actuator.RejectUnknownApp}

// latencyBuckets span a KVM plug (milliseconds) to a slow TCG guest
// onlining a CPU or ejecting one (tens of seconds).
var latencyBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// Metrics is the actuator observer behind /metrics, on its own registry:
// counters and histograms are fed by the observer calls, per-VM gauges
// are read from the actuator's status at scrape time so they are never
// stale.
type Metrics struct {
	reg *prometheus.Registry

	actions    *prometheus.CounterVec
	logErrors  *prometheus.CounterVec
	rejected   *prometheus.CounterVec
	plug       *prometheus.HistogramVec
	unplug     *prometheus.HistogramVec
	step       *prometheus.HistogramVec
	resize     *prometheus.HistogramVec
	stall      *prometheus.CounterVec
	vms        *vmCollector
	attachOnce sync.Once
}

var _ actuator.Observer = (*Metrics)(nil)

// NewMetrics builds the registry with the event counters and histograms
// and the Go and process collectors. The per-VM gauges are added when a
// Server is built on it (they need the actuator).
func NewMetrics() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.actions = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "scaling_actions_total",
		Help: "Scaling actions finished, by VM, kind (scale_up, scale_down, reconcile, recover, …) and outcome (ok, failed, rolled_back, partial)."},
		[]string{"vm", "kind", "outcome"})
	m.logErrors = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "event_log_write_errors_total",
		Help: "Scaling events that could not be written to the event log."}, []string{"vm"})
	m.rejected = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "report_receive_errors_total",
		Help: "Messages or connections from a VM's agent refused, by reason (malformed, unknown_type, invalid, replayed, framing, handshake, silent)."},
		[]string{"vm", "reason"})
	m.plug = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "vcpu_plug_duration_seconds",
		Help:    "Time to add one vCPU: hypervisor plug, guest online and confirmation, for each vCPU added successfully.",
		Buckets: latencyBuckets}, []string{"vm"})
	m.unplug = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "vcpu_unplug_duration_seconds",
		Help:    "Time to remove one vCPU: guest offline and hypervisor unplug until the guest ejected it, for each vCPU removed successfully.",
		Buckets: latencyBuckets}, []string{"vm"})
	m.step = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "scaling_step_duration_seconds",
		Help:    "Duration of each step of a scaling action (plug, online, confirm, offline, unplug, rollback_*), failed ones included.",
		Buckets: latencyBuckets}, []string{"step", "ok"})
	m.resize = prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "memory_resize_duration_seconds",
		Help:    "Time for a VM's memory device to reach a resize's request, by direction (grow, shrink), for resizes that got there.",
		Buckets: latencyBuckets}, []string{"vm", "direction"})
	m.stall = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "vm_memory_stall_seconds_total",
		Help: "Seconds some (kind=some) or all non-idle (kind=full) tasks of the guest stalled on memory (PSI), summed over the reports accepted."},
		[]string{"vm", "kind"})
	m.reg.MustRegister(m.actions, m.logErrors, m.rejected, m.plug, m.unplug, m.step, m.resize, m.stall,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is the metrics' own registry.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// attach adds the per-VM gauges read from act, once.
func (m *Metrics) attach(act *actuator.Actuator) {
	m.attachOnce.Do(func() {
		m.vms = newVMCollector(act)
		m.reg.MustRegister(m.vms)
		for _, v := range act.VMs() {
			m.logErrors.WithLabelValues(v.Name())
			for _, r := range rejectReasons {
				m.rejected.WithLabelValues(v.Name(), r)
			}
		}
	})
}

// Report implements actuator.Observer: it adds the report's memory stall;
// the gauges read the status at scrape time.
func (m *Metrics) Report(vm string, st actuator.Status) {
	if g := st.Signals; g.MemStallSome > 0 || g.MemStallFull > 0 {
		m.stall.WithLabelValues(vm, "some").Add(finite(g.MemStallSome))
		m.stall.WithLabelValues(vm, "full").Add(finite(g.MemStallFull))
	}
}

// Decision implements actuator.Observer.
func (m *Metrics) Decision(string, engine.Decision, time.Time) {}

// Rejected implements actuator.Observer.
func (m *Metrics) Rejected(vm, reason string) { m.rejected.WithLabelValues(vm, reason).Inc() }

// Event implements actuator.Observer: it counts the action and observes
// the per-vCPU latencies the actuator recorded in it.
func (m *Metrics) Event(ev eventlog.Event, committed bool) {
	if !committed {
		m.logErrors.WithLabelValues(ev.VM).Inc()
	}
	if ev.Outcome == eventlog.OutcomeStarted {
		return // an action's first line; its result comes as another event
	}
	m.actions.WithLabelValues(ev.VM, ev.Kind, ev.Outcome).Inc()
	for _, s := range ev.Steps {
		m.step.WithLabelValues(s.Name, strconv.FormatBool(s.OK)).Observe(s.DurationMS / 1000)
		if s.Name == eventlog.StepResize && s.OK && (ev.Kind == eventlog.KindMemoryGrow || ev.Kind == eventlog.KindMemoryShrink) {
			dir := "grow"
			if ev.Kind == eventlog.KindMemoryShrink {
				dir = "shrink"
			}
			m.resize.WithLabelValues(ev.VM, dir).Observe(s.DurationMS / 1000)
		}
	}
	if eventlog.IsMemory(ev.Kind) {
		return // From and To are MiB, and no vCPU moved
	}
	// A scale-up (or a reconcile that added vCPUs) plugged, a scale-down
	// removed: the event says which by where it ended.
	h := m.plug
	if ev.Result < ev.From {
		h = m.unplug
	}
	for _, l := range ev.VCPULatencyMS {
		h.WithLabelValues(ev.VM).Observe(l / 1000)
	}
}

// vmCollector reads every VM's status at scrape time.
type vmCollector struct {
	act  *actuator.Actuator
	desc map[string]*prometheus.Desc
}

func newVMCollector(act *actuator.Actuator) *vmCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, append([]string{"vm"}, labels...), nil)
	}
	return &vmCollector{act: act, desc: map[string]*prometheus.Desc{
		"vcpus":         d("vm_vcpus", "vCPUs plugged, as the hypervisor reports."),
		"online":        d("vm_online_vcpus", "vCPUs online in the guest, from its latest report."),
		"target":        d("vm_target_vcpus", "vCPUs the last decision asked for."),
		"min":           d("vm_policy_min_vcpus", "The policy's minimum vCPUs."),
		"max":           d("vm_policy_max_vcpus", "The policy's maximum vCPUs."),
		"util":          d("vm_cpu_utilisation_ratio", "CPU demand divided by online vCPUs in the latest report (above 1: tasks waiting for a CPU)."),
		"demand":        d("vm_cpu_demand", "CPUs' worth of work wanted in the latest report: busy CPUs plus tasks waiting for a CPU."),
		"runq":          d("vm_runqueue_latency_seconds", "Run-queue latency (wake-up to running) over the latest report's interval, by percentile (50, 95, 99). A gauge, not a summary: the guest sends percentiles, not counts.", "percentile"),
		"steal":         d("vm_cpu_steal_ratio", "Share of the online vCPUs' time the hypervisor ran something else in the latest report (host contention)."),
		"memTotal":      d("vm_memory_total_bytes", "The guest's MemTotal in the latest report."),
		"memAvail":      d("vm_memory_available_bytes", "The guest's MemAvailable in the latest report."),
		"memBytes":      d("vm_memory_bytes", "The VM's memory as its hypervisor reports it: boot memory plus what the memory device adds (absent without a device)."),
		"memTarget":     d("vm_memory_target_bytes", "The memory the last memory decision asked for (absent while memory sizing is off)."),
		"memRequested":  d("vm_memory_requested_bytes", "What the VM's memory device has been asked for."),
		"swap":          d("vm_swap_pages_per_second", "The guest's swap traffic in the latest report, by direction (in, out).", "direction"),
		"resp":          d("vm_app_response_time_seconds", "An application's p95 response time in the latest report.", "app"),
		"sla":           d("vm_app_sla_seconds", "An application's SLA bound on response time: its percentile target, or else its mean.", "app"),
		"slaratio":      d("vm_app_response_time_sla_ratio", "An application's p95 response time divided by its SLA bound (above 1: SLA at risk).", "app"),
		"hotspot":       d("vm_hotspot", "1 when the last decision found the VM short of CPU, else 0."),
		"paused":        d("vm_paused", "1 when an operator paused scaling of the VM."),
		"connected":     d("vm_agent_connected", "1 when the VM's agent is connected."),
		"reachable":     d("vm_hypervisor_reachable", "1 when the VM's hypervisor answers."),
		"degraded":      d("vm_degraded", "1 when the VM's last scaling action failed."),
		"reports":       d("vm_reports_total", "Reports accepted from the VM's agent since the actuator started."),
		"fcPredicted":   d("vm_forecast_overload_predicted_ratio", "Mean forecast chance that an interval's demand exceeds the vCPUs decided for it, over about the last hour (decayed, half-life 1 h)."),
		"fcObserved":    d("vm_forecast_overload_observed_ratio", "Share of intervals whose demand exceeded the vCPUs decided for them, over the same decayed hour."),
		"fcCalibration": d("vm_forecast_calibration_ratio", "Observed over predicted overload (1: calibrated; above 1: overloaded more often than forecast). Absent until about 100 intervals were judged."),
		"slaCompliance": d("vm_sla_compliance_ratio", "Share of intervals with requests in which every application met its SLA, over about the last hour (decayed). Absent without an SLA."),
		"decisionTime":  d("vm_last_decision_timestamp_seconds", "Unix time of the VM's last decision."),
		"host_budget":   prometheus.NewDesc("hotplug_host_vcpu_budget", "Cap on the sum of vCPUs over all VMs; 0 means none.", nil, nil),
		"host_vcpus":    prometheus.NewDesc("hotplug_host_vcpus", "Sum of vCPUs plugged over all VMs.", nil, nil),
		"decisionRules": d("vm_last_decision_info", "The VM's last decision: always 1, with its action and rule as labels.", "action", "rule"),
	}}
}

// Describe implements prometheus.Collector.
func (c *vmCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.desc {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *vmCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(key string, v float64, labels ...string) {
		// Label values can come from a guest (application names): one
		// that is not UTF-8 is left out rather than failing the scrape.
		if m, err := prometheus.NewConstMetric(c.desc[key], prometheus.GaugeValue, finite(v), labels...); err == nil {
			ch <- m
		}
	}
	b := func(x bool) float64 {
		if x {
			return 1
		}
		return 0
	}
	for _, v := range c.act.VMs() {
		raw := v.Status()
		view := viewOf(raw)
		st, n := view.Status, v.Name()
		gauge("vcpus", float64(st.Current), n)
		gauge("online", float64(st.Online), n)
		gauge("target", float64(st.Target), n)
		gauge("min", float64(st.Policy.MinVCPUs), n)
		gauge("max", float64(st.Policy.MaxVCPUs), n)
		gauge("hotspot", b(view.Hotspot), n)
		gauge("paused", b(st.Paused), n)
		gauge("connected", b(st.Connected), n)
		gauge("reachable", b(st.Reachable), n)
		gauge("degraded", b(st.Degraded != ""), n)
		ch <- prometheus.MustNewConstMetric(c.desc["reports"], prometheus.CounterValue, float64(st.ReportsSeen), n)
		if !st.LastDecisionAt.IsZero() {
			gauge("decisionTime", float64(st.LastDecisionAt.UnixNano())/1e9, n)
			gauge("decisionRules", 1, n, st.LastDecision.Action.String(), st.LastDecision.Rule)
		}
		if acc := raw.Accuracy; acc.Intervals > 0 {
			gauge("fcPredicted", acc.Predicted, n)
			gauge("fcObserved", acc.Observed, n)
			if !math.IsNaN(acc.Calibration) {
				gauge("fcCalibration", acc.Calibration, n)
			}
		}
		if acc := raw.Accuracy; !math.IsNaN(acc.SLACompliance) && acc.SLAIntervals > 0 {
			gauge("slaCompliance", acc.SLACompliance, n)
		}
		if m := st.Memory; m != nil && m.Device != "" {
			gauge("memBytes", float64(m.Total), n)
			gauge("memRequested", float64(m.Requested), n)
			if m.Mode != "off" && m.Target > 0 {
				gauge("memTarget", float64(m.Target), n)
			}
		}
		if st.Signals.At.IsZero() {
			continue // no report yet: no measurement to show
		}
		gauge("util", st.Signals.Utilisation, n)
		gauge("steal", st.Signals.Steal, n)
		if st.Signals.MemTotal > 0 {
			gauge("memTotal", float64(st.Signals.MemTotal), n)
			gauge("memAvail", float64(st.Signals.MemAvailable), n)
		}
		gauge("swap", st.Signals.SwapIn, n, "in")
		gauge("swap", st.Signals.SwapOut, n, "out")
		gauge("demand", st.Signals.Demand, n)
		if st.Signals.RunQSource != "" {
			gauge("runq", st.Signals.RunQP50, n, "50")
			gauge("runq", st.Signals.RunQP95, n, "95")
			gauge("runq", st.Signals.RunQP99, n, "99")
		}
		seen := map[string]bool{}
		for _, a := range st.Signals.Apps {
			if seen[a.Name] {
				continue // a guest naming two applications alike must not break the scrape
			}
			seen[a.Name] = true
			gauge("resp", a.RespP95, n, a.Name)
			if sla := a.SLA(); sla > 0 {
				gauge("sla", sla, n, a.Name)
				gauge("slaratio", a.RespP95/sla, n, a.Name)
			}
		}
	}
	limit, used := c.act.Budget()
	ch <- prometheus.MustNewConstMetric(c.desc["host_budget"], prometheus.GaugeValue, float64(limit))
	ch <- prometheus.MustNewConstMetric(c.desc["host_vcpus"], prometheus.GaugeValue, float64(used))
}

// VMCollector is the collector of the per-VM gauges (nil before a Server
// was built on these metrics), for tests and linting.
func (m *Metrics) VMCollector() prometheus.Collector { return m.vms }
