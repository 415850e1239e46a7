package actuator

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/hotplugheaven/hotplug/host/engine"
	"github.com/hotplugheaven/hotplug/host/eventlog"
)

// record collects the steps of one event.
type record struct {
	ev    eventlog.Event
	start time.Time
	// result is what the event's Result is when written; nil: the
	// hypervisor's vCPUs.
	result func() int
}

func (r *record) resultOr(l *loop) int {
	if r.result != nil {
		return r.result()
	}
	return l.hv.current
}

func (r *record) step(name string, start time.Time, err error) error {
	s := eventlog.Step{Name: name, DurationMS: ms(time.Since(start)), OK: err == nil}
	if err != nil {
		s.Error = err.Error()
	}
	r.ev.Steps = append(r.ev.Steps, s)
	return err
}

// latency records one vCPU added or removed, from since until now.
func (r *record) latency(since time.Time) {
	r.ev.VCPULatencyMS = append(r.ev.VCPULatencyMS, ms(time.Since(since)))
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// signals is what the event log keeps about the decision's inputs.
type signals struct {
	Evidence engine.Evidence `json:"evidence"`
	Online   int             `json:"online"`
	Busy     float64         `json:"busy_cpus"`
	Waiting  float64         `json:"waiting_tasks"`
	Load1    float64         `json:"load1"`
	ReportAt time.Time       `json:"report_at,omitempty"`
}

func (l *loop) newRecord(kind string, d engine.Decision) *record {
	r := &record{start: time.Now()}
	r.ev = eventlog.Event{Time: r.start, VM: l.vm.name, Kind: kind, From: l.hv.current, To: d.To, Rule: d.Rule, Reason: d.Reason}
	sig := signals{Evidence: d.Evidence}
	if last := l.agent.last; last != nil {
		s := sampleOf(last, l.agent.lastAt)
		sig.Online, sig.Busy, sig.Waiting, sig.Load1, sig.ReportAt = s.Online, s.Busy, s.Waiting, last.Load1, l.agent.lastAt
	}
	r.ev.Signals, _ = json.Marshal(sig)
	return r
}

// started writes the action's first line before anything is touched, so
// that an actuator killed in the middle leaves a trace the next one finds
// (see reconcile).
func (l *loop) started(r *record) {
	v := l.vm
	ev := r.ev
	ev.Outcome, ev.Result = eventlog.OutcomeStarted, r.resultOr(l)
	if err := v.env.events.Append(&ev); err != nil {
		v.log.Error("scaling event NOT recorded", "error", err)
		v.env.obs.event(ev, false)
		return
	}
	r.ev.Action = ev.Seq
}

// commit writes the event. A failure to write is logged loudly and counted
// by the event log; scaling goes on.
func (l *loop) commit(r *record) {
	v := l.vm
	r.ev.Result = r.resultOr(l)
	r.ev.DurationMS = ms(time.Since(r.start))
	err := v.env.events.Append(&r.ev)
	if err != nil {
		v.log.Error("scaling event NOT recorded", "error", err, "event", fmt.Sprintf("%+v", r.ev))
	}
	v.env.obs.event(r.ev, err == nil)
	v.log.Info("scaling event", "kind", r.ev.Kind, "from", r.ev.From, "to", r.ev.To, "result", r.ev.Result,
		"outcome", r.ev.Outcome, "rule", r.ev.Rule, "reason", r.ev.Reason, "duration_ms", r.ev.DurationMS)
}

// recovered writes one recover line per interrupted action, saying what
// state was found and what was done (rec, when reconcile had to act).
func (l *loop) recovered(found string, rec *record) {
	for _, u := range l.unfinished {
		r := &record{start: time.Now()}
		r.ev = eventlog.Event{Time: r.start, VM: l.vm.name, Kind: "recover", From: u.Result, To: l.hv.current, Rule: "reconcile",
			Action: u.Seq, Outcome: eventlog.OutcomeOK,
			Reason: fmt.Sprintf("actuator stopped during %s %d→%d (action %d); hypervisor has %d vCPUs; %s",
				u.Kind, u.From, u.To, u.Seq, l.hv.current, found)}
		if rec != nil {
			r.ev.Steps, r.ev.Outcome = rec.ev.Steps, rec.ev.Outcome
		}
		l.commit(r)
	}
	l.unfinished = nil
}
