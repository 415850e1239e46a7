package cgroup

import (
	"errors"
	"testing"
	"time"
)

func TestUnitCPU(t *testing.T) {
	fs := NewFS("testdata/fixtures")
	for unit, want := range map[string]time.Duration{
		"nginx.service":      1500 * time.Millisecond,
		"php8.2-fpm.service": 42 * time.Second,
		"web.service":        7 * time.Microsecond, // in another slice
	} {
		got, err := fs.UnitCPU(unit)
		if err != nil || got != want {
			t.Errorf("%s: %v, %v; want %v", unit, got, err, want)
		}
	}
	if _, err := fs.UnitCPU("absent.service"); !errors.Is(err, ErrNoUnit) {
		t.Errorf("absent unit: %v", err)
	}
	for _, bad := range []string{"../nginx.service", "nginx", "a/b.service", ""} {
		if _, err := fs.UnitCPU(bad); err == nil || errors.Is(err, ErrNoUnit) {
			t.Errorf("%q accepted: %v", bad, err)
		}
	}
}

func TestParseCPUStat(t *testing.T) {
	st, err := ParseCPUStat([]byte("usage_usec 10\nuser_usec 6\nsystem_usec 4\ncore_sched.force_idle_usec 0\n"))
	if err != nil || st != (CPUStat{Usage: 10 * time.Microsecond, User: 6 * time.Microsecond, System: 4 * time.Microsecond}) {
		t.Fatalf("%+v, %v", st, err)
	}
	for _, bad := range []string{"", "user_usec 5\n", "usage_usec -1\n", "usage_usec\n", "usage_usec 99999999999999999999\n"} {
		if _, err := ParseCPUStat([]byte(bad)); !errors.Is(err, ErrParse) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func FuzzParseCPUStat(f *testing.F) {
	f.Add([]byte("usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n"))
	f.Add([]byte("usage_usec 1 2\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseCPUStat(b)
		if err == nil && st.Usage < 0 {
			t.Fatalf("negative usage %v", st.Usage)
		}
	})
}
