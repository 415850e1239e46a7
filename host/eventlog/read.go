package eventlog

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"
)

// MaxLine is the longest line the readers accept; a longer one is an error,
// not an event (the actuator's events are a few kilobytes).
const MaxLine = 4 << 20

// Filter selects events when reading.
type Filter struct {
	VM    string    // empty: all VMs
	Since time.Time // zero: from the start
	Until time.Time // zero: to the end
	// After is a cursor: only events with a greater Seq.
	After uint64
	// WithStarted includes actions' started lines, which are bookkeeping
	// for recovery; by default only final lines are returned.
	WithStarted bool
}

func (f Filter) match(ev *Event) bool {
	return ev.Seq > f.After &&
		(f.WithStarted || ev.Outcome != OutcomeStarted) &&
		(f.VM == "" || ev.VM == f.VM) &&
		(f.Since.IsZero() || !ev.Time.Before(f.Since)) &&
		(f.Until.IsZero() || ev.Time.Before(f.Until))
}

// scan calls each for every line of r that is an event matching f, until
// each returns false. Lines that are not events (hand edits, a foreign
// file) are counted as skipped. With whole, an unterminated last line is
// left alone: in a live log it is an event being written right now.
// Without, it is read like any other (a torn tail in a copy of a log that
// Open has not repaired counts as skipped).
func scan(r io.Reader, f Filter, whole bool, each func(Event) bool) (skipped int, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), MaxLine)
	if whole {
		sc.Split(wholeLines)
	}
	for sc.Scan() {
		line := sc.Bytes()
		if seq, ok := leadingSeq(line); ok && seq <= f.After {
			continue // before the cursor: no need to decode
		}
		var ev Event
		if err := json.Unmarshal(line, &ev); err != nil || ev.Seq == 0 {
			skipped++
			continue
		}
		if f.match(&ev) && !each(ev) {
			break
		}
	}
	return skipped, sc.Err()
}

// wholeLines is bufio.ScanLines without the final unterminated line.
func wholeLines(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF {
		return len(data), nil, io.EOF
	}
	return 0, nil, nil
}

// leadingSeq reads the seq of a line Append wrote (its first key).
func leadingSeq(line []byte) (uint64, bool) {
	const prefix = `{"seq":`
	rest, ok := bytes.CutPrefix(line, []byte(prefix))
	if !ok {
		return 0, false
	}
	end := bytes.IndexByte(rest, ',')
	if end < 0 {
		return 0, false
	}
	n, err := strconv.ParseUint(string(rest[:end]), 10, 64)
	return n, err == nil
}

// Read returns the events in r that match f, in order, and how many lines
// were not events, an unterminated last one included.
func Read(r io.Reader, f Filter) (events []Event, skipped int, err error) {
	skipped, err = scan(r, f, false, func(ev Event) bool { events = append(events, ev); return true })
	return events, skipped, err
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

// Page is one page of a log.
type Page struct {
	Events []Event
	// More says events matching the filter follow this page: read on with
	// Filter.After set to the last event's Seq.
	More bool
	// Skipped counts lines read that are not events.
	Skipped int
}

// ReadPage reads up to limit events matching f from the live log at path,
// whole lines only. A log that does not exist yet is empty.
func ReadPage(path string, f Filter, limit int) (Page, error) {
	page := Page{Events: []Event{}}
	if limit < 1 {
		return page, fmt.Errorf("event log: page limit %d, want at least 1", limit)
	}
	file, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return page, nil // no event yet
	}
	if err != nil {
		return page, fmt.Errorf("event log: %w", err)
	}
	defer file.Close()
	page.Skipped, err = scan(file, f, true, func(ev Event) bool {
		if len(page.Events) == limit {
			page.More = true
			return false
		}
		page.Events = append(page.Events, ev)
		return true
	})
	if err != nil {
		return page, fmt.Errorf("event log %s: %w", path, err)
	}
	return page, nil
}

// Follow calls each for every event of the log at path that matches f, in
// order: those already there, then, polling every interval, each new one
// as soon as its line is whole, until ctx ends (then it returns nil). It
// reads the file only from where it left off.
func Follow(ctx context.Context, path string, f Filter, interval time.Duration, each func(Event)) (skipped int, err error) {
	file, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("event log: %w", err)
	}
	defer file.Close()
	var offset int64
	buf := make([]byte, 64<<10)
	var pending []byte
	for {
		for {
			n, rerr := file.ReadAt(buf, offset)
			offset += int64(n)
			pending = append(pending, buf[:n]...)
			if rerr != nil || n == 0 {
				break
			}
		}
		if i := bytes.LastIndexByte(pending, '\n'); i >= 0 {
			s, err := scan(bytes.NewReader(pending[:i+1]), f, true, func(ev Event) bool {
				each(ev)
				f.After = ev.Seq
				return true
			})
			skipped += s
			if err != nil {
				return skipped, fmt.Errorf("event log %s: %w", path, err)
			}
			pending = append(pending[:0], pending[i+1:]...)
		}
		if len(pending) > MaxLine {
			return skipped, fmt.Errorf("event log %s: a line longer than %d bytes", path, MaxLine)
		}
		select {
		case <-ctx.Done():
			return skipped, nil
		case <-time.After(interval):
		}
	}
}
