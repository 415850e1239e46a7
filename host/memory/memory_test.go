package memory

import (
	"math"
	"strings"
	"testing"
	"time"
)

const (
	mib = uint64(1) << 20
	gib = uint64(1) << 30
)

var t0 = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

func pressurePolicy() Policy {
	p := DefaultPolicy()
	p.Mode = ModePressure
	p.Min, p.Max = Size(512*mib), Size(4*gib)
	return p
}

// calm is a sample of a guest with total bytes, avail of them available
// and no pressure at all.
func calm(at time.Time, total, avail uint64) Sample {
	return Sample{Time: at, Interval: time.Second, Total: total, Available: avail, HavePSI: true}
}

func TestValidateNamesKeys(t *testing.T) {
	if err := DefaultPolicy().Validate(); err != nil {
		t.Fatalf("default policy: %v", err)
	}
	if err := pressurePolicy().Validate(); err != nil {
		t.Fatalf("pressure policy: %v", err)
	}
	for _, c := range []struct {
		key string
		mod func(*Policy)
	}{
		{"memory.mode", func(p *Policy) { p.Mode = "balloon-ish" }},
		{"memory.max", func(p *Policy) { p.Max = 0 }},
		{"memory.min", func(p *Policy) { p.Min = Size(8 * gib) }},
		{"memory.block", func(p *Policy) { p.Block = 3 << 20 }},
		{"memory.block", func(p *Policy) { p.Block = 4096 }},
		{"memory.stall_target", func(p *Policy) { p.StallTarget = math.NaN() }},
		{"memory.headroom", func(p *Policy) { p.Headroom = 0.9 }},
		{"memory.refault_limit", func(p *Policy) { p.RefaultLimit = 0 }},
		{"memory.grow_step", func(p *Policy) { p.GrowStep = 2 }},
		{"memory.shrink_step", func(p *Policy) { p.ShrinkStep = -1 }},
		{"memory.quiet", func(p *Policy) { p.Quiet = -time.Second }},
		{"memory.oom_hold", func(p *Policy) { p.OOMHold = 48 * time.Hour }},
	} {
		p := pressurePolicy()
		c.mod(&p)
		err := p.Validate()
		if err == nil || !strings.Contains(err.Error(), c.key+":") {
			t.Errorf("%s: got %v, want an error naming the key", c.key, err)
		}
	}
}

func TestOffHolds(t *testing.T) {
	e := New(DefaultPolicy(), gib)
	e.Observe(Sample{Time: t0, Interval: time.Second, Total: gib, Available: 0, OOMKills: 3})
	if d := e.Decide(t0, gib, 0); d.Action != Hold || d.Rule != RuleOff {
		t.Fatalf("off: %+v", d)
	}
}

func TestWarmupKeepsSizeWithinBounds(t *testing.T) {
	e := New(pressurePolicy(), 256*mib)
	d := e.Decide(t0, 256*mib, 0)
	if d.Rule != RuleWarmup || d.To != 512*mib || d.Action != Grow {
		t.Fatalf("a VM under its minimum grows to it even before a report: %+v", d)
	}
	d = e.Decide(t0, gib, 0)
	if d.Action != Hold || d.To != gib {
		t.Fatalf("warm-up within bounds holds: %+v", d)
	}
}

func TestGrowRules(t *testing.T) {
	cur := gib
	for _, c := range []struct {
		rule string
		s    Sample
	}{
		{RuleOOM, Sample{Total: gib, Available: 500 * mib, OOMKills: 1}},
		{RuleStall, Sample{Total: gib, Available: 500 * mib, HavePSI: true, StallSome: 50 * time.Millisecond}},
		{RuleSwapIn, Sample{Total: gib, Available: 500 * mib, SwapIns: 10}},
		{RuleRefault, Sample{Total: gib, Available: 500 * mib, Refaults: 1000}},
		{RuleHeadroom, Sample{Total: gib, Available: 50 * mib}},
	} {
		e := New(pressurePolicy(), 512*mib)
		c.s.Time, c.s.Interval = t0, time.Second
		e.Observe(c.s)
		d := e.Decide(t0, cur, 0)
		if d.Action != Grow || d.Rule != c.rule {
			t.Errorf("%s: %+v", c.rule, d)
			continue
		}
		// At least a grow step (25 %), rounded to the block.
		if d.To < cur+cur/4 || d.To%(128*mib) != 0 {
			t.Errorf("%s: grew %d → %d MiB, want ≥ +25 %% in 128 MiB blocks", c.rule, d.From>>20, d.To>>20)
		}
		if d.Reason == "" {
			t.Errorf("%s: no reason", c.rule)
		}
	}
}

func TestStallBelowTargetIsNotPressure(t *testing.T) {
	e := New(pressurePolicy(), 512*mib)
	e.Observe(Sample{Time: t0, Interval: time.Second, Total: gib, Available: 500 * mib, HavePSI: true,
		StallSome: 5 * time.Millisecond}) // 0.5 %, target 1 %
	if d := e.Decide(t0, gib, 0); d.Action != Hold {
		t.Fatalf("%+v", d)
	}
	// Without PSI a stall figure means nothing.
	e = New(pressurePolicy(), 512*mib)
	e.Observe(Sample{Time: t0, Interval: time.Second, Total: gib, Available: 500 * mib, StallSome: time.Second})
	if d := e.Decide(t0, gib, 0); d.Action != Hold {
		t.Fatalf("stall without PSI: %+v", d)
	}
}

func TestHeadroomGrowsEnoughForTheUsedMemory(t *testing.T) {
	e := New(pressurePolicy(), 512*mib)
	// 2 GiB guest, 100 MiB available: used 1948 MiB; with 10 % headroom it
	// wants 1948/0.9 = 2164 MiB of MemTotal, but a grow step is 512 MiB.
	e.Observe(Sample{Time: t0, Interval: time.Second, Total: 2 * gib, Available: 100 * mib})
	d := e.Decide(t0, 2*gib, 0)
	if d.Rule != RuleHeadroom || d.To != 2*gib+512*mib {
		t.Fatalf("%+v", d)
	}
	// A gap larger than a step: 1 GiB guest with all of it used wants
	// 1138 MiB for its headroom, and a step of 256 MiB is less than the
	// 2 GiB the VM has: the VM is at 2 GiB, the guest sees 1 GiB (memory
	// not yet onlined), so the gap of 114 MiB is added to the larger size.
	e.Observe(Sample{Time: t0, Interval: time.Second, Total: 3 * gib, Available: 0})
	d = e.Decide(t0, 3*gib, 0)
	if d.To != 3*gib+768*mib { // 3072/0.9 = 3413 MiB, less than a 768 MiB step
		t.Fatalf("to %d MiB, want 3840", d.To>>20)
	}
	e.Observe(Sample{Time: t0, Interval: time.Second, Total: 6 * gib, Available: 0})
	p := pressurePolicy()
	p.Max, p.GrowStep = Size(16*gib), 0.05
	e.SetPolicy(p)
	d = e.Decide(t0, 6*gib, 0)
	if d.To != 6*gib+768*mib { // 6144/0.9 = 6827 MiB: 683 MiB more, rounded up to 768
		t.Fatalf("to %d MiB, want 6912", d.To>>20)
	}
}

func TestGrowHeldToMaxAndHostLimit(t *testing.T) {
	e := New(pressurePolicy(), 512*mib)
	e.Observe(Sample{Time: t0, Interval: time.Second, Total: 4 * gib, Available: 0, OOMKills: 1})
	d := e.Decide(t0, 4*gib, 0)
	if d.Action != Hold || d.To != 4*gib || d.Rule != RuleBounds {
		t.Fatalf("at max: %+v", d)
	}
	d = e.Decide(t0, 2*gib, 3*gib-1)
	if d.To != 2*gib+896*mib || !strings.Contains(d.Reason, "held to") {
		t.Fatalf("host limit 3 GiB-1 rounds down to 2944 MiB: %+v", d)
	}
	// The host limit may be below the current size: that is a shrink the
	// actuator is told to make, never a grow.
	d = e.Decide(t0, 2*gib, gib)
	if d.Action != Shrink || d.To != gib {
		t.Fatalf("host limit below current: %+v", d)
	}
}

// The shrink path: nothing before the quiet period, then a step, then
// another quiet period, never below the floors.
func TestShrinkAfterQuietInStepsToTheFloor(t *testing.T) {
	p := pressurePolicy()
	e := New(p, 512*mib)
	cur := 4 * gib
	used := 600 * mib
	var shrinks []uint64
	for i := 0; i < 3600; i++ {
		now := t0.Add(time.Duration(i) * time.Second)
		e.Observe(calm(now, cur, cur-used))
		d := e.Decide(now, cur, 0)
		if d.Action == Grow {
			t.Fatalf("%v: grew on a calm guest: %+v", now.Sub(t0), d)
		}
		if d.Action == Shrink {
			if i < int(p.Quiet/time.Second) {
				t.Fatalf("shrank after %ds, quiet period %v", i, p.Quiet)
			}
			if len(shrinks) > 0 && d.Rule != RuleSlack {
				t.Fatalf("rule %s", d.Rule)
			}
			if d.From-d.To > uint64(p.ShrinkStep*float64(d.From))+uint64(p.Block) {
				t.Fatalf("shrink %d → %d MiB is more than a step", d.From>>20, d.To>>20)
			}
			if d.To%uint64(p.Block) != 0 {
				t.Fatalf("to %d not a multiple of the block", d.To)
			}
			shrinks = append(shrinks, uint64(i))
			cur = d.To
		}
	}
	floor := roundUp(uint64(float64(used)*1.2), uint64(p.Block)) // used + 2×headroom
	if cur != max(floor, 512*mib) {
		t.Fatalf("after an hour at %d MiB, want the floor %d MiB", cur>>20, floor>>20)
	}
	for i := 1; i < len(shrinks); i++ {
		if gap := shrinks[i] - shrinks[i-1]; gap < uint64(p.Quiet/time.Second) {
			t.Fatalf("shrinks %ds apart, quiet period %v", gap, p.Quiet)
		}
	}
	t.Logf("%d shrinks, 4096 → %d MiB", len(shrinks), cur>>20)
}

func TestFloorIsBootMemoryAndMin(t *testing.T) {
	p := pressurePolicy()
	e := New(p, 2*gib)
	cur := 3 * gib
	for i := 0; i < 7200; i++ {
		now := t0.Add(time.Duration(i) * time.Second)
		e.Observe(calm(now, cur, cur-100*mib))
		if d := e.Decide(now, cur, 0); d.Action == Shrink {
			cur = d.To
		}
	}
	if cur != 2*gib {
		t.Fatalf("shrank to %d MiB, boot memory 2048", cur>>20)
	}
}

func TestNoShrinkAfterSwapInOrOOM(t *testing.T) {
	p := pressurePolicy()
	for _, c := range []struct {
		name string
		bad  Sample
		hold time.Duration
	}{
		{"swap-in", Sample{SwapIns: 3}, p.SwapHold},
		{"oom", Sample{OOMKills: 1}, p.OOMHold},
	} {
		e := New(p, 512*mib)
		cur := 2 * gib
		s := calm(t0, cur, cur/2)
		s.SwapIns, s.OOMKills = c.bad.SwapIns, c.bad.OOMKills
		e.Observe(s)
		d := e.Decide(t0, cur, 0)
		if d.Action != Grow {
			t.Fatalf("%s: %+v", c.name, d)
		}
		cur = d.To
		first := time.Duration(-1) // none
		for i := 1; i < 7200; i++ {
			now := t0.Add(time.Duration(i) * time.Second)
			e.Observe(calm(now, cur, cur/2))
			if d := e.Decide(now, cur, 0); d.Action == Shrink {
				first = now.Sub(t0)
				if c.name == "oom" && d.To < d.Floor {
					t.Fatalf("below the floor: %+v", d)
				}
				break
			}
		}
		if c.name == "swap-in" && first < 0 {
			t.Fatalf("swap-in: no shrink within two hours of calm")
		}
		if first >= 0 && first < c.hold {
			t.Fatalf("%s: first shrink after %v, hold %v", c.name, first, c.hold)
		}
	}
}

func TestOOMRaisesTheFloor(t *testing.T) {
	p := pressurePolicy()
	p.OOMHold = time.Minute
	e := New(p, 512*mib)
	s := calm(t0, gib, 800*mib)
	s.OOMKills = 1
	e.Observe(s)
	d := e.Decide(t0, gib, 0)
	if d.Rule != RuleOOM || d.To != gib+256*mib {
		t.Fatalf("%+v", d)
	}
	cur := d.To
	for i := 1; i < 7200; i++ {
		now := t0.Add(time.Duration(i) * time.Second)
		e.Observe(calm(now, cur, cur-100*mib))
		if d := e.Decide(now, cur, 0); d.Action == Shrink {
			cur = d.To
		}
	}
	if cur != gib+256*mib {
		t.Fatalf("after an OOM at 1 GiB the floor is 1280 MiB; shrank to %d MiB", cur>>20)
	}
}

func TestPressureResetsTheQuietPeriod(t *testing.T) {
	p := pressurePolicy()
	e := New(p, 512*mib)
	cur := 2 * gib
	for i := 0; i < 600; i++ {
		now := t0.Add(time.Duration(i) * time.Second)
		s := calm(now, cur, gib)
		if i%60 == 59 { // a stall every minute, before the 2-minute quiet ends
			s.StallSome = 100 * time.Millisecond
		}
		e.Observe(s)
		d := e.Decide(now, cur, 0)
		if d.Action == Shrink {
			t.Fatalf("shrank at %ds though pressure came back every minute", i)
		}
		cur = d.To
	}
}

func TestSqueezeLowestPriorityMostSlackFirst(t *testing.T) {
	tenants := []Tenant{
		{Name: "gold", Priority: 2, Current: 4 * gib, Floor: gib, Block: 128 * mib},
		{Name: "small-slack", Priority: 1, Current: 2 * gib, Floor: 1792 * mib, Block: 128 * mib},
		{Name: "big-slack", Priority: 1, Current: 4 * gib, Floor: gib, Block: 128 * mib},
		{Name: "at-floor", Priority: 0, Current: gib, Floor: gib, Block: 128 * mib},
	}
	if cuts, short := Squeeze(2*gib, gib, tenants); cuts != nil || short != 0 {
		t.Fatalf("no pressure, cuts %v short %d", cuts, short)
	}
	// 1.5 GiB short: all from big-slack (3 GiB of slack).
	cuts, short := Squeeze(512*mib, 2*gib, tenants)
	if short != 0 || len(cuts) != 1 || cuts[0].Name != "big-slack" || cuts[0].To != 4*gib-1536*mib {
		t.Fatalf("cuts %+v short %d", cuts, short)
	}
	// 4 GiB short: big-slack to its floor, small-slack next, then gold.
	cuts, short = Squeeze(0, 4*gib, tenants)
	names := []string{}
	var got uint64
	for _, c := range cuts {
		names = append(names, c.Name)
		got += c.From - c.To
		for _, tn := range tenants {
			if tn.Name == c.Name && c.To < tn.Floor {
				t.Fatalf("%s cut below its floor: %+v", c.Name, c)
			}
		}
	}
	if strings.Join(names, ",") != "big-slack,small-slack,gold" || got != 4*gib || short != 0 {
		t.Fatalf("cuts %v (%d MiB) short %d", names, got>>20, short)
	}
	// More than all the slack: what is missing is said.
	_, short = Squeeze(0, 16*gib, tenants)
	if short != 16*gib-(3*gib+256*mib+3*gib) {
		t.Fatalf("short %d MiB", short>>20)
	}
}

func TestFloorOfAnEngine(t *testing.T) {
	e := New(pressurePolicy(), 256*mib)
	if f := e.Floor(t0); f != 512*mib {
		t.Fatalf("no report: floor %d MiB, want the minimum", f>>20)
	}
	e.Observe(calm(t0, 2*gib, gib))
	if f := e.Floor(t0); f != 1280*mib { // 1 GiB used × 1.2 = 1229 MiB, rounded up
		t.Fatalf("floor %d MiB", f>>20)
	}
}

// Whatever a guest reports, a decision stays within [Min, min(Max, host
// limit)], a change lands on whole blocks, and a Hold keeps the size.
func FuzzDecideBounded(f *testing.F) {
	f.Add(uint64(gib), uint64(gib), uint64(0), int64(0), uint64(0), uint64(0), uint64(0), uint64(2*gib), uint64(0))
	f.Add(uint64(0), uint64(1<<63), uint64(1<<62), int64(-1), uint64(1<<63), uint64(1<<63), uint64(1<<63), uint64(1), uint64(1))
	f.Fuzz(func(t *testing.T, total, avail, refaults uint64, stall int64, swapIns, ooms, boot, current, hostLimit uint64) {
		p := pressurePolicy()
		e := New(p, boot)
		now := t0
		for i := 0; i < 3; i++ {
			e.Observe(Sample{Time: now, Interval: time.Second, Total: total, Available: avail, HavePSI: true,
				StallSome: time.Duration(stall), Refaults: refaults, SwapIns: swapIns, OOMKills: ooms})
			d := e.Decide(now, current, hostLimit)
			ceiling := uint64(p.Max)
			if hostLimit > 0 {
				ceiling = min(ceiling, hostLimit)
			}
			ceiling = roundDown(ceiling, uint64(p.Block))
			lo := roundUp(uint64(p.Min), uint64(p.Block))
			if d.To > max(ceiling, lo) || d.To < min(lo, ceiling) || (d.Action != Hold && d.To%uint64(p.Block) != 0) {
				t.Fatalf("to %d outside [%d, %d] or not in blocks: %+v", d.To, lo, ceiling, d)
			}
			if d.Action == Hold && d.To != current {
				t.Fatalf("hold moved the size: %+v", d)
			}
			if (d.Action == Grow) != (d.To > current) || (d.Action == Shrink) != (d.To < current) {
				t.Fatalf("action %v from %d to %d", d.Action, current, d.To)
			}
			current = d.To
			now = now.Add(time.Hour)
		}
	})
}

func TestSizeText(t *testing.T) {
	for in, want := range map[string]Size{"512MiB": Size(512 * mib), "4GiB": Size(4 * gib), "4G": Size(4 * gib), "1024": 1024,
		" 2 GiB ": Size(2 * gib), "1TiB": 1 << 40, "64KiB": 64 << 10, "100B": 100} {
		var s Size
		if err := s.UnmarshalText([]byte(in)); err != nil || s != want {
			t.Errorf("%q: %v, %v; want %v", in, s, err, want)
		}
	}
	for _, in := range []string{"", "-1GiB", "1.5GiB", "lots", "99999999999TiB", "1 PiB"} {
		var s Size
		if err := s.UnmarshalText([]byte(in)); err == nil {
			t.Errorf("%q: accepted as %v", in, s)
		}
	}
	for s, want := range map[Size]string{Size(512 * mib): "512MiB", Size(4 * gib): "4GiB", Size(1536 * mib): "1536MiB", 1000: "1000B", 0: "0B"} {
		if got := s.String(); got != want {
			t.Errorf("%d: %q, want %q", uint64(s), got, want)
		}
	}
}
