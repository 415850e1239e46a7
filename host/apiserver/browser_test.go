package apiserver_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/hotplugheaven/hotplug/host/api"
	"github.com/hotplugheaven/hotplug/host/apiserver/apitest"
	"github.com/hotplugheaven/hotplug/host/engine"
	"github.com/hotplugheaven/hotplug/host/memory"
)

// chartState is what the page's chart of a VM holds, read from
// window.hotplug.
type chartState struct {
	Times   []float64 `json:"times"`
	VCPUs   []float64 `json:"vcpus"`
	Drawn   int       `json:"drawn"`
	Markers []struct {
		Kind  string  `json:"kind"`
		Title string  `json:"title"`
		X     float64 `json:"x"`
		Y     float64 `json:"y"`
	} `json:"markers"`
	Events []struct {
		Time   time.Time `json:"time"`
		Kind   string    `json:"kind"`
		Reason string    `json:"reason"`
		From   int       `json:"from"`
		To     int       `json:"to"`
	} `json:"events"`
}

// chartJS returns the state of the chart of vm when ready(c) holds, else
// false (for Poll).
const chartJS = `(() => {
	const c = window.hotplug && window.hotplug.charts.get(%q);
	if (!c) return false;
	const s = {
		times: c.data[0], vcpus: c.data[3], drawn: c.u.data[0].length,
		events: c.events.map(e => ({time: e.time, kind: e.kind, reason: e.reason, from: e.from, to: e.to})),
		markers: [...c.el.querySelectorAll('.marker')].map(m => {
			const r = m.getBoundingClientRect();
			return {kind: m.dataset.kind, title: m.title, x: r.left + r.width / 2, y: r.top + r.height / 2};
		}),
	};
	return (%s) ? s : false;
})()`

func pollChart(t *testing.T, ctx context.Context, vm, cond string) chartState {
	t.Helper()
	st, err := chromedp.Run(ctx, chromedp.Poll[chartState](fmt.Sprintf(chartJS, vm, cond),
		chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(30*time.Second)))
	if err != nil {
		t.Fatalf("waiting for the chart of %s (%s): %v", vm, cond, err)
	}
	return st
}

func poll(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// TestDashboardFromALink opens the dashboard as the demo's printed link
// does, with the token in the URL's fragment: the page is authorised at
// once (no token form), the live stream runs, and the token is gone from
// the address bar and the history and was never sent but as a header.
func TestDashboardFromALink(t *testing.T) {
	chrome, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium not found: this test needs a real browser (Debian: apt-get install --no-install-recommends chromium)")
	}
	r := apitest.Start(t, apitest.Spec{Name: "web", Demand: 0.3, Interval: 200 * time.Millisecond})
	const token = "link-test-token-0123456789abcdef"
	url := serveTCP(t, r, token)

	ctx := openBrowser(t, chrome, url, token)
	if err := chromedp.Do(ctx,
		chromedp.Navigate(url+"#token="+token),
		chromedp.WaitVisible(chromedp.CSS(`#vms tr[data-vm="web"] td.name`)),
	); err != nil {
		t.Fatalf("opening the dashboard from its link: %v", err)
	}
	poll(t, ctx, "the live stream", `document.querySelector('#live').classList.contains('on')`)
	type pageState struct {
		Href, Stored string
		LoginHidden  bool
		History      int
	}
	page, err := chromedp.Run(ctx, chromedp.Evaluate[pageState](`({href: location.href, stored: sessionStorage.getItem('hotplug-token'),
		loginHidden: document.querySelector('#login').hidden, history: history.length})`))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(page.Href, token) || strings.Contains(page.Href, "#") {
		t.Errorf("address bar still shows %q", page.Href)
	}
	if page.Stored != token || !page.LoginHidden {
		t.Errorf("session storage holds %q, token form hidden %v: the link did not authorise the page", page.Stored, page.LoginHidden)
	}
	// The history entry was replaced, not added: going back cannot show
	// the token either.
	if page.History != 2 { // about:blank, then the dashboard
		t.Errorf("history has %d entries, want 2 (about:blank and the dashboard without its fragment)", page.History)
	}
}

// TestDashboardInABrowser loads the dashboard in headless Chromium against
// a real actuator with fake VMs, over TCP with a token: the page asks for
// the token, charts live data, shows the vCPU step and a marker with the
// reason after a scaling event, and pauses and resumes a VM.
func TestDashboardInABrowser(t *testing.T) {
	chrome, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium not found: this test needs a real browser (Debian: apt-get install --no-install-recommends chromium)")
	}
	start := time.Now()
	r := apitest.Start(t,
		apitest.Spec{Name: "web", App: true, Demand: 0.3, Interval: 200 * time.Millisecond,
			Policy: func(p *engine.Policy) { p.CooldownDown = engine.Duration(time.Second) }},
		apitest.Spec{Name: "db", Demand: 0.2, Interval: 200 * time.Millisecond})
	const token = "dashboard-test-token-0123456789"
	url := serveTCP(t, r, token)
	client := api.NewTCPClient(url, token)

	ctx := openBrowser(t, chrome, url, token)

	// The token form, then the table.
	if err := chromedp.Do(ctx,
		chromedp.Navigate(url),
		chromedp.WaitVisible(chromedp.CSS("#login")),
		chromedp.SendKeys(chromedp.CSS("#token"), token),
		chromedp.Click(chromedp.CSS("#login button")),
		chromedp.WaitVisible(chromedp.CSS(`#vms tr[data-vm="web"] td.name`)),
		chromedp.WaitVisible(chromedp.CSS(`#vms tr[data-vm="db"] td.name`)),
	); err != nil {
		t.Fatalf("loading the dashboard: %v", err)
	}
	poll(t, ctx, "the live stream", `document.querySelector('#live').classList.contains('on')`)
	before := pollChart(t, ctx, "web", `s.times.length >= 5 && s.drawn === s.times.length`)
	for _, v := range before.VCPUs {
		if v != 1 {
			t.Fatalf("web before load: vCPU series %v, want 1s", before.VCPUs)
		}
	}

	// Load: the engine scales web up; the chart must step.
	r.VMs["web"].Guest.SetDemand(2.5)
	after := pollChart(t, ctx, "web",
		`s.events.length >= 1 && s.markers.some(m => m.kind === 'scale_up') && s.vcpus[s.vcpus.length-1] >= 3 && s.drawn === s.times.length`)
	ev := after.Events[0]
	if ev.Kind != "scale_up" || ev.From != 1 || ev.To < 3 {
		t.Fatalf("event on the chart: %+v", ev)
	}
	evAt := float64(ev.Time.UnixNano()) / 1e9
	sawBefore, sawAfter := false, false
	for i, x := range after.Times {
		if x < evAt && after.VCPUs[i] == 1 {
			sawBefore = true
		}
		if x > evAt && after.VCPUs[i] >= 3 {
			sawAfter = true
		}
	}
	if !sawBefore || !sawAfter {
		t.Fatalf("no vCPU step around the event at %v: times %v vcpus %v", evAt, after.Times, after.VCPUs)
	}
	var up *struct {
		Kind  string  `json:"kind"`
		Title string  `json:"title"`
		X     float64 `json:"x"`
		Y     float64 `json:"y"`
	}
	for i := range after.Markers {
		if after.Markers[i].Kind == "scale_up" {
			up = &after.Markers[i]
		}
	}
	if !strings.Contains(up.Title, "scale_up 1 → ") || !strings.Contains(up.Title, ev.Reason) || !strings.Contains(up.Title, "plug") {
		t.Fatalf("marker title %q lacks the event's reason %q and steps", up.Title, ev.Reason)
	}
	// Hovering the marker shows the reason. The chart keeps moving with
	// live data, so the marker is looked up again before each try.
	tip := `(() => { const t = document.querySelector('#tip');
		return !!(t && !t.hidden && t.textContent.includes('samples above')); })()`
	shown := false
	for try := 0; try < 40 && !shown; try++ {
		st := pollChart(t, ctx, "web", `s.markers.some(m => m.kind === 'scale_up')`)
		for _, m := range st.Markers {
			if m.Kind == "scale_up" {
				if err := chromedp.Do(ctx, chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, m.X, m.Y)); err != nil {
					t.Fatal(err)
				}
			}
		}
		var err error
		if shown, err = chromedp.Run(ctx, chromedp.Evaluate[bool](tip)); err != nil {
			t.Fatal(err)
		}
		if !shown {
			time.Sleep(250 * time.Millisecond)
		}
	}
	if !shown {
		t.Fatal("hovering the scale-up marker never showed its reason")
	}

	// Pause from the page: the API agrees, and a scale-down the engine
	// asks for does not happen.
	pauseBtn := chromedp.CSS(`#vms button[data-vm="web"][data-action="pause"]`)
	if err := chromedp.Do(ctx, chromedp.Click(pauseBtn)); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "the row to show paused", `(() => {
		const tr = document.querySelector('#vms tr[data-vm="web"]');
		return tr.querySelector('td.state').textContent.includes('paused') && tr.querySelector('button').dataset.action === 'resume'; })()`)
	v, err := client.VM(ctx, "web")
	if err != nil || !v.Paused {
		t.Fatalf("after clicking Pause the API says paused=%v (%v)", v.Paused, err)
	}
	plugged := r.VMs["web"].QMP.Plugged()
	r.VMs["web"].Guest.SetDemand(0.1)
	apitest.WaitFor(t, 20*time.Second, "a scale-down decision while paused", func() bool {
		v, err := client.VM(ctx, "web")
		return err == nil && v.LastDecision.Action == engine.ScaleDown
	})
	time.Sleep(400 * time.Millisecond)
	if got := r.VMs["web"].QMP.Plugged(); got != plugged {
		t.Fatalf("web went from %d to %d vCPUs while paused", plugged, got)
	}

	// Resume from the page: scaling starts again and the chart steps down.
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`#vms button[data-vm="web"][data-action="resume"]`))); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "the row to show scaling again", `(() => {
		const tr = document.querySelector('#vms tr[data-vm="web"]');
		return !tr.querySelector('td.state').textContent.includes('paused') && tr.querySelector('button').dataset.action === 'pause'; })()`)
	if v, err := client.VM(ctx, "web"); err != nil || v.Paused {
		t.Fatalf("after clicking Resume the API says paused=%v (%v)", v.Paused, err)
	}
	down := pollChart(t, ctx, "web", `s.markers.some(m => m.kind === 'scale_down') && s.vcpus[s.vcpus.length-1] < `+strconv.Itoa(plugged))
	if len(down.Events) < 2 {
		t.Fatalf("events on the chart after the scale-down: %+v", down.Events)
	}
	// The app's response time and SLA are charted for web.
	poll(t, ctx, "the response-time and SLA series", `(() => { const c = hotplug.charts.get('web');
		return c.apps && c.u.series.length === 6 && c.data[5].some(v => v === 50); })()`)

	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(t.ArtifactDir(), "dashboard.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes); the whole test took %v", shot, len(png), time.Since(start).Round(time.Millisecond))
}

// openBrowser starts headless Chromium for the test, stopped by its
// cleanup. Every console error and uncaught exception fails the test, and
// so does any request that leaves the actuator at url (no CDN).
// No request may carry secret in its URL or in a header other than
// Authorization (a token must not reach logs, proxies or Referer headers).
func openBrowser(t *testing.T, chrome, url, secret string) context.Context {
	t.Helper()
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chrome),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox, // as root, Chromium's sandbox cannot start
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1200),
	)
	t.Cleanup(cancelAlloc)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(cancelBrowser)
	ctx, cancel := context.WithTimeout(bctx, 3*time.Minute)
	t.Cleanup(cancel)

	var mu sync.Mutex
	var problems []string
	console := chromedp.Console(ctx)
	requests := chromedp.Events(ctx, network.RequestWillBeSent)
	go func() {
		for m, err := range console {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleException || m.Type == chromedp.ConsoleError {
				// The 401 of the first load is expected: it is how the
				// page learns it needs the token.
				if strings.Contains(m.Text, "401") {
					continue
				}
				mu.Lock()
				problems = append(problems, string(m.Type)+": "+m.Text)
				mu.Unlock()
			}
		}
	}()
	go func() {
		for ev, err := range requests {
			if err != nil {
				return
			}
			u := ev.Request.URL
			if !strings.HasPrefix(u, url) && !strings.HasPrefix(u, "data:") && u != "about:blank" {
				mu.Lock()
				problems = append(problems, "request outside the actuator: "+u)
				mu.Unlock()
			}
			leak := strings.Contains(u, secret)
			for k, v := range ev.Request.Headers {
				if s, ok := v.(string); ok && !strings.EqualFold(k, "Authorization") && strings.Contains(s, secret) {
					leak = true
				}
			}
			if leak {
				mu.Lock()
				problems = append(problems, "the token left the page outside the Authorization header: "+u)
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range problems {
			t.Error("browser: " + p)
		}
	})

	return ctx
}

// serveTCP serves the rig's API on a loopback port with token, until the
// test ends, and returns its base URL.
func serveTCP(t *testing.T, r *apitest.Rig, token string) string {
	t.Helper()
	return r.ServeTCP(t, token, nil) + "/"
}

// memChartState is what the page holds of a VM's memory chart.
type memChartState struct {
	VM      []float64 `json:"vm"`
	Drawn   int       `json:"drawn"`
	Markers []struct {
		Kind  string `json:"kind"`
		Title string `json:"title"`
	} `json:"markers"`
	Sub string `json:"sub"`
}

// TestDashboardMemoryPanel: a VM with a memory device gets a memory chart
// under its CPU chart — the VM's memory as a step line, the guest's
// MemTotal and use — and each memory resize is marked on it, with its
// reason in MiB; the CPU chart keeps only vCPU events.
func TestDashboardMemoryPanel(t *testing.T) {
	chrome, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium not found: this test needs a real browser (Debian: apt-get install --no-install-recommends chromium)")
	}
	mp := memory.DefaultPolicy()
	mp.Mode, mp.Min, mp.Max = memory.ModePressure, memory.Size(128<<20), memory.Size(1152<<20)
	r := apitest.Start(t, apitest.Spec{Name: "mem", Demand: 0.2, Interval: 200 * time.Millisecond, Memory: &mp})
	const token = "dashboard-test-token-0123456789"
	url := serveTCP(t, r, token)
	ctx := openBrowser(t, chrome, url, token)
	if err := chromedp.Do(ctx,
		chromedp.Navigate(url+"#token="+token),
		chromedp.WaitVisible(chromedp.CSS(`#vms tr[data-vm="mem"] td.name`)),
	); err != nil {
		t.Fatalf("loading the dashboard: %v", err)
	}
	// The guest runs short of memory: MemAvailable under the headroom.
	r.VMs["mem"].Guest.SetMemoryUsed(1<<30 - 10<<20)
	const js = `(() => {
		const c = window.hotplug && window.hotplug.charts.get('mem');
		if (!c || !c.mem) return false;
		const s = {vm: c.mem.data[1].filter(v => v != null), drawn: c.mem.u.data[0].length,
			markers: [...c.mem.el.querySelectorAll('.marker')].map(m => ({kind: m.dataset.kind, title: m.title})),
			sub: c.el.querySelector('h2 small').textContent};
		return (s.markers.some(m => m.kind === 'memory_grow') && s.vm.length > 2 && s.vm[s.vm.length-1] > s.vm[0] && s.drawn === c.mem.data[0].length) ? s : false;
	})()`
	st, err := chromedp.Run(ctx, chromedp.Poll[memChartState](js, chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(30*time.Second)))
	if err != nil {
		t.Fatalf("memory chart: %v", err)
	}
	var grow string
	for _, m := range st.Markers {
		if m.Kind == "memory_grow" {
			grow = m.Title
		}
	}
	if !strings.Contains(grow, "MiB") || !strings.Contains(grow, "headroom") || !strings.Contains(st.Sub, "memory") {
		t.Fatalf("memory marker %q, card %q", grow, st.Sub)
	}
	t.Logf("VM memory on the chart: %.0f → %.0f MiB; marker: %s", st.VM[0], st.VM[len(st.VM)-1], strings.SplitN(grow, "\n", 2)[0])
	// The CPU chart has no memory events.
	cpuMarkers, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...window.hotplug.charts.get('mem').u.over.querySelectorAll('.marker')].map(m => m.dataset.kind)`))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range cpuMarkers {
		if strings.HasPrefix(k, "memory_") {
			t.Fatalf("memory event on the CPU chart: %v", cpuMarkers)
		}
	}
}
