package migration

import (
	"math"
	"testing"
	"time"
)

func TestPredictPreCopyTable(t *testing.T) {
	const mib = 1 << 20
	cases := []struct {
		name      string
		in        Input
		converges bool
		passes    int
	}{
		// Idle guest: one full pass, nothing left, downtime zero.
		{"idle", Input{RAMBytes: 256 * mib, Bandwidth: 32 * mib, DowntimeLimit: 300 * time.Millisecond}, true, 1},
		// D/B = 0.5: passes send 256,128,64,32,16 MiB; the 8 MiB left take 0.25 s at 32 MiB/s, within 300 ms.
		{"half", Input{RAMBytes: 256 * mib, DirtyRate: 16 * mib, Bandwidth: 32 * mib, DowntimeLimit: 300 * time.Millisecond}, true, 5},
		// D/B > 1: never converges, capped.
		{"faster-than-link", Input{RAMBytes: 256 * mib, DirtyRate: 64 * mib, Bandwidth: 32 * mib, DowntimeLimit: 300 * time.Millisecond, MaxPasses: 10}, false, 10},
	}
	for _, c := range cases {
		p, err := PredictPreCopy(c.in)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if p.Converges != c.converges || p.Passes != c.passes {
			t.Errorf("%s: got converges=%v passes=%d, want %v %d", c.name, p.Converges, p.Passes, c.converges, c.passes)
		}
		if p.Converges && p.Downtime > c.in.DowntimeLimit {
			t.Errorf("%s: downtime %v over limit", c.name, p.Downtime)
		}
	}
}

// Property: time is RAM/B times the geometric sum, and bytes sent >= RAM.
func TestPredictPreCopyProperties(t *testing.T) {
	for _, ratio := range []float64{0, 0.1, 0.3, 0.5, 0.8, 0.95} {
		in := Input{RAMBytes: 1e9, DirtyRate: ratio * 1e8, Bandwidth: 1e8, DowntimeLimit: 0, MaxPasses: 5}
		p, err := PredictPreCopy(in)
		if err != nil {
			t.Fatal(err)
		}
		want := 0.0
		for i := 0; i <= 5; i++ {
			want += 10 * math.Pow(ratio, float64(i))
		}
		if math.Abs(p.Total.Seconds()-want) > 1e-6 {
			t.Errorf("ratio %v: total %v want %vs", ratio, p.Total, want)
		}
		if p.BytesSent < in.RAMBytes {
			t.Errorf("ratio %v: bytes %v < RAM", ratio, p.BytesSent)
		}
	}
	if _, err := PredictPreCopy(Input{RAMBytes: 1}); err != ErrBadInput {
		t.Errorf("zero bandwidth: err %v", err)
	}
}
