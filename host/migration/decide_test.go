package migration

import (
	"testing"
	"time"
)

func TestDecide(t *testing.T) {
	const mib = 1 << 20
	base := Input{RAMBytes: 256 * mib, Bandwidth: 32 * mib, DowntimeLimit: 300 * time.Millisecond, MaxPasses: 30}
	cases := []struct {
		dirty float64
		post  bool
		want  Mode
	}{
		{8 * mib, false, ModePreCopy},
		{64 * mib, false, ModeAutoConverge}, // throttled to 25 %: 16 MiB/s < 32 MiB/s
		{256 * mib, true, ModePostCopy},     // 64 MiB/s throttled still exceeds the link
		{256 * mib, false, ModeWait},
	}
	for _, c := range cases {
		in := base
		in.DirtyRate = c.dirty
		if got := Decide(in, c.post, 0.25); got != c.want {
			t.Errorf("dirty %v MiB/s post=%v: got %v want %v", c.dirty/mib, c.post, got, c.want)
		}
	}
}

func TestWatchdog(t *testing.T) {
	w := Watchdog{Window: 10 * time.Second}
	t0 := time.Unix(0, 0)
	if w.Observe(t0, 100) || w.Observe(t0.Add(5*time.Second), 90) {
		t.Fatal("progress reported as stall")
	}
	if w.Observe(t0.Add(14*time.Second), 95) {
		t.Fatal("stall before window since last low")
	}
	if !w.Observe(t0.Add(15*time.Second), 95) {
		t.Fatal("no stall after window without a new low")
	}
}
