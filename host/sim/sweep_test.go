package sim

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFrontierEnvelopeAndAt(t *testing.T) {
	f := Frontier{Points: []FrontierPoint{
		{Setting: "a", VsOracle: 2.0, OverloadTimeFraction: 0.005},
		{Setting: "b", VsOracle: 1.6, OverloadTimeFraction: 0.010},
		{Setting: "dominated", VsOracle: 1.7, OverloadTimeFraction: 0.012},
		{Setting: "c", VsOracle: 1.4, OverloadTimeFraction: 0.020},
		{Setting: "tie, dearer", VsOracle: 1.5, OverloadTimeFraction: 0.020},
		{Setting: "nan", VsOracle: math.NaN(), OverloadTimeFraction: 0.015},
	}}
	var got []string
	for _, p := range f.Envelope() {
		got = append(got, p.Setting)
	}
	if strings.Join(got, ",") != "a,b,c" {
		t.Fatalf("envelope %v, want a,b,c", got)
	}
	for _, tc := range []struct{ at, want float64 }{
		{0.005, 2.0}, {0.0075, 1.8}, {0.01, 1.6}, {0.015, 1.5}, {0.02, 1.4}, {0.004, math.NaN()}, {0.03, math.NaN()},
	} {
		v := f.At(tc.at)
		if math.IsNaN(tc.want) != math.IsNaN(v) || !math.IsNaN(v) && math.Abs(v-tc.want) > 1e-12 {
			t.Errorf("At(%v) = %v, want %v", tc.at, v, tc.want)
		}
	}
}

func fixtureInput(name string) SweepInput {
	return SweepInput{Name: name, Traces: Read([]string{"testdata/planetlab/20110303"}, ReadOptions{})}
}

// TestSweepFixtures: every dynamic policy is swept over its knob, the
// duplicate preset is left out, the predictive mode buys less overload
// with more vCPU-hours as its gain falls, matched readings are the
// frontier's, and the hindsight bounds are the ones the benchmark reports.
func TestSweepFixtures(t *testing.T) {
	rep, err := Sweep(context.Background(), []SweepInput{fixtureInput("day")},
		SweepConfig{Policies: DefaultPolicies(), Actuation: DefaultActuation}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Groups) != 1 || rep.Groups[0].VMs != 4 {
		t.Fatalf("groups %+v", rep.Groups)
	}
	g := rep.Total()
	var names []string
	for _, f := range g.Frontiers {
		names = append(names, f.Policy)
	}
	want := "threshold,sandpiper,vpa,predictive," + BoundDistribution + "," + BoundMarkov + "," + YardstickMax
	if strings.Join(names, ",") != want {
		t.Fatalf("frontiers %v, want %s", names, want)
	}
	pred := g.Frontiers[3]
	if len(pred.Points) != len(predictiveGains) || pred.Knob != "min_gain" {
		t.Fatalf("predictive frontier: %+v", pred)
	}
	// Gains increase along the points: fewer vCPU-hours each time.
	for i := 1; i < len(pred.Points); i++ {
		if pred.Points[i].VsOracle > pred.Points[i-1].VsOracle {
			t.Errorf("%s costs more than %s: %v > %v", pred.Points[i].Setting, pred.Points[i-1].Setting,
				pred.Points[i].VsOracle, pred.Points[i-1].VsOracle)
		}
	}
	for j, l := range rep.Levels {
		m := g.Matched[3][j]
		v := pred.At(l)
		if (m.VsOracle == nil) != math.IsNaN(v) || m.VsOracle != nil && *m.VsOracle != v {
			t.Errorf("matched at %v: %v, frontier says %v", l, m.VsOracle, v)
		}
	}
	var traces []*Trace
	for tr, err := range Read([]string{"testdata/planetlab/20110303"}, ReadOptions{}) {
		if err != nil {
			t.Fatal(err)
		}
		traces = append(traces, tr)
	}
	for i, key := range []hindsightKey{distributionKey, markovKey} {
		f := g.Frontiers[4+i]
		for _, l := range []float64{0.02, 0.05} {
			got, want := f.At(l), hindsightAt(traces, key, l)
			if math.Abs(got-want) > 1e-9 {
				t.Errorf("%s at %v: sweep %v, hindsightAt %v", f.Policy, l, got, want)
			}
		}
	}
}

// TestSweepGroupsAddUp: the total of two inputs is the sweep of both
// together — sums, not an average of the groups' figures.
func TestSweepGroupsAddUp(t *testing.T) {
	cfg := SweepConfig{Policies: []Policy{{Name: "predictive", Engine: PredictivePolicy()}}, Actuation: DefaultActuation}
	two, err := Sweep(context.Background(), []SweepInput{fixtureInput("a"), fixtureInput("b")}, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	both, err := Sweep(context.Background(), []SweepInput{{Name: "ab",
		Traces: Read([]string{"testdata/planetlab/20110303", "testdata/planetlab/20110303"}, ReadOptions{})}}, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(two.Groups) != 3 || two.Total().Name != "all" || two.Total().VMs != 8 {
		t.Fatalf("groups: %+v", two.Groups)
	}
	for i, f := range two.Total().Frontiers {
		w := both.Total().Frontiers[i]
		for k, p := range f.Points {
			q := w.Points[k]
			if math.Abs(p.VsOracle-q.VsOracle) > 1e-12 || math.Abs(p.OverloadTimeFraction-q.OverloadTimeFraction) > 1e-12 {
				t.Fatalf("%s %s: total of the groups %+v, one run %+v", f.Policy, p.Setting, p, q)
			}
		}
	}
}

func TestSweepSkipsAndRejects(t *testing.T) {
	var skipped []string
	rep, err := Sweep(context.Background(), []SweepInput{{Name: "mixed", Traces: Read([]string{"testdata/planetlab/20110303", "testdata/bad"}, ReadOptions{})}},
		SweepConfig{Policies: []Policy{{Name: "vpa", Engine: VPAPolicy()}}, Actuation: DefaultActuation},
		func(err error) { skipped = append(skipped, err.Error()) })
	if err != nil {
		t.Fatal(err)
	}
	if rep.Total().VMs != 5 || rep.Skipped != 2 || len(skipped) != 2 {
		t.Fatalf("VMs %d, skipped %d: %v", rep.Total().VMs, rep.Skipped, skipped)
	}
	gb := PredictivePolicy()
	gb.Mode = "graybox"
	for _, tc := range []struct {
		name string
		pols []Policy
		want string
	}{
		{"baselines only", DefaultPolicies()[:3], "no dynamic policy"},
		{"graybox", []Policy{{Name: "gb", Engine: gb}}, "no knob"},
	} {
		if _, err := Sweep(context.Background(), []SweepInput{fixtureInput("x")}, SweepConfig{Policies: tc.pols}, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}

func TestSweepGrid(t *testing.T) {
	_, sw, err := expand([]Policy{{Name: "vpa", Engine: VPAPolicy()}, {Name: "threshold", Engine: ThresholdPolicy()}}, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(sw[0].settings) != len(vpaPercentiles)*len(vpaMargins) {
		t.Errorf("vpa grid: %d settings", len(sw[0].settings))
	}
	for _, pr := range thresholdPath {
		found := false
		for _, s := range sw[1].settings {
			found = found || s == "upper="+f64(pr[0])+" remove_below="+f64(pr[1])
		}
		if !found {
			t.Errorf("threshold path point %v is not on the grid it was chosen from", pr)
		}
	}
	for _, pr := range vpaPath {
		found := false
		for _, s := range sw[0].settings {
			found = found || s == "vpa_percentile="+f64(pr[0])+" vpa_margin="+f64(pr[1])
		}
		if !found {
			t.Errorf("vpa path point %v is not on the grid it was chosen from", pr)
		}
	}
}

func TestSweepWriters(t *testing.T) {
	pols := []Policy{{Name: "threshold", Engine: ThresholdPolicy()}, {Name: "predictive", Engine: PredictivePolicy()}}
	rep, err := Sweep(context.Background(), []SweepInput{fixtureInput("a"), fixtureInput("b")},
		SweepConfig{Policies: pols, Actuation: DefaultActuation}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var tb bytes.Buffer
	if err := WriteSweepTable(&tb, rep); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| vCPU-hours ÷ oracle's", "at 0.5 %", "at 3 %", `hindsight P(need \| previous need)`,
		"| lowest policy |", "| predictive | min_gain=0.0135 |"} {
		if !strings.Contains(strings.Join(strings.Fields(tb.String()), " "), want) {
			t.Errorf("table lacks %q:\n%s", want, tb.String())
		}
	}
	var jb bytes.Buffer
	if err := WriteSweepJSON(&jb, rep); err != nil {
		t.Fatal(err)
	}
	var back SweepReport
	if err := json.Unmarshal(jb.Bytes(), &back); err != nil || len(back.Groups) != 3 || len(back.Groups[2].Matched) != len(back.Groups[2].Frontiers) {
		t.Fatalf("JSON: %v %+v", err, back.Groups)
	}
	var cb bytes.Buffer
	if err := WriteSweepCSV(&cb, rep); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&cb).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	n := 1
	for _, g := range rep.Groups {
		for _, f := range g.Frontiers {
			n += len(f.Points)
		}
	}
	if len(rows) != n || rows[0][0] != "group" {
		t.Fatalf("CSV: %d rows, want %d", len(rows), n)
	}
	for _, ext := range []string{"svg", "png"} {
		p := filepath.Join(t.TempDir(), "f."+ext)
		if err := PlotSweep(rep, p); err != nil {
			t.Fatal(err)
		}
		if st, err := os.Stat(p); err != nil || st.Size() < 1000 {
			t.Fatalf("plot %s: %v", p, err)
		}
	}
}
