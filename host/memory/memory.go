// Package memory decides how much memory a VM should have, from the
// guest's own pressure.
//
// It is pure, as the vCPU engine is: samples and a clock go in, decisions
// come out; no I/O, no goroutines, no wall clock. The live actuator's
// memory controller and the simulator run the same code.
//
// The guest-need loop follows Meta's senpai (TMO, ASPLOS'22), which sizes
// cgroups from PSI: grow at once when the guest stalls on memory (PSI
// "some" above a target share of the interval), when evicted pages are
// needed again (workingset refaults), when it swaps in, or when
// MemAvailable falls under a headroom; shrink slowly, only after a quiet
// period, in small steps rounded to the device's block size. Floors keep
// a shrink safe: the policy's minimum, the boot memory, what the guest
// uses plus the headroom, no shrink while swap-in was seen recently, and
// after an OOM kill a raised floor and a hold on shrinking. Each decision
// names its rule and its numbers, as the vCPU engine's do.
//
// Host pressure (the host short of memory) is decided across VMs by
// Squeeze, MoM-like: the VMs with the most slack give first, lowest
// priority first.
package memory

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Modes of memory sizing.
const (
	ModeOff      = "off"      // memory is left as it is
	ModePressure = "pressure" // sized from the guest's pressure
	// Baselines of the field, from the host's side only, for comparison
	// (baselines.go): Proxmox VE's auto-ballooning and oVirt MoM's
	// balloon rule. They need the host's memory (SetHost).
	ModeProxmox = "proxmox"
	ModeMoM     = "mom"
)

// Policy is one VM's memory policy: the [vm.memory] table of the
// actuator's configuration. Sizes are bytes.
type Policy struct {
	Mode string `toml:"mode" json:"mode"`
	// Priority orders VMs under host pressure: the lowest gives memory
	// back first.
	Priority int `toml:"priority" json:"priority"`
	// Min and Max bound the VM's memory; Max at most the device's.
	Min Size `toml:"min" json:"min"`
	Max Size `toml:"max" json:"max"`
	// Block is the resize granularity (virtio-mem's block size, or the
	// guest's memory block); sizes are multiples of it.
	Block Size `toml:"block" json:"block"`
	// StallTarget is the share of the interval with some task stalled on
	// memory above which the guest grows (senpai's 0.1 % is for cgroups
	// whose reclaim is driven on purpose; a VM's guest reclaims on its
	// own, so the default is higher).
	StallTarget float64 `toml:"stall_target" json:"stall_target"`
	// Headroom is the share of the guest's memory MemAvailable should keep.
	Headroom float64 `toml:"headroom" json:"headroom"`
	// RefaultLimit is refaulted pages per second per GiB of guest memory
	// above which the working set no longer fits.
	RefaultLimit float64 `toml:"refault_limit" json:"refault_limit"`
	// GrowStep is the share of the current size added at least by a grow.
	GrowStep float64 `toml:"grow_step" json:"grow_step"`
	// ShrinkStep is the share of the current size removed at most by a
	// shrink.
	ShrinkStep float64 `toml:"shrink_step" json:"shrink_step"`
	// Quiet is how long no grow rule may fire before a shrink.
	Quiet time.Duration `toml:"quiet" json:"quiet"`
	// SwapHold is how long after a swap-in no shrink is made.
	SwapHold time.Duration `toml:"swap_hold" json:"swap_hold"`
	// ResizeTimeout is how long a resize may take before it ends at what
	// the guest reached.
	ResizeTimeout time.Duration `toml:"resize_timeout" json:"resize_timeout"`
	// OOMHold is how long after an OOM kill no shrink is made; the floor
	// is raised to the size at the kill plus a grow step.
	OOMHold time.Duration `toml:"oom_hold" json:"oom_hold"`
}

// DefaultPolicy is memory sizing off, with the settings a "pressure" mode
// starts from.
func DefaultPolicy() Policy {
	return Policy{Mode: ModeOff, Block: 128 << 20, StallTarget: 0.01, Headroom: 0.10, RefaultLimit: 256,
		GrowStep: 0.25, ShrinkStep: 0.05, Quiet: 2 * time.Minute, ResizeTimeout: 20 * time.Second, SwapHold: 10 * time.Minute, OOMHold: 30 * time.Minute}
}

// Validate says what is wrong with p, naming the key.
func (p Policy) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{key}, args...)...))
	}
	switch p.Mode {
	case ModeOff, ModePressure, ModeProxmox, ModeMoM:
	default:
		bad("memory.mode", "must be %q, %q, %q or %q, got %q", ModeOff, ModePressure, ModeProxmox, ModeMoM, p.Mode)
	}
	if p.Block == 0 || p.Block&(p.Block-1) != 0 || p.Block < 1<<20 || p.Block > 1<<30 {
		bad("memory.block", "must be a power of two from 1 MiB to 1 GiB, got %v", p.Block)
	}
	if p.Mode != ModeOff {
		if p.Max == 0 {
			bad("memory.max", "must be set when memory_mode is %q", p.Mode)
		}
		if p.ResizeTimeout < time.Second {
			bad("memory.resize_timeout", "must be at least 1s, got %v", p.ResizeTimeout)
		}
		if p.Min > p.Max {
			bad("memory.min", "must not exceed memory.max (%v), got %v", p.Max, p.Min)
		}
	}
	for _, f := range []struct {
		key    string
		v      float64
		lo, hi float64
	}{{"memory.stall_target", p.StallTarget, 0.0001, 0.5}, {"memory.headroom", p.Headroom, 0, 0.5},
		{"memory.refault_limit", p.RefaultLimit, 1, 1e6}, {"memory.grow_step", p.GrowStep, 0.01, 1},
		{"memory.shrink_step", p.ShrinkStep, 0.001, 0.5}} {
		if math.IsNaN(f.v) || f.v < f.lo || f.v > f.hi {
			bad(f.key, "must be in [%g, %g], got %g", f.lo, f.hi, f.v)
		}
	}
	for _, f := range []struct {
		key string
		d   time.Duration
	}{{"memory.quiet", p.Quiet}, {"memory.resize_timeout", p.ResizeTimeout}, {"memory.swap_hold", p.SwapHold}, {"memory.oom_hold", p.OOMHold}} {
		if f.d < 0 || f.d > 24*time.Hour {
			bad(f.key, "must be from 0 to 24h, got %v", f.d)
		}
	}
	return errors.Join(errs...)
}

// Sample is one interval of a guest's memory, as its agent reports it.
type Sample struct {
	Time     time.Time
	Interval time.Duration
	// Total and Available are the guest's MemTotal and MemAvailable.
	Total, Available uint64
	// HavePSI says whether StallSome and StallFull are measured: the time
	// within the interval some task (all non-idle tasks) stalled on memory.
	HavePSI              bool
	StallSome, StallFull time.Duration
	// Refaults are workingset refaults (anonymous and file pages) and
	// SwapIns pages swapped in, over the interval.
	Refaults, SwapIns uint64
	// OOMKills counts the guest's OOM kills in the interval.
	OOMKills uint64
}

// Action is what a decision does.
type Action int

// Actions.
const (
	Hold Action = iota
	Grow
	Shrink
)

func (a Action) String() string {
	switch a {
	case Grow:
		return "grow"
	case Shrink:
		return "shrink"
	}
	return "hold"
}

// Rules name why a decision was taken.
const (
	RuleOff      = "off"
	RuleWarmup   = "warmup"
	RuleOOM      = "oom"
	RuleStall    = "stall"
	RuleSwapIn   = "swap_in"
	RuleRefault  = "refault"
	RuleHeadroom = "headroom"
	RuleSlack    = "slack"
	RuleSteady   = "steady"
	RuleBounds   = "bounds"
)

// Decision is the size a VM should have, why, and the floor it held to.
type Decision struct {
	Action   Action
	From, To uint64
	Rule     string
	Reason   string
	Floor    uint64
}

// Engine holds one VM's memory history. It is not safe for concurrent use.
type Engine struct {
	p    Policy
	boot uint64
	// host is the host's memory as last set, lastStep the baselines' last
	// move.
	host     Host
	lastStep time.Time
	last     *Sample
	// lastPressure is when a grow rule last fired (or the engine began).
	lastPressure, lastSwapIn, lastOOM time.Time
	oomFloor                          uint64
	started                           bool
}

// New returns an engine for a VM that booted with boot bytes.
func New(p Policy, boot uint64) *Engine { return &Engine{p: p, boot: boot} }

// SetPolicy replaces the policy; the history stays.
func (e *Engine) SetPolicy(p Policy) { e.p = p }

// Observe takes one interval's sample.
func (e *Engine) Observe(s Sample) {
	if !e.started {
		e.started, e.lastPressure = true, s.Time
	}
	if s.SwapIns > 0 {
		e.lastSwapIn = s.Time
	}
	if s.OOMKills > 0 {
		e.lastOOM = s.Time
	}
	e.last = &s
}

// Decide returns the size the VM should have now, given its current size
// and the most the host can give it (0: no host limit).
func (e *Engine) Decide(now time.Time, current, hostLimit uint64) Decision {
	p := e.p
	d := Decision{Action: Hold, From: current, To: current}
	if p.Mode == ModeOff {
		d.Rule, d.Reason = RuleOff, "memory sizing is off"
		return d
	}
	ceiling := uint64(p.Max)
	if hostLimit > 0 {
		ceiling = min(ceiling, hostLimit)
	}
	ceiling = roundDown(ceiling, uint64(p.Block))
	if p.Mode == ModeProxmox || p.Mode == ModeMoM {
		return e.baseline(now, d, ceiling)
	}
	s := e.last
	if s == nil || s.Interval <= 0 || s.Total == 0 {
		d.Rule, d.Reason = RuleWarmup, "no memory report yet"
		return e.bounded(d, ceiling)
	}
	used := s.Total - min(s.Available, s.Total)
	step := max(scale(current, p.GrowStep), uint64(p.Block))
	grow := func(rule, reason string, to uint64) Decision {
		e.lastPressure = now
		d.Action, d.Rule, d.Reason, d.To = Grow, rule, reason, roundUp(max(to, sat(current, step)), uint64(p.Block))
		return e.bounded(d, ceiling)
	}
	switch {
	case s.OOMKills > 0:
		e.oomFloor = min(max(e.oomFloor, sat(current, step)), roundDown(uint64(p.Max), uint64(p.Block)))
		return grow(RuleOOM, fmt.Sprintf("%d OOM kill(s) in the guest: floor raised to %s, no shrink for %v",
			s.OOMKills, size(e.oomFloor), p.OOMHold), e.oomFloor)
	case s.HavePSI && s.StallSome.Seconds() > p.StallTarget*s.Interval.Seconds():
		share := s.StallSome.Seconds() / s.Interval.Seconds()
		return grow(RuleStall, fmt.Sprintf("memory stall %.1f%% of the interval (some; full %.1f%%), target %.1f%%",
			100*share, 100*s.StallFull.Seconds()/s.Interval.Seconds(), 100*p.StallTarget), 0)
	case s.SwapIns > 0:
		return grow(RuleSwapIn, fmt.Sprintf("%d pages swapped in over %v", s.SwapIns, s.Interval), 0)
	case refaultRate(s) > p.RefaultLimit:
		return grow(RuleRefault, fmt.Sprintf("%.0f refaulted pages/s per GiB, limit %.0f", refaultRate(s), p.RefaultLimit), 0)
	case float64(s.Available) < p.Headroom*float64(s.Total):
		// Enough that what is used leaves the headroom free.
		want := scale(used, 1/(1-p.Headroom))
		return grow(RuleHeadroom, fmt.Sprintf("MemAvailable %s of %s, under the %.0f%% headroom",
			size(s.Available), size(s.Total), 100*p.Headroom), sat(current, want-min(want, s.Total)))
	}

	floor := e.floor(now, used)
	d.Floor = floor
	quietFor := now.Sub(e.lastPressure)
	switch {
	case quietFor < p.Quiet:
		d.Rule, d.Reason = RuleSteady, fmt.Sprintf("no pressure for %v of the %v before a shrink", quietFor.Round(time.Second), p.Quiet)
	case !e.lastSwapIn.IsZero() && now.Sub(e.lastSwapIn) < p.SwapHold:
		d.Rule, d.Reason = RuleSteady, fmt.Sprintf("swap-in %v ago: no shrink for %v", now.Sub(e.lastSwapIn).Round(time.Second), p.SwapHold)
	case !e.lastOOM.IsZero() && now.Sub(e.lastOOM) < p.OOMHold:
		d.Rule, d.Reason = RuleSteady, fmt.Sprintf("OOM kill %v ago: no shrink for %v", now.Sub(e.lastOOM).Round(time.Second), p.OOMHold)
	case current <= floor:
		d.Rule, d.Reason = RuleSteady, fmt.Sprintf("at the floor %s", size(floor))
	default:
		to := max(roundDown(current-scale(current, p.ShrinkStep), uint64(p.Block)), floor)
		if to >= current {
			d.Rule, d.Reason = RuleSteady, fmt.Sprintf("a shrink step rounds to nothing above the floor %s", size(floor))
			break
		}
		d.Action, d.To, d.Rule = Shrink, to, RuleSlack
		d.Reason = fmt.Sprintf("quiet for %v, MemAvailable %s of %s: shrink by %.0f%%, floor %s",
			quietFor.Round(time.Second), size(s.Available), size(s.Total), 100*p.ShrinkStep, size(floor))
		// The next shrink waits for its own quiet period: the guest must
		// show it copes with this one first.
		e.lastPressure = now
	}
	return e.bounded(d, ceiling)
}

// floor is the least the VM may shrink to now.
func (e *Engine) floor(now time.Time, used uint64) uint64 {
	p := e.p
	f := max(uint64(p.Min), e.boot, scale(used, 1+2*p.Headroom))
	if !e.lastOOM.IsZero() {
		f = max(f, e.oomFloor)
	}
	return roundUp(f, uint64(p.Block))
}

// bounded keeps d within [Min, ceiling], saying so when that changes it.
func (e *Engine) bounded(d Decision, ceiling uint64) Decision {
	lo := roundUp(uint64(e.p.Min), uint64(e.p.Block))
	to := d.To
	if to > ceiling {
		to = ceiling
	}
	if to < lo {
		to = lo
	}
	if to != d.To {
		d.Reason += fmt.Sprintf("; held to [%s, %s]", size(lo), size(ceiling))
		d.To = to
	}
	switch {
	case d.To > d.From:
		d.Action = Grow
	case d.To < d.From:
		d.Action = Shrink
	default:
		if d.Action != Hold {
			d.Rule = RuleBounds
		}
		d.Action = Hold
	}
	return d
}

// refaultRate is refaulted pages per second per GiB of guest memory.
func refaultRate(s *Sample) float64 {
	gib := float64(s.Total) / (1 << 30)
	if gib <= 0 || s.Interval <= 0 {
		return 0
	}
	return float64(s.Refaults) / s.Interval.Seconds() / gib
}

// roundUp rounds v up to a multiple of block, saturating at the largest
// multiple rather than wrapping.
func roundUp(v, block uint64) uint64 {
	if block == 0 {
		return v
	}
	if v > math.MaxUint64-block+1 {
		return math.MaxUint64 / block * block
	}
	return (v + block - 1) / block * block
}

// scale is v×f for f ≥ 0, saturating at the largest uint64 (a float64
// beyond it converts to an unspecified value).
func scale(v uint64, f float64) uint64 {
	x := float64(v) * f
	if x >= math.MaxUint64 {
		return math.MaxUint64
	}
	return uint64(x)
}

func roundDown(v, block uint64) uint64 {
	if block == 0 {
		return v
	}
	return v / block * block
}

// size prints bytes in MiB.
func size(b uint64) string { return fmt.Sprintf("%d MiB", b>>20) }

// Floor returns the least the VM may be shrunk to now, by any rule: the
// guest-need floors of Decide. Squeeze uses it.
func (e *Engine) Floor(now time.Time) uint64 {
	used := uint64(0)
	if s := e.last; s != nil {
		used = s.Total - min(s.Available, s.Total)
	}
	return max(e.floor(now, used), roundUp(uint64(e.p.Min), uint64(e.p.Block)))
}

// Tenant is one VM as Squeeze sees it.
type Tenant struct {
	Name     string
	Priority int    // higher keeps its memory longer
	Current  uint64 // bytes the VM has now
	Floor    uint64 // the least it may have (Engine.Floor)
	Block    uint64
}

// Cut is what Squeeze takes from one VM.
type Cut struct {
	Name     string
	From, To uint64
	Reason   string
}

// Squeeze is the host-pressure override, MoM-like: when the host's
// available memory is under low (bytes), it takes the shortfall from the
// VMs, lowest priority first and, within a priority, the most slack
// (Current − Floor) first, never below a VM's floor. It returns the cuts
// and what it could not find (0 when the shortfall is covered).
func Squeeze(hostAvailable, low uint64, tenants []Tenant) ([]Cut, uint64) {
	if hostAvailable >= low {
		return nil, 0
	}
	need := low - hostAvailable
	order := make([]Tenant, 0, len(tenants))
	for _, t := range tenants {
		if t.Current > t.Floor {
			order = append(order, t)
		}
	}
	sort.SliceStable(order, func(i, j int) bool {
		if order[i].Priority != order[j].Priority {
			return order[i].Priority < order[j].Priority
		}
		return order[i].Current-order[i].Floor > order[j].Current-order[j].Floor
	})
	var cuts []Cut
	for _, t := range order {
		if need == 0 {
			break
		}
		slack := t.Current - t.Floor
		take := min(slack, need)
		to := max(roundDown(t.Current-take, t.Block), t.Floor)
		if t.Block > 0 && t.Floor%t.Block != 0 {
			to = max(to, roundUp(t.Floor, t.Block))
		}
		if to >= t.Current {
			continue
		}
		got := t.Current - to
		cuts = append(cuts, Cut{Name: t.Name, From: t.Current, To: to, Reason: fmt.Sprintf(
			"host short of memory: %s available, %s wanted; priority %d gives %s of its %s slack",
			size(hostAvailable), size(low), t.Priority, size(got), size(slack))})
		need -= min(got, need)
	}
	return cuts, need
}

// sat is a+b, saturating.
func sat(a, b uint64) uint64 {
	if a > math.MaxUint64-b {
		return math.MaxUint64
	}
	return a + b
}

// Size is a number of bytes, written in a configuration as an integer or
// as text with a binary unit: "512MiB", "4GiB" (KiB, MiB, GiB, TiB; K, M,
// G, T mean the same).
type Size uint64

var sizeUnits = []struct {
	suffix string
	shift  uint
}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"T", 40}, {"G", 30}, {"M", 20}, {"K", 10}, {"B", 0}}

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Size) UnmarshalText(b []byte) error {
	text := strings.TrimSpace(string(b))
	shift := uint(0)
	for _, u := range sizeUnits {
		if strings.HasSuffix(text, u.suffix) {
			text, shift = strings.TrimSpace(strings.TrimSuffix(text, u.suffix)), u.shift
			break
		}
	}
	v, err := strconv.ParseUint(text, 10, 64)
	if err != nil || v > math.MaxUint64>>shift {
		return fmt.Errorf("not a size (use e.g. \"512MiB\", \"4GiB\"): %q", b)
	}
	*s = Size(v << shift)
	return nil
}

// MarshalText implements encoding.TextMarshaler: the largest unit that
// divides the size.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

func (s Size) String() string {
	for _, u := range sizeUnits[:4] {
		if s != 0 && uint64(s)%(1<<u.shift) == 0 {
			return strconv.FormatUint(uint64(s)>>u.shift, 10) + u.suffix
		}
	}
	return strconv.FormatUint(uint64(s), 10) + "B"
}
