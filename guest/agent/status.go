package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hotplugheaven/hotplug/guest/collector"
	"github.com/hotplugheaven/hotplug/proto"
)

// DefaultStatusFile is where hotplug-agent writes what it sees, for
// `hotplug-agent status` inside the guest when the host is unreachable.
const DefaultStatusFile = "/run/hotplug-agent/status.json"

// StatusFile is the content of the status file. Field names are read by
// `hotplug-agent status --json` users: keep them stable.
type StatusFile struct {
	AgentVersion string    `json:"agent_version"`
	PID          int       `json:"pid"`
	WrittenAt    time.Time `json:"written_at"`
	// IntervalSeconds is the sampling interval in force (the actuator may
	// have changed it); the file is rewritten every interval.
	IntervalSeconds float64 `json:"interval_seconds"`
	Transport       string  `json:"transport"`
	Connected       bool    `json:"connected"`
	// LastError is the last failure to connect, to send or to sample.
	LastError      string `json:"last_error,omitempty"`
	ReportsSent    uint64 `json:"reports_sent"`
	ReportsDropped uint64 `json:"reports_dropped"`
	// ReportsQueued wait for the actuator (at most the queue size).
	ReportsQueued int           `json:"reports_queued"`
	Sources       []SourceState `json:"sources"`
	// Extras are the measurement sources beyond /proc and /sys (run-queue
	// latency, application logs); what they gave is in LastReport.
	Extras     []string       `json:"extras,omitempty"`
	LastReport *ReportSummary `json:"last_report,omitempty"`
}

// SourceState is one kernel file the collector reads.
type SourceState struct {
	Name  string `json:"name"`
	Path  string `json:"path"`
	InUse bool   `json:"in_use"`
	// Error says why the source is not used, or how its data is degraded.
	Error string `json:"error,omitempty"`
}

// ReportSummary is the gist of the last report sampled (sent or not).
type ReportSummary struct {
	Seq               uint64    `json:"seq"`
	At                time.Time `json:"at"`
	Online            string    `json:"online"`  // CPU list, e.g. "0-3"
	Present           string    `json:"present"` // CPU list
	BusyCPUs          float64   `json:"busy_cpus"`
	WaitingTasks      float64   `json:"waiting_tasks"`
	Load1             float64   `json:"load1"`
	PSISomeAvg10      float64   `json:"psi_cpu_some_avg10,omitempty"`
	RunQSource        string    `json:"runq_source,omitempty"`
	RunQP95Seconds    float64   `json:"runq_p95_seconds,omitempty"`
	Apps              []string  `json:"apps,omitempty"`
	MemAvailableBytes uint64    `json:"mem_available_bytes"`
}

// StatusWriter writes the status file. A nil *StatusWriter writes nothing.
type StatusWriter struct {
	path    string
	mu      sync.Mutex
	lastErr string
}

// NewStatusWriter returns a writer for path, or nil when path is empty
// (no status file).
func NewStatusWriter(path string) *StatusWriter {
	if path == "" {
		return nil
	}
	return &StatusWriter{path: path}
}

// write records a's state. It runs in the sampling loop (the Sampler's
// only user) and never fails the sample: a write error is logged once
// per distinct message.
func (w *StatusWriter) write(a *Agent) {
	if w == nil {
		return
	}
	st := a.Status()
	f := StatusFile{AgentVersion: a.cfg.Version, PID: os.Getpid(), WrittenAt: time.Now(),
		IntervalSeconds: a.getInterval().Seconds(), Transport: st.Transport, Connected: st.Connected,
		LastError: st.LastError, ReportsSent: st.Sent, ReportsDropped: st.Dropped, ReportsQueued: a.queue.len(),
		Sources: []SourceState{}}
	for _, s := range a.sampler.Sources() {
		if errors.Is(s.Err, collector.ErrNotSampled) {
			continue
		}
		ss := SourceState{Name: s.Name, Path: s.Path, InUse: s.InUse}
		if s.Err != nil {
			ss.Error = s.Err.Error()
		}
		f.Sources = append(f.Sources, ss)
	}
	for _, x := range a.cfg.Collector.Extra {
		f.Extras = append(f.Extras, x.Name())
	}
	if r := st.LastReport; r != nil {
		f.LastReport = summarise(r)
	}
	err := w.save(f)
	w.mu.Lock()
	defer w.mu.Unlock()
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if msg != w.lastErr {
		if err != nil {
			a.log.Warn("cannot write the status file (hotplug-agent status will be stale)", "path", w.path, "error", err)
		} else {
			a.log.Info("status file written again", "path", w.path)
		}
		w.lastErr = msg
	}
}

func summarise(r *proto.Report) *ReportSummary {
	s := &ReportSummary{Seq: r.Seq, At: time.Unix(0, r.WallUnixNanos), Online: r.Online.String(), Present: r.Present.String(),
		Load1: r.Load1, MemAvailableBytes: r.MemAvailableBytes,
		BusyCPUs: r.BusyCPUs(), WaitingTasks: r.WaitingTasks()}
	if r.PSI != nil {
		s.PSISomeAvg10 = r.PSI.SomeAvg10
	}
	if q := r.RunQueue; q != nil {
		s.RunQSource, s.RunQP95Seconds = q.Source, float64(q.P95Nanos)/1e9
	}
	for _, a := range r.Apps {
		s.Apps = append(s.Apps, a.Name)
	}
	return s
}

// save writes the file atomically: a reader sees the old or the new
// status, never half of one.
func (w *StatusWriter) save(f StatusFile) error {
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(w.path), 0o755); err != nil {
		return err
	}
	tmp := w.path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, w.path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("replacing %s: %w", w.path, err)
	}
	return nil
}

// ReadStatusFile reads a status file written by an agent.
func ReadStatusFile(path string) (StatusFile, error) {
	var f StatusFile
	b, err := os.ReadFile(path)
	if err != nil {
		return f, err
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return f, fmt.Errorf("%s: not a status file: %w", path, err)
	}
	return f, nil
}

// Stale reports whether the agent that wrote f looks stopped at now: it
// rewrites the file every interval.
func (f StatusFile) Stale(now time.Time) bool {
	return now.Sub(f.WrittenAt) > 3*time.Duration(f.IntervalSeconds*float64(time.Second))+10*time.Second
}
