package sim

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/hotplugheaven/hotplug/host/engine"
)

// ThresholdPolicy is the prototype rule as the issue states it: one vCPU
// more above 80 % utilisation, one fewer below 20 %, judged on every sample
// with no cooldown.
func ThresholdPolicy() engine.Policy {
	p := engine.DefaultPolicy()
	p.Mode = engine.ModeThreshold
	p.Upper, p.RemoveBelow = 0.8, 0.2
	p.K, p.N, p.Window, p.DownSamples = 1, 1, 1, 1
	p.CooldownUp, p.CooldownDown = 0, 0
	return p
}

// VPAPolicy is the Kubernetes VPA recommender with its defaults (P90, 15 %
// margin, 24 h half-life), applied each minute (the cooldowns) from the
// first sample, with as much history as the engine keeps.
func VPAPolicy() engine.Policy {
	p := engine.DefaultPolicy()
	p.Mode = engine.ModeVPA
	p.VPAPercentile, p.VPAMargin, p.VPAHalfLife = 0.9, 0.15, engine.Duration(24*time.Hour)
	p.K, p.N, p.Window = 1, 1, 10000
	p.CooldownUp, p.CooldownDown = engine.Duration(time.Minute), engine.Duration(time.Minute)
	return p
}

// PredictivePolicy is the forecast-driven mode as tuned on the development
// day (PlanetLab 2011-03-03, 300 s samples): a 4 h half-life, a window of
// three half-lives (older samples would weigh less than an eighth; a
// two-day window decided the same), no warm-up beyond one sample, and
// MinGain 1.1 %, the largest of a sweep whose overload time stayed below
// 1 % on that day.
func PredictivePolicy() engine.Policy {
	p := engine.DefaultPolicy()
	p.Mode = engine.ModePredictive
	p.ForecastHalfLife, p.MinGain = engine.Duration(4*time.Hour), 0.011
	p.K, p.N, p.Window = 1, 1, 144
	p.CooldownUp, p.CooldownDown = 0, 0
	return p
}

// PredictiveLeanPolicy is the same mode at a cheaper operating point:
// MinGain 4 %, the largest (in steps of 0.5 %) at which it used both fewer
// vCPU-hours and less overload time than vpa on the development day.
func PredictiveLeanPolicy() engine.Policy {
	p := PredictivePolicy()
	p.MinGain = 0.04
	return p
}

// DefaultPolicies are the policies compared side by side: the three
// hindsight baselines, then every dynamic mode. sandpiper runs the engine's
// DefaultPolicy unchanged (its sample counts, at 300 s, stretch its
// detection and scale-down over hours).
func DefaultPolicies() []Policy {
	return []Policy{
		{Name: string(StaticRequested), Baseline: StaticRequested},
		{Name: string(StaticPeak), Baseline: StaticPeak},
		{Name: string(Oracle), Baseline: Oracle},
		{Name: engine.ModeThreshold, Engine: ThresholdPolicy()},
		{Name: engine.ModeSandpiper, Engine: engine.DefaultPolicy()},
		{Name: engine.ModeVPA, Engine: VPAPolicy()},
		{Name: engine.ModePredictive, Engine: PredictivePolicy()},
		{Name: engine.ModePredictive + "-lean", Engine: PredictiveLeanPolicy()},
	}
}

// ParsePolicies reads a TOML file of policy tables and applies it to base:
// a table named like a policy in base overlays that policy's engine keys
// (the keys of the actuator's [vm.policy]); any other table adds a policy,
// starting from engine.DefaultPolicy. Unknown keys and invalid values are
// errors naming the table and key.
//
//	[predictive]
//	min_gain = 0.02
//
//	[predictive-slow]
//	mode = "predictive"
//	forecast_half_life = "12h"
func ParsePolicies(r io.Reader, base []Policy) ([]Policy, error) {
	var raw map[string]toml.Primitive
	md, err := toml.NewDecoder(r).Decode(&raw)
	if err != nil {
		return nil, err
	}
	out := slices.Clone(base)
	names := make([]string, 0, len(raw))
	for name := range raw {
		names = append(names, name)
	}
	// Tables in file order, so added policies keep the order they are written in.
	order := func(name string) int {
		for i, k := range md.Keys() {
			if len(k) == 1 && k[0] == name {
				return i
			}
		}
		return len(md.Keys())
	}
	slices.SortFunc(names, func(a, b string) int { return order(a) - order(b) })
	for _, name := range names {
		i := slices.IndexFunc(out, func(p Policy) bool { return p.Name == name })
		if i < 0 {
			out = append(out, Policy{Name: name, Engine: engine.DefaultPolicy()})
			i = len(out) - 1
		}
		if out[i].Baseline != "" {
			return nil, fmt.Errorf("[%s]: a hindsight baseline has no keys to set", name)
		}
		if err := md.PrimitiveDecode(raw[name], &out[i].Engine); err != nil {
			return nil, fmt.Errorf("[%s]: %w", name, err)
		}
		if err := out[i].Engine.Validate(); err != nil {
			var fe *engine.FieldError
			if errors.As(err, &fe) {
				return nil, fmt.Errorf("%s.%s: %s", name, fe.Field, fe.Msg)
			}
			return nil, fmt.Errorf("[%s]: %w", name, err)
		}
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("unknown keys: %s", strings.Join(keys, ", "))
	}
	return out, nil
}
