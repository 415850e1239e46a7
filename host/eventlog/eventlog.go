// Package eventlog is the actuator's durable record of scaling events: JSON
// lines, one per event, appended and fsynced before the event counts as
// committed.
//
// A crash can leave at most one half-written line at the end of the file;
// Open cuts it off (and says so) so every line in the log is whole. A
// failed write is undone the same way, so a full disk never glues two events
// together. The package must not decide anything about scaling: it stores
// what the actuator tells it.
package eventlog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Kinds of event.
const (
	KindScaleUp   = "scale_up"   // vCPUs added on a decision or an operator's target
	KindScaleDown = "scale_down" // vCPUs removed
	// KindReconcile: the actuator found the guest's online CPUs and the
	// hypervisor's vCPUs apart and brought them together.
	KindReconcile = "reconcile"
	// KindRecover: at start, the actuator found an action the previous
	// run did not live to finish (see Unfinished) and records where the VM
	// really is, read from the hypervisor.
	KindRecover = "recover"
	// Memory resizes. Their From, To and Result are MiB of guest memory
	// (the hypervisor's total: boot memory plus what the device adds),
	// not vCPUs.
	KindMemoryGrow   = "memory_grow"
	KindMemoryShrink = "memory_shrink"
	// KindMemoryRecover: at start, the actuator found a memory request
	// the guest had not reached (an actuator killed during a resize) and
	// set it to what the guest has. From, To, Result are MiB.
	KindMemoryRecover = "memory_recover"
)

// IsMemory reports whether events of kind count memory (MiB), not vCPUs.
func IsMemory(kind string) bool {
	return kind == KindMemoryGrow || kind == KindMemoryShrink || kind == KindMemoryRecover
}

// Steps of an action, in Step.Name.
const (
	StepPlug    = "plug"    // the hypervisor adds a vCPU (one step per vCPU)
	StepOnline  = "online"  // the agent onlines the new CPUs (one step per batch)
	StepConfirm = "confirm" // the hypervisor's and the guest's state agree
	StepOffline = "offline" // the agent offlines CPUs before they are unplugged
	StepUnplug  = "unplug"  // the hypervisor removes a vCPU (one step per vCPU)
	// StepResize: the hypervisor's memory device is asked for the new
	// size, and reaches it (or what it reached when time ran out).
	StepResize = "resize"
	// Undoing a failed action, per CPU.
	StepRollbackUnplug = "rollback_unplug"
	StepRollbackOnline = "rollback_online"
)

// Outcomes of an event.
const (
	OutcomeOK         = "ok"          // every step succeeded and was confirmed
	OutcomeFailed     = "failed"      // a step failed and nothing changed
	OutcomeRolledBack = "rolled_back" // a step failed and earlier steps were undone
	OutcomePartial    = "partial"     // the VM moved, but not all the way to the target
	// OutcomeStarted marks an action's first line, written before it
	// touches anything; the action's final line names it in Action. A
	// started line with no final line is an action the actuator did not
	// live to finish (see Unfinished).
	OutcomeStarted = "started"
)

// Step is one stage of an action (the Step constants).
type Step struct {
	Name       string  `json:"name"`
	DurationMS float64 `json:"duration_ms"`
	OK         bool    `json:"ok"`
	Error      string  `json:"error,omitempty"`
}

// Event is one line of the log. Seq is its first field, so every line
// Append writes begins with {"seq":N, which the readers use to skip lines
// before a cursor without decoding them.
type Event struct {
	// Seq increases by one per committed event in this file.
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	VM   string    `json:"vm"`
	// Kind is one of the Kind constants.
	Kind string `json:"kind"`
	From int    `json:"from"`
	To   int    `json:"to"`
	// Result is the vCPU count the hypervisor reported afterwards.
	Result int    `json:"result"`
	Rule   string `json:"rule,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Signals holds the evidence behind the decision (engine.Evidence and
	// the latest measurements), kept as raw JSON so this package does not
	// depend on the engine.
	Signals json.RawMessage `json:"signals,omitempty"`
	Steps   []Step          `json:"steps,omitempty"`
	// VCPULatencyMS has, for each vCPU the action added or removed and
	// confirmed, how long it took: from its plug until the guest had it
	// online and the actuator saw it (for a batch, each vCPU of the batch
	// until the batch was confirmed), or from the guest's offline until its
	// unplug completed. Rolled-back vCPUs have none.
	VCPULatencyMS []float64 `json:"vcpu_latency_ms,omitempty"`
	Outcome       string    `json:"outcome"`
	DurationMS    float64   `json:"duration_ms"`
	// Action is the Seq of the action's started line, on its final line and
	// on the recover line of an interrupted action.
	Action uint64 `json:"action,omitempty"`
}

// Log appends events to one file. It is safe for concurrent use.
type Log struct {
	mu   sync.Mutex
	f    *os.File
	path string
	size int64
	seq  uint64
	lost uint64
	// Repaired is the number of bytes of a torn last line cut off by Open.
	Repaired int64
}

// Open opens (creating if needed) the log at path, cuts off a torn last line
// and learns the last sequence number.
func Open(path string) (*Log, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("event log: %w (check the directory exists and is writable)", err)
	}
	l := &Log{f: f, path: path}
	if err := l.recover(); err != nil {
		f.Close()
		return nil, err
	}
	return l, nil
}

// recover finds the end of the last whole line and the last sequence number.
func (l *Log) recover() error {
	st, err := l.f.Stat()
	if err != nil {
		return fmt.Errorf("event log %s: %w", l.path, err)
	}
	size := st.Size()
	// Read backwards in chunks until the last newline and the line before it.
	const chunk = 64 << 10
	var tail []byte
	end := size
	for end > 0 {
		start := max(0, end-chunk)
		buf := make([]byte, end-start)
		if _, err := l.f.ReadAt(buf, start); err != nil && err != io.EOF {
			return fmt.Errorf("event log %s: %w", l.path, err)
		}
		tail = append(buf, tail...)
		end = start
		// Enough once we hold the last newline and a whole line before it.
		if i := bytes.LastIndexByte(tail, '\n'); i >= 0 && (start == 0 || bytes.IndexByte(tail[:i], '\n') >= 0) {
			break
		}
	}
	whole := end + int64(bytes.LastIndexByte(tail, '\n')+1)
	if whole < size {
		if err := l.f.Truncate(whole); err != nil {
			return fmt.Errorf("event log %s: cutting torn last line: %w", l.path, err)
		}
		if err := l.f.Sync(); err != nil {
			return fmt.Errorf("event log %s: %w", l.path, err)
		}
		l.Repaired = size - whole
	}
	l.size = whole
	lines := bytes.Split(bytes.TrimRight(tail[:whole-end], "\n"), []byte("\n"))
	for i := len(lines) - 1; i >= 0; i-- {
		var ev Event
		if json.Unmarshal(lines[i], &ev) == nil && ev.Seq > 0 {
			l.seq = ev.Seq
			break
		}
	}
	return nil
}

// Append commits ev: it sets ev.Seq, writes one line and fsyncs. On error
// the file is cut back to its previous length and the loss counted.
func (l *Log) Append(ev *Event) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	ev.Seq = l.seq + 1
	line, err := json.Marshal(ev)
	if err != nil {
		l.lost++
		return fmt.Errorf("event log: encoding event: %w", err)
	}
	line = append(line, '\n')
	if _, err := l.f.WriteAt(line, l.size); err != nil {
		return l.undo(fmt.Errorf("event log %s: write: %w", l.path, err))
	}
	if err := l.f.Sync(); err != nil {
		return l.undo(fmt.Errorf("event log %s: fsync: %w", l.path, err))
	}
	l.size += int64(len(line))
	l.seq = ev.Seq
	return nil
}

func (l *Log) undo(err error) error {
	l.lost++
	if terr := l.f.Truncate(l.size); terr != nil {
		err = errors.Join(err, fmt.Errorf("and could not cut back the partial line: %w", terr))
	}
	return err
}

// Lost is the number of events that could not be committed.
func (l *Log) Lost() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lost
}

// Path is the file's path.
func (l *Log) Path() string { return l.path }

// Close closes the file.
func (l *Log) Close() error { return l.f.Close() }

// Unfinished returns the started lines of vm's actions that have no final
// line: the actions an actuator was stopped in the middle of.
func Unfinished(events []Event, vm string) []Event {
	open := map[uint64]Event{}
	var order []uint64
	for _, ev := range events {
		if ev.VM != vm {
			continue
		}
		if ev.Outcome == OutcomeStarted {
			open[ev.Seq] = ev
			order = append(order, ev.Seq)
			continue
		}
		delete(open, ev.Action)
	}
	var out []Event
	for _, seq := range order {
		if ev, ok := open[seq]; ok {
			out = append(out, ev)
		}
	}
	return out
}
