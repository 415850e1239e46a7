package api

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/hotplugheaven/hotplug/host/eventlog"
)

// Paging limits of GET /v1/events.
const (
	DefaultEventsLimit = 100
	MaxEventsLimit     = 1000
)

// EventsPage is the answer to GET /v1/events.
type EventsPage struct {
	Events []eventlog.Event `json:"events"`
	// NextCursor fetches the next page (pass it as cursor). It is absent
	// when this page reached the end of the log; to wait for newer events,
	// pass the seq of the last event as cursor later, or use /v1/stream.
	NextCursor string `json:"next_cursor,omitempty"`
	// SkippedLines counts lines of the file read for this page that are
	// not events.
	SkippedLines int `json:"skipped_lines,omitempty"`
}

// EventQuery selects a page of events: the event log's filter (After is
// the cursor) and a page size, 1 to MaxEventsLimit.
type EventQuery struct {
	eventlog.Filter
	Limit int
}

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
		eq.WithStarted = b
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

// ReadEvents reads one page of the event log at path.
func ReadEvents(path string, q EventQuery) (EventsPage, error) {
	p, err := eventlog.ReadPage(path, q.Filter, max(q.Limit, 1))
	page := EventsPage{Events: p.Events, SkippedLines: p.Skipped}
	if p.More && len(p.Events) > 0 {
		page.NextCursor = strconv.FormatUint(p.Events[len(p.Events)-1].Seq, 10)
	}
	return page, err
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
