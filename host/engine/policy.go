package engine

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Policy is one VM's scaling policy. The zero value is not valid; start from
// DefaultPolicy.
type Policy struct {
	// Mode selects the steady-state rule (see the Mode constants); empty
	// means ModeSandpiper.
	Mode string `toml:"mode" json:"mode,omitempty"`
	// MinVCPUs and MaxVCPUs bound every decision.
	MinVCPUs int `toml:"min_vcpus" json:"min_vcpus"`
	MaxVCPUs int `toml:"max_vcpus" json:"max_vcpus"`
	// Interval is the sampling interval the agent is asked to use. The
	// engine uses it to tell fresh samples from stale ones.
	Interval Duration `toml:"interval" json:"interval"`
	// Upper is the utilisation (demand ÷ vCPUs) above which a sample counts
	// towards a hotspot.
	Upper float64 `toml:"upper" json:"upper"`
	// Lower: a vCPU is removed only when demand would stay below Lower with
	// one vCPU fewer, for DownSamples samples in a row. Defining the low mark
	// on the smaller allocation, rather than on the current one, lets a VM
	// with 4 vCPUs and 1 CPU of work shrink, and keeps hysteresis: right
	// after a removal utilisation is below Lower, hence below Upper.
	Lower float64 `toml:"lower" json:"lower"`
	// Target is the utilisation a scale-up sizes for:
	// target vCPUs = ceil(peak demand ÷ Target).
	Target float64 `toml:"target" json:"target"`
	// K of the last N samples must be above Upper, and the AR(1) forecast of
	// the next one too, to flag a hotspot (Sandpiper, NSDI'07, §4.1).
	K int `toml:"k" json:"k"`
	N int `toml:"n" json:"n"`
	// Window is how many recent samples the peak percentile and the AR(1)
	// model are computed on.
	Window int `toml:"window" json:"window"`
	// Percentile (0 < p ≤ 1) of demand over Window taken as peak demand.
	Percentile float64 `toml:"percentile" json:"percentile"`
	// DownSamples consecutive low samples are needed to remove a vCPU.
	DownSamples int `toml:"down_samples" json:"down_samples"`
	// CooldownUp and CooldownDown are the least time after any scaling
	// action before the next scale-up or scale-down.
	CooldownUp   Duration `toml:"cooldown_up" json:"cooldown_up"`
	CooldownDown Duration `toml:"cooldown_down" json:"cooldown_down"`
	// RunQThreshold: K of the last N samples with p95 run-queue latency
	// above it make a hotspot even below Upper utilisation — tasks are
	// waiting for a CPU. Zero disables the rule.
	RunQThreshold Duration `toml:"runq_p95_threshold" json:"runq_p95_threshold"`

	// The keys below belong to one mode each and are checked only when
	// that mode is selected.

	// RemoveBelow (threshold): one vCPU is removed when utilisation of the
	// current allocation is below it.
	RemoveBelow float64 `toml:"remove_below" json:"remove_below,omitempty"`
	// VPAPercentile, VPAMargin and VPAHalfLife (vpa): the recommendation is
	// the VPAPercentile of a histogram of CPU usage whose samples lose half
	// their weight every VPAHalfLife, times 1 + VPAMargin.
	VPAPercentile float64  `toml:"vpa_percentile" json:"vpa_percentile,omitempty"`
	VPAMargin     float64  `toml:"vpa_margin" json:"vpa_margin,omitempty"`
	VPAHalfLife   Duration `toml:"vpa_half_life" json:"vpa_half_life,omitempty"`
	// ForecastHalfLife and MinGain (predictive): the forecast of the next
	// interval's demand weighs each past sample by half every
	// ForecastHalfLife; a vCPU is worth holding only if it lowers the
	// forecast probability of overload by at least MinGain.
	ForecastHalfLife Duration `toml:"forecast_half_life" json:"forecast_half_life,omitempty"`
	MinGain          float64  `toml:"min_gain" json:"min_gain,omitempty"`
	// ForecastPrior (predictive): the pooled prior of ForecastPriorTable
	// enters the forecast as if it were this much of the VM's own history
	// (ForecastPrior ÷ Interval samples); zero leaves the forecast to the
	// VM's history alone. It matters in a VM's first hours, when a few
	// samples would otherwise say a spike cannot happen. The table is
	// learned from 300 s samples; at a much shorter interval it is a
	// rougher guide, as the chance of a rise depends on how long a sample
	// averages over.
	ForecastPrior Duration `toml:"forecast_prior" json:"forecast_prior,omitempty"`
}

// DefaultPolicy is a conservative policy for a production VM: 5 s samples,
// a hotspot needs 3 of 5 above 80 %, scale-up sizes for 70 %, scale-down
// after a minute of low use and two minutes after the last change.
func DefaultPolicy() Policy {
	return Policy{
		MinVCPUs: 1, MaxVCPUs: 4,
		Interval: Duration(5 * time.Second),
		Upper:    0.8, Lower: 0.5, Target: 0.7,
		K: 3, N: 5, Window: 24, Percentile: 0.95,
		DownSamples:   12,
		CooldownUp:    Duration(30 * time.Second),
		CooldownDown:  Duration(2 * time.Minute),
		RunQThreshold: Duration(10 * time.Millisecond),

		RemoveBelow:   0.2,
		VPAPercentile: 0.9, VPAMargin: 0.15, VPAHalfLife: Duration(24 * time.Hour),
		ForecastHalfLife: Duration(4 * time.Hour), MinGain: 0.0135, ForecastPrior: Duration(10 * time.Minute),
	}
}

// FieldError names the policy field that is wrong, so a config file or an
// API request can point at it.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Validate checks the policy and returns a *FieldError for the first
// problem.
func (p Policy) Validate() error {
	bad := func(field, format string, a ...any) error {
		return &FieldError{Field: field, Msg: fmt.Sprintf(format, a...)}
	}
	if _, ok := modes[p.mode()]; !ok {
		return bad("mode", "unknown mode %q (known: %s)", p.Mode, modeNames())
	}
	switch {
	case p.MinVCPUs < 1:
		return bad("min_vcpus", "must be at least 1, got %d", p.MinVCPUs)
	case p.MaxVCPUs < p.MinVCPUs:
		return bad("max_vcpus", "must be at least min_vcpus (%d), got %d", p.MinVCPUs, p.MaxVCPUs)
	case p.MaxVCPUs > 1024:
		return bad("max_vcpus", "must be at most 1024, got %d", p.MaxVCPUs)
	case p.Interval.D() < 100*time.Millisecond || p.Interval.D() > time.Hour:
		return bad("interval", "must be between 100ms and 1h, got %v", p.Interval)
	case !(p.Upper > 0 && p.Upper <= 4):
		return bad("upper", "must be in (0, 4], got %v", p.Upper)
	case !(p.Lower > 0 && p.Lower < p.Upper):
		return bad("lower", "must be in (0, upper=%v), got %v", p.Upper, p.Lower)
	case !(p.Target >= p.Lower && p.Target <= p.Upper):
		return bad("target", "must be within [lower=%v, upper=%v], got %v", p.Lower, p.Upper, p.Target)
	case p.N < 1 || p.N > 1000:
		return bad("n", "must be in [1, 1000], got %d", p.N)
	case p.K < 1 || p.K > p.N:
		return bad("k", "must be in [1, n=%d], got %d", p.N, p.K)
	case p.Window < p.N || p.Window > 10000:
		return bad("window", "must be in [n=%d, 10000], got %d", p.N, p.Window)
	case !(p.Percentile > 0 && p.Percentile <= 1):
		return bad("percentile", "must be in (0, 1], got %v", p.Percentile)
	case p.DownSamples < 1 || p.DownSamples > p.Window:
		return bad("down_samples", "must be in [1, window=%d], got %d", p.Window, p.DownSamples)
	case p.CooldownUp < 0:
		return bad("cooldown_up", "must not be negative, got %v", p.CooldownUp)
	case p.CooldownDown < 0:
		return bad("cooldown_down", "must not be negative, got %v", p.CooldownDown)
	case p.RunQThreshold < 0:
		return bad("runq_p95_threshold", "must not be negative (0 disables), got %v", p.RunQThreshold)
	}
	return p.validateModeKeys(bad)
}

// validateModeKeys checks every mode's keys: those of the selected mode
// always, another mode's whenever it is set (non-zero), so a bad value is
// refused when it is written, not later when the mode is switched to
// (issue 21). A policy for one mode need not carry the others' keys.
func (p Policy) validateModeKeys(bad func(field, format string, a ...any) error) error {
	m := p.mode()
	check := func(mode string, set bool) bool { return m == mode || set }
	if check(ModeThreshold, p.RemoveBelow != 0) && !(p.RemoveBelow > 0 && p.RemoveBelow < p.Upper) {
		return bad("remove_below", "must be in (0, upper=%v), got %v", p.Upper, p.RemoveBelow)
	}
	switch {
	case check(ModeVPA, p.VPAPercentile != 0) && !(p.VPAPercentile > 0 && p.VPAPercentile <= 1):
		return bad("vpa_percentile", "must be in (0, 1], got %v", p.VPAPercentile)
	case check(ModeVPA, p.VPAMargin != 0) && !(p.VPAMargin >= 0 && p.VPAMargin <= 10):
		return bad("vpa_margin", "must be in [0, 10], got %v", p.VPAMargin)
	case check(ModeVPA, p.VPAHalfLife != 0) && p.VPAHalfLife.D() < time.Minute:
		return bad("vpa_half_life", "must be at least 1m, got %v", p.VPAHalfLife)
	case check(ModePredictive, p.ForecastHalfLife != 0) && p.ForecastHalfLife.D() < p.Interval.D():
		return bad("forecast_half_life", "must be at least interval=%v, got %v", p.Interval, p.ForecastHalfLife)
	case check(ModePredictive, p.MinGain != 0) && !(p.MinGain > 0 && p.MinGain < 1):
		return bad("min_gain", "must be in (0, 1), got %v", p.MinGain)
	case check(ModePredictive, p.ForecastPrior != 0) && (p.ForecastPrior < 0 || p.ForecastPrior.D() > 7*24*time.Hour):
		return bad("forecast_prior", "must be between 0s (no prior) and 168h, got %v", p.ForecastPrior)
	}
	return nil
}

func modeNames() string {
	names := make([]string, 0, len(modes))
	for n := range modes {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// Duration is a time.Duration that reads and writes as "30s" in TOML and
// JSON.
type Duration time.Duration

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("not a duration (use e.g. \"30s\", \"2m\"): %q", b)
	}
	*d = Duration(v)
	return nil
}
