package collector

import (
	"math"
	"testing"

	"github.com/prometheus/procfs"

	"github.com/hotplugheaven/hotplug/proto"
)

// jiffies builds a procfs.CPUStat the way procfs does: counters divided by
// USER_HZ (100).
func jiffies(user, nice, system, idle, iowait, irq, softirq, steal, guest, guestNice float64) procfs.CPUStat {
	return procfs.CPUStat{
		User: user / 100, Nice: nice / 100, System: system / 100, Idle: idle / 100,
		Iowait: iowait / 100, IRQ: irq / 100, SoftIRQ: softirq / 100, Steal: steal / 100,
		Guest: guest / 100, GuestNice: guestNice / 100,
	}
}

func TestFractions(t *testing.T) {
	base := jiffies(123457, 17, 40981, 9876543, 1234, 11, 999, 77, 5000, 3)
	for _, tc := range []struct {
		name   string
		cur    procfs.CPUStat
		want   proto.CPUStat
		wantOK bool
	}{
		{"all busy kinds", jiffies(123457+10, 17+10, 40981+10, 9876543+40, 1234+10, 11+10, 999+5, 77+5, 5000, 3),
			proto.CPUStat{Busy: 0.45, Idle: 0.40, IOWait: 0.10, Steal: 0.05}, true},
		{"guest time not counted twice", jiffies(123457+100, 17, 40981, 9876543, 1234, 11, 999, 77, 5000+100, 3),
			proto.CPUStat{Busy: 1}, true},
		{"guest_nice not counted twice", jiffies(123457, 17+50, 40981, 9876543+50, 1234, 11, 999, 77, 5000, 3+50),
			proto.CPUStat{Busy: 0.5, Idle: 0.5}, true},
		{"all stolen", jiffies(123457, 17, 40981, 9876543, 1234, 11, 999, 77+100, 5000, 3),
			proto.CPUStat{Steal: 1}, true},
		{"one jiffy", jiffies(123457, 17, 40981, 9876543+1, 1234, 11, 999, 77, 5000, 3),
			proto.CPUStat{Idle: 1}, true},
		{"no time passed", base, proto.CPUStat{}, false},
		{"iowait went backwards", jiffies(123457+50, 17, 40981, 9876543+50, 1234-1, 11, 999, 77, 5000, 3), proto.CPUStat{}, false},
		{"re-onlined: idle restarted", jiffies(123457+50, 17, 40981, 120, 1234, 11, 999, 77, 5000, 3), proto.CPUStat{}, false},
		{"NaN", jiffies(math.NaN(), 17, 40981, 9876543+50, 1234, 11, 999, 77, 5000, 3), proto.CPUStat{}, false},
		{"Inf", jiffies(math.Inf(1), 17, 40981, 9876543+50, 1234, 11, 999, 77, 5000, 3), proto.CPUStat{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := fractions(base, tc.cur)
			if ok != tc.wantOK {
				t.Fatalf("ok = %v, want %v (%+v)", ok, tc.wantOK, got)
			}
			if !closeTo(float64(got.Busy), float64(tc.want.Busy)) || !closeTo(float64(got.Idle), float64(tc.want.Idle)) ||
				!closeTo(float64(got.IOWait), float64(tc.want.IOWait)) || !closeTo(float64(got.Steal), float64(tc.want.Steal)) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestCPUFractions(t *testing.T) {
	prev := map[int64]procfs.CPUStat{
		0: jiffies(100, 0, 0, 100, 0, 0, 0, 0, 0, 0),
		1: jiffies(100, 0, 0, 100, 0, 0, 0, 0, 0, 0),
		2: jiffies(100, 0, 0, 100, 0, 0, 0, 0, 0, 0),
		9: jiffies(100, 0, 0, 100, 0, 0, 0, 0, 0, 0),
	}
	cur := map[int64]procfs.CPUStat{
		9:    jiffies(150, 0, 0, 150, 0, 0, 0, 0, 0, 0), // order must not follow the map
		0:    jiffies(200, 0, 0, 100, 0, 0, 0, 0, 0, 0),
		1:    jiffies(100, 0, 0, 50, 0, 0, 0, 0, 0, 0), // went backwards
		3:    jiffies(10, 0, 0, 10, 0, 0, 0, 0, 0, 0),  // hot-added: no baseline
		2000: jiffies(10, 0, 0, 10, 0, 0, 0, 0, 0, 0),  // past proto.MaxCPUs
		// cpu2 went offline
	}
	got, ids := cpuFractions(nil, prev, cur, nil)
	want := []proto.CPUStat{{CPU: 0, Busy: 1}, {CPU: 9, Busy: 0.5, Idle: 0.5}}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
	if len(ids) != 4 {
		t.Errorf("scratch ids = %v, want the 4 in-range CPUs", ids)
	}
}

// FuzzFractions: whatever the counters, fractions are in [0, 1] and sum to
// at most 1 within proto's slack, so the Report validates.
func FuzzFractions(f *testing.F) {
	f.Add(uint64(100), uint64(0), uint64(50), uint64(1000), uint64(5), uint64(0), uint64(3), uint64(7),
		uint64(160), uint64(0), uint64(60), uint64(1040), uint64(5), uint64(1), uint64(3), uint64(9))
	f.Fuzz(func(t *testing.T, u0, n0, s0, i0, w0, q0, sq0, st0, u1, n1, s1, i1, w1, q1, sq1, st1 uint64) {
		p := jiffies(float64(u0), float64(n0), float64(s0), float64(i0), float64(w0), float64(q0), float64(sq0), float64(st0), 0, 0)
		c := jiffies(float64(u1), float64(n1), float64(s1), float64(i1), float64(w1), float64(q1), float64(sq1), float64(st1), 0, 0)
		got, ok := fractions(p, c)
		if !ok {
			return
		}
		r := proto.Report{Seq: 1, IntervalNanos: int64(proto.MinInterval), CPUs: []proto.CPUStat{got}}
		if err := r.Validate(); err != nil {
			t.Fatalf("%+v -> %+v: %v", p, got, err)
		}
	})
}
