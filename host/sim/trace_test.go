package sim

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParsePlanetLab(t *testing.T) {
	day := time.Date(2011, 3, 3, 0, 0, 0, 0, time.UTC)
	tr, err := parsePlanetLab("vm", strings.NewReader("0\n50\n100\n12.5\n\n"), 8, day)
	if err != nil {
		t.Fatal(err)
	}
	want := []float64{0, 4, 8, 1}
	if len(tr.Demand) != len(want) {
		t.Fatalf("demand %v, want %v", tr.Demand, want)
	}
	for i := range want {
		if tr.Demand[i] != want[i] {
			t.Fatalf("demand %v, want %v (CPU %% × 8 requested vCPUs)", tr.Demand, want)
		}
		if got := time.UnixMilli(tr.Time[i]).UTC(); !got.Equal(day.Add(time.Duration(i) * 5 * time.Minute)) {
			t.Fatalf("sample %d at %v, want every 300 s from %v", i, got, day)
		}
	}
	if tr.Requested != 8 || tr.Interval != 300*time.Second {
		t.Fatalf("requested %d interval %v", tr.Requested, tr.Interval)
	}

	for _, tc := range []struct{ in, where string }{
		{"10\n101\n", "vm:2:"},
		{"10\n-1\n", "vm:2:"},
		{"10\nNaN\n", "vm:2:"},
		{"10\n12%\n", "vm:2:"},
		{"10\n\n20\n", "vm:2: blank line"},
		{"", "no samples"},
		{"\n\n", "no samples"},
		{strings.Repeat("1", 5000), "vm:1:"}, // a line beyond the scanner's buffer
	} {
		_, err := parsePlanetLab("vm", strings.NewReader(tc.in), 8, day)
		if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), tc.where) {
			t.Errorf("%.20q: got %v, want an ErrFormat naming %q", tc.in, err, tc.where)
		}
	}
}

func TestParseBitbrains(t *testing.T) {
	head := "Timestamp [ms];\tCPU cores;\tCPU capacity provisioned [MHZ];\tCPU usage [MHZ];\tCPU usage [%]\n"
	secs := head + "1372629804;\t2;\t5851.9989;\t2925.99945;\t50\n1372630104;\t2;\t5851.9989;\t87.7799835;\t1.5\n"
	tr, err := parseBitbrains("vm.csv", strings.NewReader(secs))
	if err != nil {
		t.Fatal(err)
	}
	// One core is 5851.9989 ÷ 2 MHz: half the capacity is one CPU.
	if tr.Requested != 2 || math.Abs(tr.Demand[0]-1) > 1e-12 || math.Abs(tr.Demand[1]-0.03) > 1e-6 {
		t.Fatalf("requested %d demand %v, want 2 and [1 0.03]", tr.Requested, tr.Demand)
	}
	// The header says ms, the values are seconds: July 2013, not 1970.
	if got := time.UnixMilli(tr.Time[0]).UTC(); got.Year() != 2013 || tr.Interval != 300*time.Second {
		t.Fatalf("first sample at %v, interval %v: want 2013 and 5m", got, tr.Interval)
	}
	// A file whose timestamps really are milliseconds reads the same.
	ms := strings.ReplaceAll(strings.ReplaceAll(secs, "1372629804;", "1372629804000;"), "1372630104;", "1372630104000;")
	tr2, err := parseBitbrains("vm.csv", strings.NewReader(ms))
	if err != nil || tr2.Time[0] != tr.Time[0] || tr2.Time[1] != tr.Time[1] {
		t.Fatalf("milliseconds read as %v (%v), want %v", tr2.Time, err, tr.Time)
	}

	for _, tc := range []struct{ in, where string }{
		{"a;b\n1;2\n", "vm.csv:1: header has no"},
		{head + "1372629804;\t2;\t5851.9;\tlots;\t1\n", "vm.csv:2: column \"CPU usage [MHZ]\""},
		{head + "1372629804;\t0;\t5851.9;\t1;\t1\n", "vm.csv:2: want whole CPU cores"},
		{head + "1372629804;\t1.5;\t5851.9;\t1;\t1\n", "vm.csv:2: want whole CPU cores"},
		{head + "1372629804;\t2;\t5851.9\n", "vm.csv:2: want at least 5"},
		{head + "1372629804;\t2;\t5851.9;\t1;\t1\n1372629804;\t2;\t5851.9;\t1;\t1\n", "vm.csv:3: timestamp"},
		{head + "1e300;\t2;\t5851.9;\t1;\t1\n", "vm.csv:2: timestamp"},
		{head, "no samples"},
		{"", "vm.csv:1: empty"},
	} {
		_, err := parseBitbrains("vm.csv", strings.NewReader(tc.in))
		if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), tc.where) {
			t.Errorf("%.50q: got %v, want an ErrFormat naming %q", tc.in, err, tc.where)
		}
	}
}

func TestParseCSV(t *testing.T) {
	tr, err := parseCSV("a.csv", strings.NewReader("1000,0.5\n1060,2\n1120,1.5\n"), 4)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Interval != time.Minute || tr.Requested != 4 || tr.Time[1] != 1060000 || tr.Demand[1] != 2 {
		t.Fatalf("got %+v", tr)
	}
	f, err := os.Open("testdata/csv/web1.csv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr, err = parseCSV("web1.csv", f, 8)
	if err != nil || len(tr.Demand) != 8 || tr.Demand[3] != 3.1 || tr.Interval != time.Minute {
		t.Fatalf("web1.csv: %v, %+v", err, tr)
	}

	for _, tc := range []struct{ in, where string }{
		{"1000,0.5\n1060\n", "a.csv:2: want `timestamp,demand_cpus`"},
		{"1000,0.5\n1060,1,2\n", "a.csv:2: want"},
		{"1000,0.5\nyesterday,1\n", "a.csv:2: timestamp"},
		{"1000,0.5\n1060,-1\n", "a.csv:2: demand_cpus"},
		{"1000,0.5\n1060,Inf\n", "a.csv:2: demand_cpus"},
		{"1000,0.5\n1000,1\n", "a.csv:2: timestamp 1000 is not after"},
		{"1000,0.5\n", "one sample"},
		{"time,cpus\n", "no samples"},
		{"1000,0.5\n1001,0.5\n", "sampling interval 1s"}, // fine
		{"1000,0.5\n1000.01,0.5\n", "sampling interval 10ms is outside"},
	} {
		_, err := parseCSV("a.csv", strings.NewReader(tc.in), 8)
		if tc.where == "sampling interval 1s" {
			if err != nil {
				t.Errorf("%q: %v", tc.in, err)
			}
			continue
		}
		if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), tc.where) {
			t.Errorf("%q: got %v, want an ErrFormat naming %q", tc.in, err, tc.where)
		}
	}
}

func TestSniff(t *testing.T) {
	for in, want := range map[string]Format{
		"57\n45\n":                            FormatPlanetLab,
		"1000,0.5\n":                          FormatCSV,
		"timestamp,demand_cpus\n":             FormatCSV,
		"Timestamp [ms];\tCPU usage [MHZ];\n": FormatBitbrains,
	} {
		if got := sniff([]byte(in)); got != want {
			t.Errorf("%q sniffed as %s, want %s", in, got, want)
		}
	}
}

// TestRead streams a folder with good and bad files: the bad ones are
// reported by name and line, the rest still read.
func TestRead(t *testing.T) {
	var names []string
	var errs []string
	for tr, err := range Read([]string{"testdata/bad", "testdata/planetlab/20110303", "testdata/bitbrains", "testdata/csv/web1.csv", "testdata/missing"}, ReadOptions{}) {
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		names = append(names, tr.Name)
	}
	wantNames := []string{"good_root", "metis_mcs_suffolk_edu_ rnp_dcc_ufjf", "plab2_engr_sjsu_edu_root",
		"planetlab-2_cmcl_cs_cmu_edu_root", "planetlab1_unl_edu_root", "2013-7_1-head.csv", "web1.csv"}
	if strings.Join(names, "|") != strings.Join(wantNames, "|") {
		t.Fatalf("read %q, want %q", names, wantNames)
	}
	wantErrs := []string{filepath.Join("testdata", "bad", "blank_root") + ":2: blank line",
		filepath.Join("testdata", "bad", "over100_root") + ":7: want a CPU utilisation", "testdata/missing"}
	if len(errs) != len(wantErrs) {
		t.Fatalf("errors %q, want %d", errs, len(wantErrs))
	}
	for i := range wantErrs {
		if !strings.Contains(errs[i], wantErrs[i]) {
			t.Errorf("error %q should name %q", errs[i], wantErrs[i])
		}
	}
	// The folder's name dates PlanetLab samples.
	for tr, err := range Read([]string{"testdata/planetlab/20110303/planetlab1_unl_edu_root"}, ReadOptions{Requested: 4}) {
		if err != nil || time.UnixMilli(tr.Time[0]).UTC() != time.Date(2011, 3, 3, 0, 0, 0, 0, time.UTC) || tr.Requested != 4 || len(tr.Demand) != 288 {
			t.Fatalf("%v %+v", err, tr)
		}
	}
}
