package apiserver

import (
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/host/api"
	"github.com/hotplugheaven/hotplug/host/eventlog"
)

// writeLog writes n events alternating between VMs a and b, one minute
// apart from t0, and returns the path.
func writeLog(t testing.TB, n int, t0 time.Time) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "events.jsonl")
	l, err := eventlog.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		vm := []string{"a", "b"}[i%2]
		if err := l.Append(&eventlog.Event{Time: t0.Add(time.Duration(i) * time.Minute), VM: vm, Kind: "scale_up",
			From: 1, To: 2, Result: 2, Rule: "hotspot", Reason: "busy", Outcome: eventlog.OutcomeOK,
			Steps: []eventlog.Step{{Name: "plug", DurationMS: 5, OK: true}}}); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	return path
}

func TestReadEventsPagesWithoutGapsOrRepeats(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	path := writeLog(t, 25, t0)
	// A line being written right now, and a hand edit.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("# note\n{\"seq\":26,\"vm\":\"a\"")
	f.Close()

	tests := []struct {
		name   string
		filter eventlog.Filter
		limit  int
		want   []uint64
	}{
		{"all in pages of 7", eventlog.Filter{}, 7, seqs(1, 25, 1)},
		{"one VM", eventlog.Filter{VM: "b"}, 4, seqs(2, 24, 2)},
		{"time window", eventlog.Filter{Since: t0.Add(10 * time.Minute), Until: t0.Add(15 * time.Minute)}, 2, seqs(11, 15, 1)},
		{"VM and window", eventlog.Filter{VM: "a", Since: t0.Add(20 * time.Minute)}, 100, seqs(21, 25, 2)},
		{"nothing", eventlog.Filter{VM: "c"}, 5, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []uint64
			q := api.EventQuery{Filter: tc.filter, Limit: tc.limit}
			for pages := 0; ; pages++ {
				if pages > 30 {
					t.Fatal("paging does not end")
				}
				p, err := api.ReadEvents(path, q)
				if err != nil {
					t.Fatal(err)
				}
				if len(p.Events) > tc.limit {
					t.Fatalf("page of %d events, limit %d", len(p.Events), tc.limit)
				}
				if p.NextCursor == "" && p.SkippedLines != 1 {
					t.Errorf("last page skipped %d lines, want the one note (the torn tail is not a line yet)", p.SkippedLines)
				}
				for _, ev := range p.Events {
					got = append(got, ev.Seq)
				}
				if p.NextCursor == "" {
					break
				}
				fmt.Sscan(p.NextCursor, &q.After)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got seqs %v, want %v", got, tc.want)
			}
		})
	}
}

func seqs(from, to, step uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s += step {
		out = append(out, s)
	}
	return out
}

// An action's first line (outcome "started", written before it acts, for
// recovery) is bookkeeping: left out unless asked for.
func TestReadEventsLeavesOutStartedLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	l, err := eventlog.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, outcome := range []string{eventlog.OutcomeStarted, eventlog.OutcomeOK} {
		l.Append(&eventlog.Event{Time: time.Now(), VM: "a", Kind: "scale_up", From: 1, To: 2, Outcome: outcome})
	}
	l.Close()
	p, err := api.ReadEvents(path, api.EventQuery{Limit: 10})
	if err != nil || len(p.Events) != 1 || p.Events[0].Outcome != eventlog.OutcomeOK {
		t.Fatalf("default: %+v %v", p.Events, err)
	}
	p, err = api.ReadEvents(path, api.EventQuery{Limit: 10, Filter: eventlog.Filter{WithStarted: true}})
	if err != nil || len(p.Events) != 2 || p.Events[0].Outcome != "started" {
		t.Fatalf("with started: %+v %v", p.Events, err)
	}
}

func TestReadEventsMissingLogIsEmpty(t *testing.T) {
	p, err := api.ReadEvents(filepath.Join(t.TempDir(), "none.jsonl"), api.EventQuery{Limit: 10})
	if err != nil || p.Events == nil || len(p.Events) != 0 {
		t.Fatalf("got %+v, %v; want an empty page", p, err)
	}
}

func TestEventQueryErrorsNameTheParameter(t *testing.T) {
	for _, tc := range []struct{ query, field string }{
		{"since=yesterday", "since"},
		{"until=2025-13-01T00:00:00Z", "until"},
		{"cursor=-1", "cursor"},
		{"limit=0", "limit"},
		{"limit=1001", "limit"},
		{"limit=ten", "limit"},
		{"started=maybe", "started"},
	} {
		_, err := parseEventQuery(httptest.NewRequest("GET", "/v1/events?"+tc.query, nil))
		if err == nil || err.Field != tc.field || err.status != 400 || !strings.HasPrefix(err.Error.Error, tc.field+": ") {
			t.Errorf("%s: got %+v, want a 400 naming %s", tc.query, err, tc.field)
		}
	}
	q, err := parseEventQuery(httptest.NewRequest("GET", "/v1/events?vm=a&since=2025-01-01T00:00:00Z&cursor=12&limit=1000&started=true", nil))
	if err != nil || q.VM != "a" || q.After != 12 || q.Limit != 1000 || q.Since.IsZero() || !q.WithStarted {
		t.Fatalf("good query: %+v %v", q, err)
	}
}

// A page deep into a long log: the cursor skips earlier lines without
// decoding them.
func BenchmarkReadEventsLastPage(b *testing.B) {
	path := writeLog(b, 20000, time.Now().Add(-24*time.Hour))
	q := api.EventQuery{Filter: eventlog.Filter{After: 19900}, Limit: 100}
	for b.Loop() {
		p, err := api.ReadEvents(path, q)
		if err != nil || len(p.Events) != 100 {
			b.Fatal(err, len(p.Events))
		}
	}
}
