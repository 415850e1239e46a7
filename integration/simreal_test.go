package integration_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/host/engine"
	"github.com/hotplugheaven/hotplug/host/sim"
	"github.com/hotplugheaven/hotplug/integration/stack"
	"github.com/hotplugheaven/hotplug/integration/testvm"
)

// simRealTrace is 20 five-minute samples of one PlanetLab VM (development
// day 2011-03-03, planetlab1_cs_stevens-tech_edu_root, samples 112–131),
// CPU % × 4 vCPUs requested: a busy stretch between quiet ones.
const (
	simRealFile  = "../../shared/data/planetlab/20110303/planetlab1_cs_stevens-tech_edu_root"
	simRealFirst = 112
	simRealSteps = 20
	simRealStep  = 8 * time.Second // 300 s of trace per 8 s of replay
)

// TestSimToReal replays the trace, time-compressed, as real CPU load in the
// QEMU guest with the live actuator, and through the simulator with the
// same engine policy, and compares the vCPUs each allocated second by
// second. The agreement is reported; the test requires the two to agree
// within one vCPU most of the time and to make the same moves (a scale-up
// in the busy stretch, back to one vCPU after it).
func TestSimToReal(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a QEMU guest; skipped with -short")
	}
	b, err := os.ReadFile(simRealFile)
	if err != nil {
		t.Fatalf("trace (../shared/data): %v", err)
	}
	fields := strings.Fields(string(b))
	var demand []string
	var steps []float64
	for _, f := range fields[simRealFirst : simRealFirst+simRealSteps] {
		pct, err := strconv.Atoi(f)
		if err != nil {
			t.Fatal(err)
		}
		d := float64(pct) / 100 * 4
		steps = append(steps, d)
		demand = append(demand, strconv.FormatFloat(d, 'f', 2, 64))
	}

	// One policy for both, written once.
	p := engine.DefaultPolicy()
	p.MinVCPUs, p.MaxVCPUs = 1, 4
	p.Interval = engine.Duration(time.Second)
	p.K, p.N, p.Window, p.DownSamples = 3, 5, 10, 5
	p.CooldownUp, p.CooldownDown = engine.Duration(5*time.Second), engine.Duration(5*time.Second)
	policyTOML := fmt.Sprintf("min_vcpus = %d\nmax_vcpus = %d\ninterval = %q\nk = %d\nn = %d\nwindow = %d\ndown_samples = %d\ncooldown_up = %q\ncooldown_down = %q\n",
		p.MinVCPUs, p.MaxVCPUs, p.Interval, p.K, p.N, p.Window, p.DownSamples, p.CooldownUp, p.CooldownDown)

	// The simulator: one sample a second, each trace step held for a step.
	per := int(simRealStep / time.Second)
	tr := &sim.Trace{Name: "stevens", Requested: 4, Interval: time.Second}
	for i, d := range steps {
		for j := 0; j < per; j++ {
			tr.Time = append(tr.Time, int64((i*per+j)*1000))
			tr.Demand = append(tr.Demand, d)
		}
	}
	simSteps, err := sim.Decisions(tr, sim.Policy{Name: "sandpiper", Engine: p},
		sim.Actuation{PlugTime: time.Second, UnplugTime: 300 * time.Millisecond, Initial: 1})
	if err != nil {
		t.Fatal(err)
	}
	simAt := make([]int, len(simSteps))
	for i, s := range simSteps {
		simAt[i] = s.Online
	}

	// The live actuator with the load in a real guest.
	root, _ := stack.RepoRoot()
	svc := filepath.Join(t.TempDir(), "httpsvc")
	build := exec.Command("go", "build", "-o", svc, "./integration/testdata/httpsvc")
	build.Dir = root
	build.Env = append(build.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the load player: %v\n%s", err, out)
	}
	// Eight slots for a policy of at most four: under TCG a VM can plug
	// only maxcpus − 1 vCPUs in its life, a limit the simulator does not
	// model, and the trace scales up twice.
	ctx, s, _ := startStack(t, stack.Options{Policy: policyTOML, MaxCPUs: 8,
		Files: map[string]testvm.File{"/usr/bin/httpsvc": {HostPath: svc, Mode: 0o755}}})
	waitState(ctx, t, s, 60*time.Second, "agent connected, guest idle at 1 vCPU", func(online, plugged int) bool {
		return online == 1 && plugged == 1 && s.VM != nil
	})
	time.Sleep(6 * time.Second) // a full window of idle samples, as the simulator starts with
	if _, err := s.VM.Spawn(ctx, fmt.Sprintf("httpsvc play -step %s -demand %s", simRealStep, strings.Join(demand, ","))); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	live := make([]int, 0, len(simAt))
	for sec := 1; sec <= len(simAt); sec++ {
		waitUntil(ctx, start.Add(time.Duration(sec)*time.Second))
		n, err := s.QEMUPlugged(ctx)
		if err != nil {
			t.Fatal(err)
		}
		live = append(live, n)
	}

	same, near := 0, 0
	for i := range live {
		if live[i] == simAt[i] {
			same++
		}
		if d := live[i] - simAt[i]; d >= -1 && d <= 1 {
			near++
		}
	}
	t.Logf("trace  %s", strings.Join(demand, " "))
	t.Logf("sim    %s", compact(simAt, per))
	t.Logf("live   %s", compact(live, per))
	t.Logf("agreement over %d s: same vCPU count %.0f%% of the time, within one vCPU %.0f%%; moves: sim %d, live %d",
		len(live), 100*float64(same)/float64(len(live)), 100*float64(near)/float64(len(live)), moves(simAt), moves(live))
	if near < len(live)*3/4 {
		t.Errorf("live and simulated allocations within one vCPU only %d of %d s", near, len(live))
	}
	if peak(live) < 2 || peak(simAt) < 2 {
		t.Errorf("no scale-up in the busy stretch: live peak %d, sim peak %d", peak(live), peak(simAt))
	}
}

func waitUntil(ctx context.Context, t time.Time) {
	select {
	case <-ctx.Done():
	case <-time.After(time.Until(t)):
	}
}

// compact prints one vCPU count per step (the count at the step's end).
func compact(a []int, per int) string {
	var out []string
	for i := per - 1; i < len(a); i += per {
		out = append(out, strconv.Itoa(a[i]))
	}
	return strings.Join(out, " ")
}

func moves(a []int) int {
	n := 0
	for i := 1; i < len(a); i++ {
		if a[i] != a[i-1] {
			n++
		}
	}
	return n
}

func peak(a []int) int {
	m := 0
	for _, v := range a {
		m = max(m, v)
	}
	return m
}
