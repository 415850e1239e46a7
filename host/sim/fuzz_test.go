package sim

import (
	"bytes"
	"errors"
	"math"
	"os"
	"testing"
	"time"
)

// checkTrace asserts what every reader promises of a trace it returns.
func checkTrace(t *testing.T, tr *Trace, err error) {
	t.Helper()
	if err != nil {
		if !errors.Is(err, ErrFormat) {
			t.Fatalf("error not wrapping ErrFormat: %v", err)
		}
		return
	}
	if len(tr.Demand) == 0 || len(tr.Time) != len(tr.Demand) || tr.Requested < 1 || tr.Interval < minInterval || tr.Interval > maxInterval {
		t.Fatalf("malformed trace accepted: %d samples, %d times, requested %d, interval %v", len(tr.Demand), len(tr.Time), tr.Requested, tr.Interval)
	}
	for i, d := range tr.Demand {
		if math.IsNaN(d) || math.IsInf(d, 0) || d < 0 {
			t.Fatalf("demand[%d] = %v", i, d)
		}
		if i > 0 && tr.Time[i] <= tr.Time[i-1] {
			t.Fatalf("time[%d] = %d not after %d", i, tr.Time[i], tr.Time[i-1])
		}
	}
	// Whatever was accepted must replay without trouble.
	for _, p := range DefaultPolicies() {
		if _, err := Decisions(tr, p, DefaultActuation); err != nil {
			t.Fatalf("accepted trace does not replay under %s: %v", p.Name, err)
		}
	}
}

func seed(f *testing.F, files ...string) {
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

func FuzzPlanetLab(f *testing.F) {
	seed(f, "testdata/planetlab/20110303/planetlab1_unl_edu_root", "testdata/bad/over100_root", "testdata/bad/blank_root")
	f.Add([]byte("1e2\n0x10\n+5\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := parsePlanetLab("f", bytes.NewReader(b), 8, time.Unix(0, 0))
		checkTrace(t, tr, err)
	})
}

func FuzzBitbrains(f *testing.F) {
	seed(f, "testdata/bitbrains/2013-7_1-head.csv")
	f.Add([]byte("Timestamp [ms];CPU cores;CPU capacity provisioned [MHZ];CPU usage [MHZ]\n1;1;1;1\n301;1;1;1e308\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := parseBitbrains("f", bytes.NewReader(b))
		checkTrace(t, tr, err)
	})
}

func FuzzCSV(f *testing.F) {
	seed(f, "testdata/csv/web1.csv")
	f.Add([]byte("1e10,1\n1e11,2\n1e11,3\n"))
	f.Add([]byte("0,0\n1,1e308\n2,1e308\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := parseCSV("f", bytes.NewReader(b), 8)
		checkTrace(t, tr, err)
	})
}
