package integration_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/host/eventlog"
	"github.com/hotplugheaven/hotplug/integration/stack"
	"github.com/hotplugheaven/hotplug/integration/testvm"
)

// TestGrayboxSLA runs, in the guest, an HTTP service whose requests each
// cost 10 ms of CPU and which logs nginx's format with $request_time; a
// paced load generator drives it. The agent tails the log; the actuator,
// in gray-box mode with a p95 ≤ 60 ms SLA, adds vCPUs when response times
// break the SLA and removes them when the load is gone.
func TestGrayboxSLA(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a QEMU guest; skipped with -short")
	}
	svc := filepath.Join(t.TempDir(), "httpsvc")
	root, _ := stack.RepoRoot()
	build := exec.Command("go", "build", "-o", svc, "./integration/testdata/httpsvc")
	build.Dir = root
	build.Env = append(build.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building httpsvc: %v\n%s", err, out)
	}
	app := `name = "shop"
path = "/var/log/app/access.log"
format = "nginx"
read_from_start = true
[sla]
percentile = "p95"
target = "60ms"
`
	policy := strings.Replace(stack.DefaultPolicy, "min_vcpus = 1", "mode = \"graybox\"\nmin_vcpus = 1", 1)
	ctx, s, _ := startStack(t, stack.Options{Policy: policy,
		Files: map[string]testvm.File{
			"/usr/bin/httpsvc":                    {HostPath: svc, Mode: 0o755},
			"/etc/hotplug-agent/apps.d/shop.toml": {Data: []byte(app), Mode: 0o644},
		},
		Before: "mkdir -p /var/log/app /var/lib/hotplug-agent && touch /var/log/app/access.log\n" +
			"httpsvc serve -cost 10ms -log /var/log/app/access.log >/dev/null 2>&1 &\n"})

	waitState(ctx, t, s, 60*time.Second, "agent up, guest idle at 1 vCPU", func(online, plugged int) bool {
		return online == 1 && plugged == 1
	})
	job, err := s.VM.Spawn(ctx, "httpsvc load -rate "+loadRate()+" -for 10m")
	if err != nil {
		t.Fatal(err)
	}
	loadStart := time.Now()
	waitState(ctx, t, s, 3*time.Minute, "gray-box scale-up", func(online, plugged int) bool {
		return online >= 2 && plugged == online && hasEvent(s, "scale_up")
	})
	up := firstEvent(t, s, "scale_up")
	if up.Outcome != eventlog.OutcomeOK || up.Rule != "sla" || !strings.Contains(up.Reason, "shop") {
		t.Fatalf("scale-up event: %+v", up)
	}
	t.Logf("gray-box scale-up %v after load start: %d → %d vCPUs (%s)", up.Time.Sub(loadStart).Round(100*time.Millisecond), up.From, up.Result, up.Reason)

	// With the extra vCPUs the SLA must be met again, load unchanged: the
	// p95 of the last 300 requests, as the agent's own parser reads them.
	var p95 float64
	deadline := time.Now().Add(2 * time.Minute)
	for {
		time.Sleep(5 * time.Second)
		out, _, err := s.VM.Run(ctx, "tail -n 300 /var/log/app/access.log > /tmp/recent.log && hotplug-agent logstat --format nginx /tmp/recent.log")
		if err != nil {
			t.Fatal(err)
		}
		var st struct {
			Response struct{ P95 float64 } `json:"response_time"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("logstat output %q: %v", out, err)
		}
		p95 = st.Response.P95
		online, _ := s.GuestOnline(ctx)
		t.Logf("p95 of the last 300 requests %.0f ms on vCPUs %s", 1000*p95, online)
		if p95 <= 0.060 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("SLA (p95 ≤ 60 ms) still broken two minutes after the scale-up: p95 %.0f ms", 1000*p95)
		}
	}
	if err := s.VM.Kill(ctx, job); err != nil {
		t.Fatal(err)
	}
	waitState(ctx, t, s, 3*time.Minute, "back to 1 vCPU after the load", func(online, plugged int) bool {
		return online == 1 && plugged == 1 && hasEvent(s, "scale_down")
	})
}

// loadRate is the request rate: 40/s × 10 ms is 0.4 CPU of work, which
// with the HTTP stack's own cost under TCG emulation overloads one vCPU
// and not three. GRAYBOX_RATE overrides it for experiments.
func loadRate() string {
	if r := os.Getenv("GRAYBOX_RATE"); r != "" {
		return r
	}
	return "40"
}
