package engine

import (
	"testing"
	"time"

	"pgregory.net/rapid"
)

// kofnPolicy: 1 s interval, 3 of 5 above 80 %, 4 s sustained low, no
// cooldowns, a window long enough that bursts do not evict history.
func kofnPolicy() Policy {
	p := testPolicy()
	p.Window, p.N, p.K, p.DownSamples = 400, 5, 3, 4
	p.CooldownUp, p.CooldownDown = 0, 0
	return p
}

func at(e *Engine, t time.Time, online int, d float64) {
	e.Observe(Sample{Time: t, Online: online, Busy: min(d, float64(online)), Waiting: max(0, d-float64(online))})
}

// A thousand low reports within 10 ms are not a sustained low: the VM
// keeps its vCPUs. The same load reported once a second is one, after
// four seconds.
func TestBurstIsNotSustainedLow(t *testing.T) {
	e, _ := New(kofnPolicy())
	tm := t0
	for range 5 { // warm up at 4 vCPUs, busy
		tm = tm.Add(time.Second)
		at(e, tm, 4, 3)
	}
	e.Acted(tm)
	tm = tm.Add(time.Second)
	for i := range 1000 {
		at(e, tm.Add(time.Duration(i)*10*time.Microsecond), 4, 0.1)
	}
	if d := e.Decide(Input{Now: tm.Add(10 * time.Millisecond), Current: 4}); d.Action != Hold {
		t.Fatalf("after a 10 ms burst of 1000 low reports: %v %s (%s); want hold", d.Action, d.Rule, d.Reason)
	}
	for range 4 {
		tm = tm.Add(time.Second)
		at(e, tm, 4, 0.1)
	}
	if d := e.Decide(Input{Now: tm, Current: 4}); d.Action != ScaleDown || d.Rule != RuleSustainedLow {
		t.Fatalf("after 4 s of low reports at the interval: %v %s (%s); want a sustained-low scale-down", d.Action, d.Rule, d.Reason)
	}
}

// A burst of hot reports counts once; hot reports at the agent's fast
// rate (a quarter interval) confirm a hotspot in half a second.
func TestFastReportsConfirmBurstBurstOfReportsDoesNot(t *testing.T) {
	e, _ := New(kofnPolicy())
	tm := t0
	for range 5 {
		tm = tm.Add(time.Second)
		at(e, tm, 1, 0.2)
	}
	tm = tm.Add(time.Second)
	for i := range 1000 {
		at(e, tm.Add(time.Duration(i)*10*time.Microsecond), 1, 2)
	}
	if d := e.Decide(Input{Now: tm.Add(10 * time.Millisecond), Current: 1}); d.Action != Hold {
		t.Fatalf("after a 10 ms burst of 1000 hot reports: %v %s (%s); want hold", d.Action, d.Rule, d.Reason)
	}
	fast := kofnPolicy()
	fast.Window = 10 // ten intervals of time hold forty fast samples
	e2, _ := New(fast)
	tm = t0
	for range 5 {
		tm = tm.Add(time.Second)
		at(e2, tm, 1, 0.2)
	}
	onset := tm.Add(100 * time.Millisecond)
	var d Decision
	for i := range 3 {
		tm = onset.Add(time.Duration(i) * 250 * time.Millisecond)
		at(e2, tm, 1, 2)
		d = e2.Decide(Input{Now: tm, Current: 1})
	}
	if d.Action != ScaleUp || tm.Sub(onset) > 600*time.Millisecond {
		t.Fatalf("three hot reports 250 ms apart: %v %s (%s) %v after the first; want a scale-up within 0.6 s", d.Action, d.Rule, d.Reason, tm.Sub(onset))
	}
	// Minutes of fast reports never shrink the window below its ten
	// intervals: no warm-up again, no forgotten history.
	for range 400 {
		tm = tm.Add(250 * time.Millisecond)
		at(e2, tm, 1, 0.2)
	}
	if d = e2.Decide(Input{Now: tm, Current: 1}); d.Rule == RuleNotEnough || d.Evidence.Samples < 36 {
		t.Fatalf("after 100 s of fast reports: rule %s over %d samples; want the last ten intervals (40 samples) judged", d.Rule, d.Evidence.Samples)
	}
}

// Property: following each report of a steady one-a-second stream with a
// burst of copies a few milliseconds later (a guest flooding the same
// measurement) never produces a scale-down the stream alone would not, nor
// a k-of-n hotspot the stream alone does not have, nor ends the warm-up
// early. (A guest may of course report any values at the normal rate; the
// policy's bounds limit what that buys.)
func TestBurstsCannotFakeSustainedLoad(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		p := kofnPolicy()
		plain, _ := New(p)
		burst, _ := New(p)
		current := rapid.IntRange(1, 8).Draw(rt, "current")
		n := rapid.IntRange(5, 30).Draw(rt, "samples")
		copies := rapid.IntRange(1, 8).Draw(rt, "copies")
		tm := t0
		for i := range n {
			tm = tm.Add(time.Second)
			d := rapid.Float64Range(0, 10).Draw(rt, "demand")
			at(plain, tm, current, d)
			at(burst, tm, current, d)
			for c := 1; c <= copies; c++ {
				at(burst, tm.Add(time.Duration(c)*time.Millisecond), current, d)
			}
			now := tm.Add(time.Duration(copies+1) * time.Millisecond)
			dp := plain.Decide(Input{Now: now, Current: current})
			db := burst.Decide(Input{Now: now, Current: current})
			if db.Action == ScaleDown && dp.Action != ScaleDown {
				rt.Fatalf("sample %d: the burst made a scale-down (%s) the steady stream did not (%v %s)", i, db.Reason, dp.Action, dp.Reason)
			}
			if db.Rule == RuleHotspot && dp.Evidence.Above < p.K {
				rt.Fatalf("sample %d: the burst made a hotspot (%s) with only %d of the stream's samples above", i, db.Reason, dp.Evidence.Above)
			}
		}
	})
}
