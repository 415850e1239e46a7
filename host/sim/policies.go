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
// two-day window decided the same), no warm-up beyond one sample, the
// pooled prior worth 10 minutes (2 samples) of the VM's history, and
// MinGain 1.35 %.
//
// The prior's weight and MinGain are the pair needing the fewest
// vCPU-hours whose overload time on that day stays below 1 % with 95 %
// confidence over its VMs (0.946 % + 1.645 × 0.029 % standard error): an
// evaluation day is a new draw of VMs and load, and the previous setting,
// tuned to 0.98 % on the day, came out at 1.04 % on the evaluation days.
// 10, 15 and 20 minutes of prior tie (1.656×, 1.657×, 1.659× the oracle);
// at exactly 1 % on the day they need 1.63× where no prior needs 1.66×
// (5 minutes 1.64×, 25 minutes 1.64×).
func PredictivePolicy() engine.Policy {
	p := engine.DefaultPolicy()
	p.Mode = engine.ModePredictive
	p.ForecastHalfLife, p.MinGain = engine.Duration(4*time.Hour), 0.0135
	p.ForecastPrior = engine.Duration(10 * time.Minute)
	p.K, p.N, p.Window = 1, 1, 144
	p.CooldownUp, p.CooldownDown = 0, 0
	return p
}

// PredictiveLeanPolicy is the same mode at a cheaper operating point, meant
// to beat vpa and threshold on both axes at once: MinGain 3.9 %, the gain
// (in steps of 0.1 %) whose smaller margin over vpa on the development day
// is largest, each margin — fewer vCPU-hours, less overload time — counted
// in standard errors over the day's VMs. There it uses 1.0 % fewer
// vCPU-hours than vpa with 4.7 % less overload time, both 2.6 standard
// errors; threshold, the other rival, is beaten by 5 and 20. That is
// about as wide as the gap gets: vpa at P85, P90 and P95 sits 2 % above
// this mode's curve in vCPU-hours at equal overload time, or 6–10 % above
// it in overload time at equal vCPU-hours.
func PredictiveLeanPolicy() engine.Policy {
	p := PredictivePolicy()
	p.MinGain = 0.039
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
