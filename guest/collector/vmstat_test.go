package collector

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseVMStat(t *testing.T) {
	for _, tc := range []struct {
		name         string
		in           string
		wantIn, want uint64
		wantErr      error
	}{
		{"fixture", "", 1532, 4410, nil}, // replaced by testdata/guest4/proc/vmstat below
		{"minimal", "pswpin 3\npswpout 4\n", 3, 4, nil},
		{"no trailing newline", "nr_free_pages 1\npswpout 4\npswpin 3", 3, 4, nil},
		{"names that only start alike", "pswpin_foo 9\npswpin 1\npswpout 2\npswpout_bar 9\n", 1, 2, nil},
		{"missing pswpout", "pswpin 3\n", 0, 0, errNoSwapCounters},
		{"empty", "", 0, 0, errNoSwapCounters},
		{"garbage value", "pswpin -1\npswpout 2\n", 0, 0, ErrParse},
		{"overflow", "pswpin 18446744073709551616\npswpout 2\n", 0, 0, ErrParse},
		{"max", "pswpin 18446744073709551615\npswpout 0\n", 1<<64 - 1, 0, nil},
		{"lines without a value", "pswpin\npswpin 5\npswpout 6\n", 5, 6, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := []byte(tc.in)
			if tc.name == "fixture" {
				var err error
				if data, err = os.ReadFile(filepath.Join("testdata", "guest4", "proc", "vmstat")); err != nil {
					t.Fatal(err)
				}
			}
			in, out, err := parseVMStat(data)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("error %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if in != tc.wantIn || out != tc.want {
				t.Errorf("got %d, %d; want %d, %d", in, out, tc.wantIn, tc.want)
			}
		})
	}
}

func FuzzParseVMStat(f *testing.F) {
	f.Add([]byte("pswpin 1\npswpout 2\n"))
	f.Add([]byte("pswpin 1\r\npswpout x"))
	f.Fuzz(func(t *testing.T, b []byte) {
		in, out, err := parseVMStat(b)
		if err != nil && (in != 0 || out != 0) {
			t.Errorf("error %v with values %d, %d", err, in, out)
		}
	})
}

func TestSwapRates(t *testing.T) {
	for _, tc := range []struct {
		name        string
		prev, cur   swapCounters
		ivl         int64
		wantIn, out float64
	}{
		{"normal", swapCounters{10, 20, true}, swapCounters{110, 420, true}, 2e9, 50, 200},
		{"no baseline", swapCounters{}, swapCounters{110, 420, true}, 1e9, 0, 0},
		{"source vanished", swapCounters{10, 20, true}, swapCounters{}, 1e9, 0, 0},
		{"counter went backwards", swapCounters{10, 20, true}, swapCounters{5, 30, true}, 1e9, 0, 10},
		{"absurd rate is capped", swapCounters{0, 0, true}, swapCounters{1 << 62, 0, true}, 1e9, maxRatePerSec, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in, out := swapRates(tc.prev, tc.cur, tc.ivl)
			if in != tc.wantIn || out != tc.out {
				t.Errorf("got %v, %v; want %v, %v", in, out, tc.wantIn, tc.out)
			}
		})
	}
}

func TestReadFileInto(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	content := strings.Repeat("0123456789", 1000)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 0, 16)
	got, err := readFileInto(p, buf, 1<<20)
	if err != nil || string(got) != content {
		t.Fatalf("got %d bytes, %v", len(got), err)
	}
	again, err := readFileInto(p, got[:0], 1<<20)
	if err != nil || &again[0] != &got[0] {
		t.Errorf("buffer not reused (err %v)", err)
	}
	if _, err := readFileInto(p, nil, 100); err == nil {
		t.Error("no error past the limit")
	}
}
