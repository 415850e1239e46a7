package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const fixtures = "../../sim/testdata/"

func TestSimulateCommand(t *testing.T) {
	dir := t.TempDir()
	plot := filepath.Join(dir, "p.svg")
	var out, errb bytes.Buffer
	code := run([]string{"simulate", "--format", "json", "--plot", plot, fixtures + "planetlab/20110303", fixtures + "bad"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var doc struct {
		Policies []struct {
			Policy               string  `json:"policy"`
			VMs                  int     `json:"vms"`
			VCPUHours            float64 `json:"vcpu_hours"`
			VsRequested          float64 `json:"vcpu_hours_vs_requested"`
			VsOracle             float64 `json:"vcpu_hours_vs_oracle"`
			OverloadTimeFraction float64 `json:"overload_time_fraction"`
			ActionsPerVMDay      float64 `json:"actions_per_vm_day"`
		} `json:"policies"`
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatalf("%v:\n%s", err, out.String())
	}
	var names []string
	for _, p := range doc.Policies {
		names = append(names, p.Policy)
		if p.VMs != 5 {
			t.Errorf("%s: %d VMs, want 5", p.Policy, p.VMs)
		}
	}
	if got := strings.Join(names, ","); got != "static-requested,static-peak,oracle,threshold,sandpiper,vpa,predictive,predictive-lean" {
		t.Fatalf("policies %s", got)
	}
	// Bad files are reported by name and line, and skipped.
	for _, want := range []string{"over100_root:7:", "blank_root:2:", "5 VM(s) simulated, 2 skipped"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, errb.String())
		}
	}
	if st, err := os.Stat(plot); err != nil || st.Size() < 10000 {
		t.Errorf("plot: %v", err)
	}
}

func TestSimulateFormatsAndPolicies(t *testing.T) {
	pf := filepath.Join(t.TempDir(), "p.toml")
	os.WriteFile(pf, []byte("[lean]\nmode = \"predictive\"\nmin_gain = 0.05\n"), 0o644)
	var out, errb bytes.Buffer
	code := run([]string{"simulate", "--format", "csv", "--policy-file", pf, "--policies", "oracle, predictive,lean", "--requested", "4",
		fixtures + "planetlab/20110303"}, &out, &errb)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if code != 0 || len(lines) != 4 || !strings.HasPrefix(lines[0], "policy,vms,vcpu_hours,") ||
		!strings.HasPrefix(lines[1], "oracle,4,") || !strings.HasPrefix(lines[3], "lean,4,") {
		t.Fatalf("exit %d:\n%s\n%s", code, out.String(), errb.String())
	}
	out.Reset()
	if code := run([]string{"simulate", fixtures + "bitbrains", fixtures + "csv"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "| predictive ") {
		t.Fatalf("table: exit %d\n%s\n%s", code, out.String(), errb.String())
	}
}

func TestSimulateDecisions(t *testing.T) {
	var out, errb bytes.Buffer
	code := run([]string{"simulate", "--policies", "threshold,predictive", "--decisions", "metis_mcs_suffolk_edu_ rnp_dcc_ufjf", fixtures + "planetlab/20110303"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2*288 {
		t.Fatalf("%d lines, want one per policy and sample (576)", len(lines))
	}
	var step struct {
		Policy   string
		Demand   float64
		Online   int
		Decision *struct {
			Action string `json:"action"`
			Rule   string `json:"rule"`
			Reason string `json:"reason"`
		}
	}
	if err := json.Unmarshal([]byte(lines[300]), &step); err != nil || step.Policy != "predictive" || step.Decision == nil || step.Decision.Reason == "" {
		t.Fatalf("%v: %s", err, lines[300])
	}
	if code := run([]string{"simulate", "--decisions", "nope", fixtures + "planetlab/20110303"}, &out, &errb); code != 1 {
		t.Fatalf("unknown VM: exit %d", code)
	}
}

// TestSimulateSweep: one short sweep per folder and for both together,
// the matched table first, and the frontier plot.
func TestSimulateSweep(t *testing.T) {
	plot := filepath.Join(t.TempDir(), "f.svg")
	var out, errb bytes.Buffer
	code := run([]string{"simulate", "--sweep", "--policies", "vpa,predictive", "--plot", plot,
		fixtures + "planetlab/20110303", fixtures + "csv"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	text := strings.Join(strings.Fields(out.String()), " ")
	for _, want := range []string{"| vCPU-hours ÷ oracle's | at 0.5 % | at 1 % | at 2 % | at 3 % |", "| 20110303 |", "| csv |", "| all |",
		"| predictive | min_gain=0.0135 |"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(text, "threshold") {
		t.Error("--policies left threshold in")
	}
	if st, err := os.Stat(plot); err != nil || st.Size() < 5000 {
		t.Errorf("plot: %v", err)
	}
	out.Reset()
	if code := run([]string{"simulate", "--sweep", "--format", "json", "--policies", "sandpiper", fixtures + "planetlab/20110303"}, &out, &errb); code != 0 {
		t.Fatalf("json: exit %d: %s", code, errb.String())
	}
	var doc struct {
		Groups []struct {
			Name      string `json:"name"`
			Frontiers []struct {
				Policy string `json:"policy"`
			} `json:"frontiers"`
		} `json:"groups"`
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil || len(doc.Groups) != 1 || doc.Groups[0].Frontiers[0].Policy != "sandpiper" {
		t.Fatalf("json: %v %+v", err, doc)
	}
}

func TestSimulateUsageErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.toml")
	os.WriteFile(bad, []byte("[predictive]\nmin_gain = 3\n"), 0o644)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"simulate"}, 2, "no trace files"},
		{[]string{"simulate", "--format", "xml", fixtures + "csv"}, 2, "--format"},
		{[]string{"simulate", "--requested", "0", fixtures + "csv"}, 2, "--requested"},
		{[]string{"simulate", "--policies", "magic", fixtures + "csv"}, 2, `unknown policy "magic"`},
		{[]string{"simulate", "--policy-file", bad, fixtures + "csv"}, 2, "predictive.min_gain"},
		{[]string{"simulate", fixtures + "bad/over100_root"}, 1, "no VM could be simulated"},
		{[]string{"simulate", "--input", "xls", fixtures + "csv"}, 1, "unknown trace format"},
		{[]string{"simulate", "--plot", "x.pdf", fixtures + "csv"}, 2, ".svg or .png"},
		{[]string{"simulate", "--sweep-grid", fixtures + "csv"}, 2, "--sweep-grid needs --sweep"},
		{[]string{"simulate", "--sweep", "--decisions", "vm", fixtures + "csv"}, 2, "do not apply"},
		{[]string{"simulate", "--sweep", "--policies", "oracle", fixtures + "csv"}, 1, "no dynamic policy to sweep"},
		{[]string{"simulate", "--sweep", fixtures + "bad/over100_root"}, 1, "no VM could be simulated"},
	} {
		var out, errb bytes.Buffer
		if code := run(tc.args, &out, &errb); code != tc.code || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want %d and %q", tc.args, code, errb.String(), tc.code, tc.want)
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"simulate", "--help"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "predictive") || errb.Len() != 0 {
		t.Errorf("--help: exit %d, stdout %.80q, stderr %q; want the usage on stdout", code, out.String(), errb.String())
	}
}
