package apiserver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotplugheaven/hotplug/host/actuator"
	"github.com/hotplugheaven/hotplug/host/api"
	"github.com/hotplugheaven/hotplug/host/engine"
	"github.com/hotplugheaven/hotplug/host/eventlog"
)

// blockingWriter is a ResponseWriter whose writes wait until released:
// a client that does not read.
type blockingWriter struct {
	header  http.Header
	release chan struct{}
	mu      sync.Mutex
	buf     bytes.Buffer
}

func newBlockingWriter() *blockingWriter {
	return &blockingWriter{header: http.Header{}, release: make(chan struct{})}
}

func (w *blockingWriter) Header() http.Header { return w.header }
func (w *blockingWriter) WriteHeader(int)     {}
func (w *blockingWriter) Flush()              {}
func (w *blockingWriter) Write(b []byte) (int, error) {
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(b)
}
func (w *blockingWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func streamServer(h *Hub) *Server {
	return &Server{hub: h, done: make(chan struct{}), log: hclog.NewNullLogger()}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A client that stops reading must not hold up the observer, and is told
// how many messages it missed once it reads again.
func TestStreamSlowClientIsToldWhatItMissed(t *testing.T) {
	h := NewHub()
	s := streamServer(h)
	w := newBlockingWriter()
	ctx, cancel := context.WithCancel(context.Background())
	req := httptest.NewRequestWithContext(ctx, "GET", "/v1/stream?types=decision", nil)
	done := make(chan struct{})
	go func() { s.serveStream(w, req); close(done) }()
	waitUntil(t, "the client to subscribe", func() bool { return h.Clients() == 1 })

	start := time.Now()
	const sent = clientBuffer + 44
	for i := range sent {
		h.Decision("web", engine.Decision{Rule: "steady", From: i, To: i}, time.Now())
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("publishing to a client that does not read took %v: the actuator would stall", d)
	}
	close(w.release)
	waitUntil(t, "the buffered messages", func() bool { return strings.Count(w.String(), "event: decision") == clientBuffer })
	cancel()
	<-done
	out := w.String()
	if !strings.Contains(out, "event: missed\ndata: {\"missed\":44}\n\n") {
		t.Fatalf("no missed message for the 44 dropped, got:\n%.600s", out)
	}
	if strings.Index(out, "event: missed") > strings.Index(out, "event: decision") {
		t.Error("the missed message should come before the next message delivered")
	}
	if h.Clients() != 0 {
		t.Errorf("%d clients after the request ended", h.Clients())
	}
}

// A client that stays behind for slowGrace is dropped, freeing its slot;
// one that falls behind briefly and catches up is not.
func TestStreamStuckClientIsDropped(t *testing.T) {
	h := NewHub()
	var mu sync.Mutex
	now := time.Unix(1e9, 0)
	h.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	s := streamServer(h)
	w := newBlockingWriter()
	req := httptest.NewRequest("GET", "/v1/stream", nil)
	done := make(chan struct{})
	go func() { s.serveStream(w, req); close(done) }()
	waitUntil(t, "the client to subscribe", func() bool { return h.Clients() == 1 })
	for range clientBuffer + 10 {
		h.Event(eventlog.Event{VM: "web", Kind: "scale_up"}, true)
	}
	advance(slowGrace - time.Millisecond)
	h.Event(eventlog.Event{VM: "web", Kind: "scale_up"}, true)
	if h.Clients() != 1 {
		t.Fatal("a client behind for less than slowGrace was dropped")
	}
	advance(time.Millisecond)
	h.Event(eventlog.Event{VM: "web", Kind: "scale_up"}, true)
	if h.Clients() != 0 {
		t.Fatalf("a client behind for %v is still subscribed", slowGrace)
	}
	close(w.release)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler of a dropped client did not return")
	}
}

// A guest whose every message is refused decides the metrics' counts,
// not the stream's volume: a few rejected messages a second, each saying
// how many were held back.
func TestStreamRejectedIsBoundedPerVM(t *testing.T) {
	h := NewHub()
	now := time.Unix(1e9, 0)
	h.now = func() time.Time { return now }
	c, err := h.subscribe("", map[string]bool{api.TypeRejected: true}, origin{transport: transportUnix})
	if err != nil {
		t.Fatal(err)
	}
	defer h.unsubscribe(c)
	for range 10_000 {
		h.Rejected("evil", actuator.RejectReplayed)
	}
	h.Rejected("honest", actuator.RejectMalformed) // another VM has its own budget
	if n := len(c.ch); n != rejectedBurst+1 {
		t.Fatalf("%d rejected messages for 10,000 refusals in an instant, want %d", n, rejectedBurst+1)
	}
	now = now.Add(rejectedEvery)
	h.Rejected("evil", actuator.RejectReplayed)
	var last api.RejectedMessage
	for len(c.ch) > 0 {
		m := <-c.ch
		if m.vm == "evil" {
			if err := json.Unmarshal(m.data, &last); err != nil {
				t.Fatal(err)
			}
		}
	}
	if want := uint64(10_000 - rejectedBurst); last.Suppressed != want {
		t.Fatalf("the next rejected message says %d held back, want %d", last.Suppressed, want)
	}
}

func TestStreamFiltersAndLimits(t *testing.T) {
	h := NewHub()
	s := streamServer(h)
	rec := httptest.NewRecorder()
	s.serveStream(rec, httptest.NewRequest("GET", "/v1/stream?types=report,bogus", nil))
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), `"field":"types"`) {
		t.Fatalf("unknown type: %d %s", rec.Code, rec.Body)
	}
	var held []*client
	for range maxClients {
		c, err := h.subscribe("", nil, origin{transport: transportUnix})
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	rec = httptest.NewRecorder()
	s.serveStream(rec, httptest.NewRequest("GET", "/v1/stream", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("client %d: status %d, want 503", maxClients+1, rec.Code)
	}
	for _, c := range held {
		h.unsubscribe(c)
	}

	// A client for one VM and one type gets only those.
	c, err := h.subscribe("db", map[string]bool{api.TypeEvent: true}, origin{transport: transportUnix})
	if err != nil {
		t.Fatal(err)
	}
	defer h.unsubscribe(c)
	h.Event(eventlog.Event{VM: "web", Kind: "scale_up"}, true)
	h.Rejected("db", actuator.RejectMalformed)
	h.Event(eventlog.Event{VM: "db", Kind: "scale_down"}, true)
	select {
	case m := <-c.ch:
		if m.vm != "db" || m.typ != api.TypeEvent || !strings.Contains(string(m.data), "scale_down") {
			t.Fatalf("got %s %s %s", m.typ, m.vm, m.data)
		}
	default:
		t.Fatal("no message for the subscribed VM and type")
	}
	if len(c.ch) != 0 {
		t.Fatalf("%d messages of other VMs or types delivered", len(c.ch))
	}
}

func TestHistoryKeepsTheLastPoints(t *testing.T) {
	h := NewHub()
	t0 := time.Now()
	for i := range historyLen + 10 {
		h.Report("web", actuator.Status{Name: "web", Online: 1 + i%3,
			Signals: actuator.Signals{At: t0.Add(time.Duration(i) * time.Second), Utilisation: float64(i)}})
	}
	pts := h.History("web")
	if len(pts) != historyLen || pts[0].Utilisation != 10 || pts[len(pts)-1].Utilisation != historyLen+9 {
		t.Fatalf("history: %d points, first %v, last %v", len(pts), pts[0].Utilisation, pts[len(pts)-1].Utilisation)
	}
	if got := h.History("nobody"); got == nil || len(got) != 0 {
		t.Fatalf("history of an unknown VM: %v", got)
	}
	// Points are kept compactly; what comes back prints as it went in.
	h.Report("db", actuator.Status{Online: 2, Current: 3, Signals: actuator.Signals{At: t0, Utilisation: 0.7, RunQ: actuator.RunQSignal{P95: 0.0021},
		Apps: []actuator.AppSignal{{Name: "web", RespP95: 0.123, SLAMean: 0.25}}}})
	want := api.Point{At: t0.Round(0).UTC(), Utilisation: 0.7, RunQP95: 0.0021, Online: 2, Current: 3, RespP95: 0.123, SLA: 0.25}
	if got := h.History("db")[0]; got != want {
		t.Fatalf("point %+v, want %+v", got, want)
	}
}

// The observer calls are on the VM goroutines' path: benchmark them with
// clients attached.
func BenchmarkHubReport(b *testing.B) {
	h := NewHub()
	for range 8 {
		c, _ := h.subscribe("", nil, origin{transport: transportUnix})
		go func() {
			for range c.ch {
			}
		}()
	}
	st := actuator.Status{Name: "web", Policy: engine.DefaultPolicy(), Online: 4, Current: 4,
		Signals: actuator.Signals{At: time.Now(), Utilisation: 0.7, RunQ: actuator.RunQSignal{Source: "schedstat", P95: 0.002}}}
	b.ReportAllocs()
	for b.Loop() {
		h.Report("web", st)
	}
}

// BenchmarkHubReportNoClients is the hub's cost per report when nobody
// watches the stream, the usual case: the history point only.
func BenchmarkHubReportNoClients(b *testing.B) {
	h := NewHub()
	st := actuator.Status{Name: "web", Policy: engine.DefaultPolicy(), Online: 4, Current: 4,
		Signals: actuator.Signals{At: time.Now(), Utilisation: 0.7, RunQ: actuator.RunQSignal{Source: "schedstat", P95: 0.002}}}
	b.ReportAllocs()
	for b.Loop() {
		h.Report("web", st)
	}
}

// BenchmarkHubHistoryPerVM is the live heap the hub keeps per VM once its
// history is full (an hour at 5 s), with the VM's policy: the API's share
// of the actuator's memory per VM. Run with -benchtime 1x.
func BenchmarkHubHistoryPerVM(b *testing.B) {
	const n = 200
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		h := NewHub()
		st := actuator.Status{Policy: engine.DefaultPolicy(), Online: 2, Current: 2,
			Signals: actuator.Signals{At: time.Now(), Utilisation: 0.7, RunQ: actuator.RunQSignal{P95: 0.002}}}
		for i := range n {
			vm := fmt.Sprintf("vm%d", i)
			for range historyLen {
				h.Report(vm, st)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heap-B/VM")
		runtime.KeepAlive(h)
	}
}
