package apiserver_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/host/api"
	"github.com/hotplugheaven/hotplug/host/apiserver"
	"github.com/hotplugheaven/hotplug/host/apiserver/apitest"
	"github.com/hotplugheaven/hotplug/host/engine"
	"github.com/hotplugheaven/hotplug/host/eventlog"
)

const base = "http://actuator"

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// do sends a request over the rig's socket and returns status and body.
func do(t *testing.T, r *apitest.Rig, method, path, contentType, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := r.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestVMsShowStatusAndWhyTheyScaled(t *testing.T) {
	r := apitest.Start(t, apitest.Spec{Name: "web", Demand: 2.5}, apitest.Spec{Name: "db", Demand: 0.2})
	c := r.Client()
	var page api.EventsPage
	var err error
	apitest.WaitFor(t, 10*time.Second, "web's scale-up event", func() bool {
		page, err = c.Events(ctx(t), api.EventQuery{Filter: eventlog.Filter{VM: "web"}})
		return err == nil && len(page.Events) > 0
	})

	list, err := c.VMs(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(list.VMs) != 2 || list.VMs[0].Name != "web" || list.VMs[1].Name != "db" {
		t.Fatalf("vms: %+v", list.VMs)
	}
	if list.Host.VCPUs < 4 {
		t.Errorf("host vcpus %d, want web's and db's", list.Host.VCPUs)
	}

	// The scale-up's explanation: rule hotspot, on which samples.
	ev := page.Events[0]
	if ev.Kind != "scale_up" || ev.Rule != engine.RuleHotspot || ev.Outcome != eventlog.OutcomeOK || ev.To < 3 {
		t.Fatalf("first event: %+v", ev)
	}
	var sig struct {
		Evidence engine.Evidence `json:"evidence"`
	}
	if err := json.Unmarshal(ev.Signals, &sig); err != nil || sig.Evidence.Above < sig.Evidence.K || sig.Evidence.K != 2 {
		t.Fatalf("the event's evidence: %s", ev.Signals)
	}

	// Drive web into another hotspot it cannot act on (at max), so the
	// status shows a hotspot decision with its samples.
	r.VMs["web"].Guest.SetDemand(6)
	apitest.WaitFor(t, 10*time.Second, "web at max", func() bool { return r.VMs["web"].Guest.OnlineCount() == 4 })
	var v api.VM
	apitest.WaitFor(t, 10*time.Second, "a hotspot decision", func() bool {
		v, err = c.VM(ctx(t), "web")
		return err == nil && v.Hotspot && v.Explanation.Rule == engine.RuleAtLimit
	})
	x := v.Explanation
	if len(x.Samples) != 3 || x.K != 2 || x.N != 3 || x.Upper != 0.8 || !x.ForecastAbove || x.Above < 2 {
		t.Fatalf("explanation: %+v", x)
	}
	for i, s := range x.Samples {
		if s.Age != i-2 || s.Above != (s.Utilisation > 0.8) {
			t.Errorf("sample %d: %+v", i, s)
		}
	}
	if !strings.Contains(x.Text, "at-limit") || !strings.Contains(x.Text, "Above the upper threshold 80%") {
		t.Errorf("text: %s", x.Text)
	}
	if v.LastDecision.Action != engine.Hold || v.Current != 4 || v.Online != 4 || !v.Connected || v.Signals.RunQP95 <= 0 {
		t.Errorf("status: %+v", v.Status)
	}

	db, err := c.VM(ctx(t), "db")
	if err != nil || db.Hotspot || db.Current != 1 {
		t.Fatalf("db: %+v %v", db, err)
	}

	code, body := do(t, r, "GET", "/v1/vms/nope", "", "")
	if code != 404 || !strings.Contains(body, `"field":"id"`) || !strings.Contains(body, `no VM named \"nope\"`) {
		t.Fatalf("unknown VM: %d %s", code, body)
	}
	if code, _ := do(t, r, "DELETE", "/v1/vms/web", "", ""); code != http.StatusMethodNotAllowed {
		t.Fatalf("DELETE: %d", code)
	}
	if code, body := do(t, r, "GET", "/v1/nothing", "", ""); code != 404 || !strings.Contains(body, `"error"`) {
		t.Fatalf("unknown endpoint: %d %s", code, body)
	}
	h, err := c.Health(ctx(t))
	if err != nil || h.Status != "ok" || h.VMs != 2 {
		t.Fatalf("health: %+v %v", h, err)
	}
}

func TestPolicyIsValidatedAndNothingChangesOnError(t *testing.T) {
	r := apitest.Start(t, apitest.Spec{Name: "web"})
	c := r.Client()
	before, err := c.VM(ctx(t), "web")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, ctype, body string
		status            int
		field             string
	}{
		{"k above n", "application/json", `{"k": 9}`, 400, "k"},
		{"max below min", "application/json", `{"max_vcpus": 0}`, 400, "max_vcpus"},
		{"max beyond the VM's slots", "application/json", `{"max_vcpus": 9}`, 400, "max_vcpus"},
		{"min beyond the VM's slots", "application/json", `{"min_vcpus": 9, "max_vcpus": 9}`, 400, "min_vcpus"},
		{"another mode's key, bad", "application/json", `{"forecast_prior": "-1h"}`, 400, "forecast_prior"},
		{"unknown key", "application/json", `{"k": 2, "kk": 2}`, 400, "kk"},
		{"wrong type", "application/json", `{"k": "two"}`, 400, "k"},
		{"bad duration", "application/json", `{"interval": "soon"}`, 400, "interval"},
		{"number for a duration", "application/json", `{"cooldown_up": 30}`, 400, "cooldown_up"},
		{"unknown mode", "application/json", `{"mode": "magic"}`, 400, "mode"},
		{"not an object", "application/json", `[1, 2]`, 400, ""},
		{"not JSON", "application/json", `k=2`, 400, ""},
		{"form post", "application/x-www-form-urlencoded", `k=2`, 415, ""},
		{"no content type", "", `{"k": 2}`, 415, ""},
		{"too big", "application/json", `{"mode": "` + strings.Repeat("x", 70<<10) + `"}`, 413, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := do(t, r, "PUT", "/v1/vms/web/policy", tc.ctype, tc.body)
			var e api.Error
			if code != tc.status || json.Unmarshal([]byte(body), &e) != nil || e.Error == "" || e.Field != tc.field {
				t.Fatalf("got %d %s, want %d naming %q", code, body, tc.status, tc.field)
			}
			if tc.field != "" && !strings.HasPrefix(e.Error, tc.field+": ") {
				t.Errorf("message %q does not start with the field", e.Error)
			}
		})
	}
	after, err := c.VM(ctx(t), "web")
	if err != nil || after.Policy != before.Policy {
		t.Fatalf("policy changed by refused requests: %+v → %+v", before.Policy, after.Policy)
	}

	// A valid change: keys left out keep their values.
	v, err := c.SetPolicy(ctx(t), "web", map[string]any{"max_vcpus": 3, "cooldown_down": "1m"})
	if err != nil {
		t.Fatal(err)
	}
	want := before.Policy
	want.MaxVCPUs, want.CooldownDown = 3, engine.Duration(time.Minute)
	if v.Policy != want {
		t.Fatalf("policy after PUT: %+v, want %+v", v.Policy, want)
	}
	if _, err := c.SetPolicy(ctx(t), "web", map[string]any{"upper": 0.4}); err == nil ||
		err.(*api.ClientError).Field != "lower" {
		t.Fatalf("upper below lower: %v (the whole policy is checked, and lower is what no longer fits)", err)
	}
}

func TestPauseStopsScalingAndResumeRestartsIt(t *testing.T) {
	r := apitest.Start(t, apitest.Spec{Name: "web"})
	c := r.Client()
	g := r.VMs["web"].Guest
	v, err := c.Pause(ctx(t), "web")
	if err != nil || !v.Paused {
		t.Fatalf("pause: %+v %v", v.Status, err)
	}
	g.SetDemand(3)
	// Decisions go on while paused (and say scale up), nothing moves.
	apitest.WaitFor(t, 10*time.Second, "a scale-up decision while paused", func() bool {
		v, err = c.VM(ctx(t), "web")
		return err == nil && v.LastDecision.Action == engine.ScaleUp
	})
	time.Sleep(500 * time.Millisecond)
	if g.OnlineCount() != 1 || r.VMs["web"].QMP.Plugged() != 1 {
		t.Fatalf("scaled while paused: guest %d online, QEMU %d plugged", g.OnlineCount(), r.VMs["web"].QMP.Plugged())
	}
	if v, err = c.Resume(ctx(t), "web"); err != nil || v.Paused {
		t.Fatalf("resume: %+v %v", v.Status, err)
	}
	apitest.WaitFor(t, 10*time.Second, "scale-up after resume", func() bool { return g.OnlineCount() >= 3 })
	if _, err := c.Pause(ctx(t), "nope"); err == nil || err.(*api.ClientError).Status != 404 {
		t.Fatalf("pause of an unknown VM: %v", err)
	}
}

func TestSetVCPUsIsClampedByPolicy(t *testing.T) {
	r := apitest.Start(t, apitest.Spec{Name: "web", Max: 6, Demand: 0.5})
	c := r.Client()
	if _, err := c.Pause(ctx(t), "web"); err != nil {
		t.Fatal(err)
	}
	v, err := c.SetVCPUs(ctx(t), "web", 3)
	if err != nil || v.Current != 3 || r.VMs["web"].Guest.OnlineCount() != 3 {
		t.Fatalf("set 3: %+v %v (guest %d online)", v.Status, err, r.VMs["web"].Guest.OnlineCount())
	}
	// The policy max is 4: asking for 6 (QEMU has the slots) gives 4.
	v, err = c.SetVCPUs(ctx(t), "web", 6)
	if err != nil || v.Current != 4 || r.VMs["web"].QMP.Plugged() != 4 {
		t.Fatalf("set 6: %+v %v", v.Status, err)
	}
	page, err := c.Events(ctx(t), api.EventQuery{})
	if err != nil || len(page.Events) != 2 {
		t.Fatalf("events: %+v %v", page, err)
	}
	if ev := page.Events[1]; ev.Rule != "manual" || !strings.Contains(ev.Reason, "clamped to 4") {
		t.Fatalf("manual event: %+v", ev)
	}
	for _, tc := range []struct{ body, want string }{
		{`{"vcpus": 0}`, "vcpus: must be from 1 to 1024, got 0"},
		{`{}`, "vcpus: must be from 1 to 1024, got 0"},
		{`{"vcpus": 2.5}`, "vcpus: want a whole number"},
		{`{"vcpus": 2, "force": true}`, "force: unknown field"},
	} {
		code, body := do(t, r, "POST", "/v1/vms/web/vcpus", "application/json", tc.body)
		if code != 400 || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %d %s, want 400 %q", tc.body, code, body, tc.want)
		}
	}
}

func TestEventsEndpoint(t *testing.T) {
	r := apitest.Start(t, apitest.Spec{Name: "web"})
	c := r.Client()
	if _, err := c.Pause(ctx(t), "web"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for _, n := range []int{2, 3, 2, 1} {
		if _, err := c.SetVCPUs(ctx(t), "web", n); err != nil {
			t.Fatal(err)
		}
	}
	var seqs []uint64
	q := api.EventQuery{Filter: eventlog.Filter{VM: "web", Since: start.Add(-time.Second)}, Limit: 3}
	for {
		p, err := c.Events(ctx(t), q)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range p.Events {
			seqs = append(seqs, ev.Seq)
		}
		if p.NextCursor == "" {
			break
		}
		q.After = seqs[len(seqs)-1]
	}
	if len(seqs) != 4 || !(seqs[0] < seqs[1] && seqs[1] < seqs[2] && seqs[2] < seqs[3]) {
		t.Fatalf("paged seqs %v: want the 4 actions in order", seqs)
	}
	if code, body := do(t, r, "GET", "/v1/events?limit=5000", "", ""); code != 400 || !strings.Contains(body, `"field":"limit"`) {
		t.Fatalf("limit too big: %d %s", code, body)
	}
	p, err := c.Events(ctx(t), api.EventQuery{Filter: eventlog.Filter{Until: start.Add(-time.Second)}})
	if err != nil || len(p.Events) != 0 {
		t.Fatalf("until before the first: %+v %v", p, err)
	}
}

func TestStreamCarriesReportsDecisionsAndEvents(t *testing.T) {
	r := apitest.Start(t, apitest.Spec{Name: "web"}, apitest.Spec{Name: "db"})
	c := r.Client()
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got := map[string]int{}
	connected := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- c.Stream(sctx, "web", nil, func() { close(connected) }, func(typ string, data []byte) error {
			switch typ {
			case api.TypeReport:
				var v api.VM
				if err := json.Unmarshal(data, &v); err != nil || v.Name != "web" {
					t.Errorf("report %s: %v", data, err)
				}
			case api.TypeDecision:
				var d api.DecisionMessage
				if err := json.Unmarshal(data, &d); err != nil || d.VM != "web" || d.Decision.Rule == "" ||
					d.Explanation.Rule != d.Decision.Rule || d.Explanation.Text == "" {
					t.Errorf("decision %s: %v", data, err)
				}
			case api.TypeEvent:
				var e api.EventMessage
				if err := json.Unmarshal(data, &e); err != nil || !e.Committed || e.Event.VM != "web" || e.Event.Seq == 0 {
					t.Errorf("event %s: %v", data, err)
				}
			}
			got[typ]++
			if got[api.TypeEvent] > 0 && got[api.TypeReport] > 2 && got[api.TypeDecision] > 2 {
				return errors.New("done")
			}
			return nil
		})
	}()
	<-connected
	r.VMs["web"].Guest.SetDemand(3)
	r.VMs["db"].Guest.SetDemand(3)
	if err := <-errc; err == nil || err.Error() != "done" {
		t.Fatalf("stream ended: %v after %v", err, got)
	}
	if code, body := do(t, r, "GET", "/v1/stream?vm=nope", "", ""); code != 404 {
		t.Fatalf("stream of unknown VM: %d %s", code, body)
	}
}

func TestCrossOriginWritesAreRefused(t *testing.T) {
	r := apitest.Start(t, apitest.Spec{Name: "web"})
	req, _ := http.NewRequest("POST", base+"/v1/vms/web/pause", nil)
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	req.Header.Set("Origin", "https://evil.example")
	resp, err := r.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Fatalf("cross-site POST: %d, want 403", resp.StatusCode)
	}
	if v, _ := r.Client().VM(ctx(t), "web"); v.Paused {
		t.Fatal("a cross-site request paused the VM")
	}
}

func TestTCPNeedsTheToken(t *testing.T) {
	r := apitest.Start(t, apitest.Spec{Name: "web"})
	tok, err := apiserver.NewToken("0123456789abcdef0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Server.Serve(sctx, ln, apiserver.Listen{Token: tok}); close(done) }()
	defer func() { cancel(); <-done }()
	url := "http://" + ln.Addr().String()

	if _, err := api.NewTCPClient(url, "").VMs(ctx(t)); err == nil || err.(*api.ClientError).Status != 401 {
		t.Fatalf("no token: %v", err)
	}
	if _, err := api.NewTCPClient(url, "0123456789abcdef0123456789abcdeX").Pause(ctx(t), "web"); err == nil {
		t.Fatal("wrong token paused the VM")
	}
	good := api.NewTCPClient(url, "0123456789abcdef0123456789abcdef")
	if v, err := good.Pause(ctx(t), "web"); err != nil || !v.Paused {
		t.Fatalf("good token: %+v %v", v.Status, err)
	}
	if _, err := api.NewTCPClient(url, "").Health(ctx(t)); err != nil {
		t.Fatalf("healthz needs no token: %v", err)
	}
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("metrics without token: %d", resp.StatusCode)
	}
}

func TestDashboardIsSelfContained(t *testing.T) {
	r := apitest.Start(t, apitest.Spec{Name: "web"})
	for _, path := range []string{"/", "/app.js", "/app.css", "/vendor/uplot/uPlot.iife.min.js", "/vendor/uplot/uPlot.min.css", "/vendor/uplot/LICENSE"} {
		resp, err := r.HTTPClient().Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || len(b) < 100 {
			t.Fatalf("%s: %d, %d bytes", path, resp.StatusCode, len(b))
		}
		if path == "/" {
			if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
				t.Errorf("CSP %q", csp)
			}
		}
		// Nothing is loaded from elsewhere: no absolute URL in a src or
		// href, and no fetch/import of one.
		for _, bad := range []string{`src="http`, `href="http`, `src="//`, `href="//`, `fetch('http`, `import(`} {
			if path != "/vendor/uplot/LICENSE" && strings.Contains(string(b), bad) {
				t.Errorf("%s contains %q", path, bad)
			}
		}
	}
	if code, _ := do(t, r, "GET", "/vendor/", "", ""); code != 404 {
		t.Errorf("directory listing: %d", code)
	}
}
