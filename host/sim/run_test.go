package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"iter"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/host/engine"
)

func TestShortfallPercentiles(t *testing.T) {
	var a totals
	// 90 s short by 0.1 CPU, 10 s short by 2 CPUs.
	a.addShortfall(0.1, 90000)
	a.addShortfall(2, 10000)
	for _, tc := range []struct{ q, want float64 }{{0.5, 0.1}, {0.9, 0.1}, {0.95, 2}, {0.99, 2}} {
		got := a.shortfall(tc.q)
		if got < tc.want || got > tc.want*1.011+shortFirst {
			t.Errorf("p%v = %v, want %v to 1 %%", 100*tc.q, got, tc.want)
		}
	}
	var none totals
	if none.shortfall(0.5) != 0 {
		t.Error("no overload should give a zero shortfall")
	}
	for _, v := range []float64{0, 1e-9, 1e300, math.Inf(1)} {
		if b := shortBucket(v); b < 0 || b >= shortBuckets {
			t.Errorf("shortfall %v falls in bucket %d", v, b)
		}
	}
	if shortBucketStart(shortBuckets-1) < 2048 || shortBucketStart(shortBuckets-2) >= 2048 {
		t.Error("the last shortfall bucket should be the first to start at 2048 CPUs")
	}
}

func TestVMOverloadPercentile(t *testing.T) {
	var a totals
	for i := range 100 {
		st := vmStats{timeMs: 1000}
		if i >= 98 {
			st.overMs = 500 // two VMs overloaded half the time
		}
		a.addVM(st)
	}
	if got := a.vmOverload(0.98); got != 0 {
		t.Errorf("p98 = %v, want 0", got)
	}
	if got := a.vmOverload(0.99); got != 0.5 {
		t.Errorf("p99 = %v, want 0.5", got)
	}
}

func sliceSeq(traces ...*Trace) iter.Seq2[*Trace, error] {
	return func(yield func(*Trace, error) bool) {
		for _, t := range traces {
			if !yield(t, nil) {
				return
			}
		}
	}
}

func TestSimulateFixtures(t *testing.T) {
	var skipped []string
	paths := []string{"testdata/planetlab/20110303", "testdata/bad"}
	rep, err := Simulate(context.Background(), Read(paths, ReadOptions{}), Config{Policies: DefaultPolicies(), Actuation: DefaultActuation},
		func(err error) { skipped = append(skipped, err.Error()) })
	if err != nil {
		t.Fatal(err)
	}
	if rep.VMs != 5 || rep.Skipped != 2 || len(skipped) != 2 {
		t.Fatalf("%d VMs, %d skipped (%q), want 5 and 2", rep.VMs, rep.Skipped, skipped)
	}
	by := map[string]Result{}
	for _, r := range rep.Results {
		by[r.Policy] = r
		if r.VMs != 5 {
			t.Errorf("%s ran on %d VMs, want all 5", r.Policy, r.VMs)
		}
		// A day of 5 VMs, each 288 × 300 s.
		if r.OverloadTimeFraction < 0 || r.OverloadTimeFraction > 1 || r.VsOracle < 1-1e-9 {
			t.Errorf("%s: %+v", r.Policy, r)
		}
	}
	if r := by["static-requested"]; r.VCPUHours != 5*8*24 || r.VsRequested != 1 || r.OverloadTimeFraction != 0 || r.ActionsPerVMDay != 0 {
		t.Errorf("static-requested: %+v, want 960 vCPU-hours and nothing else", r)
	}
	if r := by["oracle"]; r.VsOracle != 1 || r.OverloadTimeFraction != 0 {
		t.Errorf("oracle: %+v", r)
	}
	if r := by["static-peak"]; r.OverloadTimeFraction != 0 || r.VCPUHours > by["static-requested"].VCPUHours {
		t.Errorf("static-peak: %+v", r)
	}
	for _, name := range []string{"threshold", "sandpiper", "vpa", "predictive"} {
		if r := by[name]; r.VsRequested >= 1 || r.ActionsPerVMDay == 0 {
			t.Errorf("%s saves nothing or never acts: %+v", name, r)
		}
	}
	// The timeline VM is the first whose peak reaches half its size.
	if rep.Timeline == nil || rep.Timeline.VM != "metis_mcs_suffolk_edu_ rnp_dcc_ufjf" || len(rep.Timeline.Alloc) != 8 || len(rep.Timeline.Alloc[7]) != 288 {
		t.Fatalf("timeline %+v", rep.Timeline)
	}
}

// TestSimulateDeterministic: the same traces give the same figures whatever
// the number of workers and the order VMs finish in.
func TestSimulateDeterministic(t *testing.T) {
	var traces []*Trace
	for tr, err := range Read([]string{"testdata/planetlab/20110303", "testdata/bitbrains", "testdata/csv"}, ReadOptions{}) {
		if err != nil {
			t.Fatal(err)
		}
		traces = append(traces, tr)
	}
	run := func(workers int) *Report {
		rep, err := Simulate(context.Background(), sliceSeq(traces...), Config{Policies: DefaultPolicies(), Actuation: DefaultActuation, Workers: workers}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	one := run(1)
	for _, w := range []int{2, 7} {
		if got := run(w); !reflect.DeepEqual(got, one) {
			t.Fatalf("%d workers differ from one:\n%+v\n%+v", w, got.Results, one.Results)
		}
	}
}

func TestSimulateTimelineByName(t *testing.T) {
	rep, err := Simulate(context.Background(), Read([]string{"testdata/planetlab/20110303"}, ReadOptions{}),
		Config{Policies: DefaultPolicies()[:3], TimelineVM: "planetlab1_unl_edu_root"}, nil)
	if err != nil || rep.Timeline == nil || rep.Timeline.VM != "planetlab1_unl_edu_root" {
		t.Fatalf("%v %+v", err, rep.Timeline)
	}
	if h := rep.Timeline.Hours; h[1] != 5.0/60 || h[287] != 287*5.0/60 {
		t.Fatalf("hours %v…%v", h[:2], h[287])
	}
}

func TestSimulateRejects(t *testing.T) {
	bad := engine.DefaultPolicy()
	bad.K = 99
	for _, cfg := range []Config{
		{},
		{Policies: []Policy{{Name: "x", Baseline: "hindsight"}}},
		{Policies: []Policy{{Name: "x", Engine: bad}}},
		{Policies: []Policy{{Name: "oracle", Baseline: Oracle}, {Name: "oracle", Baseline: Oracle}}},
		{Policies: DefaultPolicies(), Actuation: Actuation{PlugTime: -time.Second}},
	} {
		if _, err := Simulate(context.Background(), sliceSeq(), cfg, nil); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
	// A policy that cannot run on a trace's interval skips that VM for all.
	p := Policy{Name: "slow", Engine: PredictivePolicy()}
	p.Engine.ForecastHalfLife = engine.Duration(10 * time.Minute)
	var errs []error
	rep, err := Simulate(context.Background(), sliceSeq(minuteTrace(2, 1, 1, 1), &Trace{Name: "hourly", Requested: 2, Interval: time.Hour, Time: []int64{0, 3600000}, Demand: []float64{1, 1}}),
		Config{Policies: []Policy{{Name: "oracle", Baseline: Oracle}, p}}, func(err error) { errs = append(errs, err) })
	if err != nil || rep.VMs != 1 || len(errs) != 1 || !strings.Contains(errs[0].Error(), "hourly") || !strings.Contains(errs[0].Error(), "forecast_half_life") {
		t.Fatalf("%v, %d VMs, errors %v", err, rep.VMs, errs)
	}
	// A cancelled run says so.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Simulate(ctx, Read([]string{"testdata/planetlab/20110303"}, ReadOptions{}), Config{Policies: DefaultPolicies()}, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled run: %v", err)
	}
}

func TestParsePolicies(t *testing.T) {
	in := `
[predictive]
min_gain = 0.02

[pred-slow]
mode = "predictive"
forecast_half_life = "12h"
`
	got, err := ParsePolicies(strings.NewReader(in), DefaultPolicies())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 9 || got[6].Engine.MinGain != 0.02 || got[6].Engine.ForecastHalfLife != PredictivePolicy().ForecastHalfLife {
		t.Fatalf("predictive not overlaid: %+v", got[6].Engine)
	}
	if got[8].Name != "pred-slow" || got[8].Engine.Mode != engine.ModePredictive || got[8].Engine.ForecastHalfLife.D() != 12*time.Hour {
		t.Fatalf("pred-slow not added: %+v", got[8])
	}
	if DefaultPolicies()[6].Engine.MinGain == 0.02 {
		t.Fatal("the defaults were changed")
	}
	for in, want := range map[string]string{
		"[predictive]\nmin_gian = 0.02\n": "unknown keys: predictive.min_gian",
		"[predictive]\nmin_gain = 2\n":    "predictive.min_gain: must be in (0, 1)",
		"[oracle]\nk = 1\n":               "[oracle]: a hindsight baseline",
		"[vpa]\nvpa_half_life = 3\n":      "[vpa]:",
		"not toml":                        "",
	} {
		_, err := ParsePolicies(strings.NewReader(in), DefaultPolicies())
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error with %q", in, err, want)
		}
	}
}

func TestWriters(t *testing.T) {
	rep, err := Simulate(context.Background(), Read([]string{"testdata/planetlab/20110303"}, ReadOptions{}), Config{Policies: DefaultPolicies()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := WriteJSON(&b, rep); err != nil {
		t.Fatal(err)
	}
	var doc map[string][]map[string]any
	if err := json.Unmarshal(b.Bytes(), &doc); err != nil || len(doc) != 1 || len(doc["policies"]) != 8 {
		t.Fatalf("JSON %v: %s", err, b.String())
	}
	for _, k := range []string{"policy", "vms", "vcpu_hours", "vcpu_hours_vs_requested", "vcpu_hours_vs_oracle", "overload_time_fraction", "actions_per_vm_day"} {
		if _, ok := doc["policies"][0][k]; !ok {
			t.Errorf("JSON lacks %q", k)
		}
	}
	b.Reset()
	WriteCSV(&b, rep)
	if lines := strings.Split(strings.TrimSpace(b.String()), "\n"); len(lines) != 9 || !strings.HasPrefix(lines[1], "static-requested,4,768,1,") {
		t.Fatalf("CSV:\n%s", b.String())
	}
	b.Reset()
	WriteTable(&b, rep)
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 10 || !strings.HasPrefix(lines[1], "| ---") {
		t.Fatalf("table:\n%s", b.String())
	}
	for _, l := range lines {
		if len([]rune(l)) != len([]rune(lines[0])) {
			t.Fatalf("table rows not aligned:\n%s", b.String())
		}
	}
}

func TestPlot(t *testing.T) {
	rep, err := Simulate(context.Background(), Read([]string{"testdata/planetlab/20110303"}, ReadOptions{}), Config{Policies: DefaultPolicies()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, magic := range map[string]string{"a.svg": "<?xml", "a.png": "\x89PNG"} {
		path := filepath.Join(dir, name)
		if err := Plot(rep, path); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil || !bytes.HasPrefix(b, []byte(magic)) || len(b) < 10000 {
			t.Fatalf("%s: %v, %d bytes starting %.8q", name, err, len(b), b)
		}
	}
	if svg, _ := os.ReadFile(filepath.Join(dir, "a.svg")); !bytes.Contains(svg, []byte("predictive")) || !bytes.Contains(svg, []byte("metis_mcs_suffolk_edu_")) {
		t.Error("the SVG should name the policies and the timeline VM")
	}
	if err := Plot(rep, filepath.Join(dir, "a.pdf")); err == nil {
		t.Error("a .pdf plot should be refused")
	}
	rep.Timeline = nil
	if err := Plot(rep, filepath.Join(dir, "b.svg")); err != nil {
		t.Errorf("a report without a timeline should still plot: %v", err)
	}
}
