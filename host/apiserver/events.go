package apiserver

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/hotplugheaven/hotplug/host/api"
	"github.com/hotplugheaven/hotplug/host/eventlog"
)

// parseEventQuery reads vm, since, until, cursor and limit; an error names
// the parameter.
func parseEventQuery(r *http.Request) (api.EventQuery, *apiError) {
	q := r.URL.Query()
	eq := api.EventQuery{Filter: eventlog.Filter{VM: q.Get("vm")}, Limit: api.DefaultEventsLimit}
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
		if err != nil || n < 1 || n > api.MaxEventsLimit {
			return eq, badRequest("limit", fmt.Sprintf("must be a whole number from 1 to %d, got %q", api.MaxEventsLimit, v))
		}
		eq.Limit = n
	}
	return eq, nil
}

// serveEvents is GET /v1/events.
func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	q, aerr := parseEventQuery(r)
	if aerr != nil {
		aerr.write(w)
		return
	}
	if q.VM != "" && s.act.VM(q.VM) == nil {
		// Events of a api.VM no longer configured are still in the log:
		// filtering on its name is allowed.
		s.log.Debug("events asked for a api.VM not configured", "vm", q.VM)
	}
	page, err := api.ReadEvents(s.eventLog, q)
	if err != nil {
		s.log.Error("reading the event log for the API", "error", err)
		writeError(w, http.StatusInternalServerError, "", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, page)
}
