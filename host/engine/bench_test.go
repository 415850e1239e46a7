package engine

import (
	"math/rand/v2"
	"testing"
	"time"
)

// BenchmarkDecide measures one observe+decide step for one VM with a full
// window, the work the actuator does per report.
func BenchmarkDecide(b *testing.B) { benchDecide(b, DefaultPolicy(), 2) }

// benchDecide steps one engine under p, with vcpus online and a random
// utilisation, once per iteration.
func benchDecide(b *testing.B, p Policy, vcpus int) {
	e, err := New(p)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	now := t0
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(5 * time.Second)
		e.Observe(Sample{Time: now, Online: vcpus, Busy: float64(vcpus) * rng.Float64()})
		_ = e.Decide(Input{Now: now, Current: vcpus})
	}
}

// BenchmarkDecide1000VMs steps 1,000 engines once per iteration: one
// sampling round of a host with 1,000 VMs. Report ns/op ÷ 1000 per decision.
func BenchmarkDecide1000VMs(b *testing.B) {
	engines := make([]*Engine, 1000)
	for i := range engines {
		engines[i], _ = New(DefaultPolicy())
	}
	rng := rand.New(rand.NewPCG(1, 2))
	now := t0
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(5 * time.Second)
		for _, e := range engines {
			e.Observe(Sample{Time: now, Online: 2, Busy: 2 * rng.Float64()})
			_ = e.Decide(Input{Now: now, Current: 2})
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000, "ns/decision")
}

// BenchmarkDecidePredictive is BenchmarkDecide for the predictive mode as
// the simulator's preset runs it: a 144-sample window, the pooled prior.
func BenchmarkDecidePredictive(b *testing.B) {
	p := DefaultPolicy()
	p.Mode = ModePredictive
	p.MaxVCPUs, p.K, p.N, p.Window = 8, 1, 1, 144
	p.CooldownUp, p.CooldownDown = 0, 0
	benchDecide(b, p, 4)
}
