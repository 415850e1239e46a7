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
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
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

// Step is one stage of an action (plug, online, confirm, offline, unplug…).
type Step struct {
	Name       string  `json:"name"`
	DurationMS float64 `json:"duration_ms"`
	OK         bool    `json:"ok"`
	Error      string  `json:"error,omitempty"`
}

// Event is one line of the log.
type Event struct {
	// Seq increases by one per committed event in this file.
	Seq  uint64    `json:"seq"`
	Time time.Time `json:"time"`
	VM   string    `json:"vm"`
	// Kind is scale_up, scale_down, reconcile or rollback.
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
	Signals    json.RawMessage `json:"signals,omitempty"`
	Steps      []Step          `json:"steps,omitempty"`
	Outcome    string          `json:"outcome"`
	DurationMS float64         `json:"duration_ms"`
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

// Filter selects events when reading.
type Filter struct {
	VM    string    // empty: all VMs
	Since time.Time // zero: from the start
	Until time.Time // zero: to the end
	// WithStarted includes actions' started lines, which are bookkeeping
	// for recovery; by default only final lines are returned.
	WithStarted bool
}

func (f Filter) match(ev *Event) bool {
	return (f.WithStarted || ev.Outcome != OutcomeStarted) &&
		(f.VM == "" || ev.VM == f.VM) &&
		(f.Since.IsZero() || !ev.Time.Before(f.Since)) &&
		(f.Until.IsZero() || ev.Time.Before(f.Until))
}

// Read returns the events in r that match f, in order. Lines that are not
// events (a torn tail being written right now, hand edits) are skipped and
// counted.
func Read(r io.Reader, f Filter) (events []Event, skipped int, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var ev Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil || ev.Seq == 0 {
			skipped++
			continue
		}
		if f.match(&ev) {
			events = append(events, ev)
		}
	}
	return events, skipped, sc.Err()
}

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

// ReadFile reads the log at path.
func ReadFile(path string, f Filter) ([]Event, int, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("event log: %w", err)
	}
	defer file.Close()
	return Read(file, f)
}
