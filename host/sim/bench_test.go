package sim

import (
	"context"
	"fmt"
	"iter"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// Benchmarks replay PlanetLab days. They use the four fixture VMs, cycled;
// SIM_BENCH_TRACES=folder uses a real day instead (e.g. the 1,052 VMs of
// ../shared/data/planetlab/20110303; several folders are separated by the
// OS's list separator, ":" on Linux). SIM_BENCH_FLEET=n sets the VMs of
// BenchmarkFleet (default 10,000; the scale is 100,000, which takes
// minutes).

func benchTraces(b *testing.B) []*Trace {
	dirs := filepath.SplitList(os.Getenv("SIM_BENCH_TRACES"))
	if len(dirs) == 0 {
		dirs = []string{"testdata/planetlab/20110303"}
	}
	var out []*Trace
	for t, err := range Read(dirs, ReadOptions{}) {
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, t)
	}
	return out
}

// fleet yields n VMs made from base, one at a time, as a reader would:
// only the VMs being replayed are in memory.
func fleet(base []*Trace, n int) iter.Seq2[*Trace, error] {
	return func(yield func(*Trace, error) bool) {
		for i := range n {
			src := base[i%len(base)]
			t := *src
			t.Name = src.Name + "#" + strconv.Itoa(i)
			t.Time = append([]int64(nil), src.Time...)
			t.Demand = append([]float64(nil), src.Demand...)
			if !yield(&t, nil) {
				return
			}
		}
	}
}

func samples(ts []*Trace) int {
	n := 0
	for _, t := range ts {
		n += len(t.Demand)
	}
	return n
}

// BenchmarkReplay: one policy, one core. vm-samples/s is the simulator's
// speed for that policy per core.
func BenchmarkReplay(b *testing.B) {
	ts := benchTraces(b)
	for _, p := range DefaultPolicies() {
		b.Run(p.Name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				for _, t := range ts {
					var st vmStats
					replay(t, p, DefaultActuation, &st, nil, nil)
				}
			}
			b.ReportMetric(float64(samples(ts))*float64(b.N)/b.Elapsed().Seconds(), "vm-samples/s")
		})
	}
}

// BenchmarkPlanetLabDay: 1,000 VMs × 288 samples through every policy,
// with all cores. s/day is the wall time of one such day; the issue wants
// it well under 10 s.
func BenchmarkPlanetLabDay(b *testing.B) {
	ts := benchTraces(b)
	for b.Loop() {
		rep, err := Simulate(context.Background(), fleet(ts, 1000), Config{Policies: DefaultPolicies(), Actuation: DefaultActuation}, nil)
		if err != nil || rep.VMs != 1000 {
			b.Fatal(err, rep.VMs)
		}
	}
	perDay := b.Elapsed().Seconds() / float64(b.N)
	b.ReportMetric(perDay, "s/day")
	b.ReportMetric(1000*288*float64(len(DefaultPolicies()))/perDay/float64(runtime.GOMAXPROCS(0)), "vm-policy-samples/s/core")
}

// BenchmarkFleet streams a large fleet for one day through every policy
// and reports the peak heap: it must not grow with the number of VMs.
func BenchmarkFleet(b *testing.B) {
	n := 10000
	if v, err := strconv.Atoi(os.Getenv("SIM_BENCH_FLEET")); err == nil && v > 0 {
		n = v
	}
	ts := benchTraces(b)
	b.Run(fmt.Sprintf("vms=%d", n), func(b *testing.B) {
		var peak atomic.Uint64
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			var m runtime.MemStats
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				runtime.ReadMemStats(&m)
				if m.HeapAlloc > peak.Load() {
					peak.Store(m.HeapAlloc)
				}
				select {
				case <-stop:
					return
				case <-tick.C:
				}
			}
		}()
		for b.Loop() {
			rep, err := Simulate(context.Background(), fleet(ts, n), Config{Policies: DefaultPolicies(), Actuation: DefaultActuation}, nil)
			if err != nil || rep.VMs != int64(n) {
				b.Fatal(err, rep.VMs)
			}
		}
		close(stop)
		<-done
		b.ReportMetric(float64(peak.Load())/(1<<20), "peak-heap-MiB")
		b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/run")
	})
}

// BenchmarkSweepDay: one PlanetLab day of 1,000 VMs (the traces of
// SIM_BENCH_TRACES, or the fixtures, cycled) through every policy's sweep,
// with the bounds, on all cores. s/day is the wall time per day: make
// evaluate-sweep runs ten.
func BenchmarkSweepDay(b *testing.B) {
	ts := benchTraces(b)
	pols, _, err := expand(DefaultPolicies(), false)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		rep, err := Sweep(context.Background(), []SweepInput{{Name: "day", Traces: fleet(ts, 1000)}},
			SweepConfig{Policies: DefaultPolicies(), Actuation: DefaultActuation}, nil)
		if err != nil || rep.Total().VMs != 1000 {
			b.Fatal(err)
		}
	}
	perDay := b.Elapsed().Seconds() / float64(b.N)
	b.ReportMetric(perDay, "s/day")
	b.ReportMetric(float64(len(pols)), "policy-settings")
	b.ReportMetric(1000*288*float64(len(pols))/perDay/float64(runtime.GOMAXPROCS(0)), "vm-policy-samples/s/core")
}
