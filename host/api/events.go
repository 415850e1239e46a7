package api

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/hotplugheaven/hotplug/host/eventlog"
)

// Paging limits of GET /v1/events.
const (
	DefaultEventsLimit = 100
	MaxEventsLimit     = 1000
	maxEventLine       = 4 << 20
)

// EventsPage is the answer to GET /v1/events.
type EventsPage struct {
	Events []eventlog.Event `json:"events"`
	// NextCursor fetches the next page (pass it as cursor). It is absent
	// when this page reached the end of the log; to wait for newer events,
	// pass the seq of the last event as cursor later, or use /v1/stream.
	NextCursor string `json:"next_cursor,omitempty"`
	// SkippedLines counts lines of the file that are not events.
	SkippedLines int `json:"skipped_lines,omitempty"`
}

// EventQuery selects a page of events.
type EventQuery struct {
	eventlog.Filter
	// After: only events with a greater seq (the cursor).
	After uint64
	// Limit is the page size, 1 to MaxEventsLimit.
	Limit int
	// IncludeStarted also returns the line the actuator writes when an
	// action starts (outcome "started"), bookkeeping for recovery after a
	// crash; by default only the line with the action's result is.
	IncludeStarted bool
}

// outcomeStarted is the event log's outcome of an action's first line.
const outcomeStarted = eventlog.OutcomeStarted

// parseEventQuery reads vm, since, until, cursor and limit; an error names
// the parameter.
func parseEventQuery(r *http.Request) (EventQuery, *apiError) {
	q := r.URL.Query()
	eq := EventQuery{Filter: eventlog.Filter{VM: q.Get("vm")}, Limit: DefaultEventsLimit}
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"since", &eq.Since}, {"until", &eq.Until}} {
		if v := q.Get(p.name); v != "" {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return eq, badRequest(p.name, fmt.Sprintf("want an RFC 3339 time such as 2024-05-01T12:00:00Z, got %q", v))
			}
			*p.dst = t
		}
	}
	if v := q.Get("cursor"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return eq, badRequest("cursor", fmt.Sprintf("want the next_cursor of a previous page (a number), got %q", v))
		}
		eq.After = n
	}
	if v := q.Get("started"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return eq, badRequest("started", fmt.Sprintf("want true or false, got %q", v))
		}
		eq.IncludeStarted = b
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxEventsLimit {
			return eq, badRequest("limit", fmt.Sprintf("must be a whole number from 1 to %d, got %q", MaxEventsLimit, v))
		}
		eq.Limit = n
	}
	return eq, nil
}

// ReadEvents reads one page of the event log at path. Only whole lines
// count: the last line may be an event being written right now.
func ReadEvents(path string, q EventQuery) (EventsPage, error) {
	page := EventsPage{Events: []eventlog.Event{}}
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return page, nil // no event yet
		}
		return page, fmt.Errorf("event log: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), maxEventLine)
	sc.Split(wholeLines)
	for sc.Scan() {
		line := sc.Bytes()
		if seq, ok := leadingSeq(line); ok && seq <= q.After {
			continue // before the cursor: no need to decode
		}
		var ev eventlog.Event
		if err := json.Unmarshal(line, &ev); err != nil || ev.Seq == 0 {
			page.SkippedLines++
			continue
		}
		if ev.Seq <= q.After || !matches(q, &ev) {
			continue
		}
		if len(page.Events) == q.Limit {
			page.NextCursor = strconv.FormatUint(page.Events[len(page.Events)-1].Seq, 10)
			return page, nil
		}
		page.Events = append(page.Events, ev)
	}
	if err := sc.Err(); err != nil {
		return page, fmt.Errorf("event log %s: %w", path, err)
	}
	return page, nil
}

func matches(q EventQuery, ev *eventlog.Event) bool {
	f := q.Filter
	return (q.IncludeStarted || ev.Outcome != outcomeStarted) &&
		(f.VM == "" || ev.VM == f.VM) &&
		(f.Since.IsZero() || !ev.Time.Before(f.Since)) &&
		(f.Until.IsZero() || ev.Time.Before(f.Until))
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

// leadingSeq reads the seq of a line the event log wrote (its first key),
// so pages far into a long log skip earlier lines without decoding them.
func leadingSeq(line []byte) (uint64, bool) {
	const prefix = `{"seq":`
	if !bytes.HasPrefix(line, []byte(prefix)) {
		return 0, false
	}
	rest := line[len(prefix):]
	end := bytes.IndexByte(rest, ',')
	if end < 0 {
		return 0, false
	}
	n, err := strconv.ParseUint(string(rest[:end]), 10, 64)
	return n, err == nil
}

// serveEvents is GET /v1/events.
func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	q, aerr := parseEventQuery(r)
	if aerr != nil {
		aerr.write(w)
		return
	}
	if q.VM != "" && s.act.VM(q.VM) == nil {
		// Events of a VM no longer configured are still in the log:
		// filtering on its name is allowed.
		s.log.Debug("events asked for a VM not configured", "vm", q.VM)
	}
	page, err := ReadEvents(s.eventLog, q)
	if err != nil {
		s.log.Error("reading the event log for the API", "error", err)
		writeError(w, http.StatusInternalServerError, "", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, page)
}
