package api

import (
	"strconv"

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

// ReadEvents reads one page of the event log at path.
func ReadEvents(path string, q EventQuery) (EventsPage, error) {
	p, err := eventlog.ReadPage(path, q.Filter, max(q.Limit, 1))
	page := EventsPage{Events: p.Events, SkippedLines: p.Skipped}
	if p.More && len(p.Events) > 0 {
		page.NextCursor = strconv.FormatUint(p.Events[len(p.Events)-1].Seq, 10)
	}
	return page, err
}
