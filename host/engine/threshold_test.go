package engine

import (
	"errors"
	"math"
	"testing"
	"time"
)

func thresholdPolicy() Policy {
	p := testPolicy()
	p.Mode = ModeThreshold
	p.Upper, p.RemoveBelow = 0.8, 0.2
	p.K, p.N = 1, 1
	return p
}

func TestThreshold(t *testing.T) {
	tests := []struct {
		name       string
		current    int
		demand     float64
		lastAction time.Duration // before the sample; 0 = never
		action     Action
		to         int
		rule       string
	}{
		{name: "above upper adds one", current: 2, demand: 1.7, action: ScaleUp, to: 3, rule: RuleAboveUpper},
		{name: "far above upper still adds one", current: 2, demand: 7, action: ScaleUp, to: 3, rule: RuleAboveUpper},
		{name: "at upper holds", current: 5, demand: 4, action: Hold, to: 5, rule: RuleSteady},
		{name: "below remove_below removes one", current: 4, demand: 0.5, action: ScaleDown, to: 3, rule: RuleBelowRemove},
		{name: "far below still removes one", current: 8, demand: 0, action: ScaleDown, to: 7, rule: RuleBelowRemove},
		{name: "between the marks holds", current: 2, demand: 1, action: Hold, to: 2, rule: RuleSteady},
		{name: "at the minimum holds", current: 1, demand: 0.1, action: Hold, to: 1, rule: RuleSteady},
		{name: "at the maximum cannot add", current: 8, demand: 8, action: Hold, to: 8, rule: RuleAtLimit},
		{name: "cooldown after an action", current: 2, demand: 1.9, lastAction: -5 * time.Second, action: Hold, to: 2, rule: RuleCooldown},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := New(thresholdPolicy())
			if err != nil {
				t.Fatal(err)
			}
			if tc.lastAction != 0 {
				e.Acted(t0.Add(time.Second + tc.lastAction))
			}
			now := feed(e, t0, tc.current, tc.demand)
			d := e.Decide(Input{Now: now, Current: tc.current})
			if d.Action != tc.action || d.To != tc.to || d.Rule != tc.rule {
				t.Fatalf("got %v→%d (%s: %s), want %v→%d (%s)", d.Action, d.To, d.Rule, d.Reason, tc.action, tc.to, tc.rule)
			}
		})
	}
}

// TestThresholdChasesAJump shows why it is the baseline to beat: a jump
// from 1 to 6 CPUs of demand takes five intervals to meet, one vCPU each.
func TestThresholdChasesAJump(t *testing.T) {
	p := thresholdPolicy()
	p.CooldownUp = 0
	e, _ := New(p)
	current, now := 1, t0
	var sizes []int
	for range 6 {
		now = feed(e, now, current, 6)
		if d := e.Decide(Input{Now: now, Current: current}); d.Action == ScaleUp {
			current = d.To
			e.Acted(now)
		}
		sizes = append(sizes, current)
	}
	want := []int{2, 3, 4, 5, 6, 7}
	for i := range want {
		if sizes[i] != want[i] {
			t.Fatalf("sizes after each interval %v, want %v", sizes, want)
		}
	}
}

func TestModeKeysValidated(t *testing.T) {
	tests := []struct {
		name  string
		mode  string
		set   func(*Policy)
		field string // "" = valid
	}{
		{"threshold remove_below at upper", ModeThreshold, func(p *Policy) { p.RemoveBelow = p.Upper }, "remove_below"},
		{"threshold remove_below zero", ModeThreshold, func(p *Policy) { p.RemoveBelow = 0 }, "remove_below"},
		{"other modes ignore remove_below", ModeSandpiper, func(p *Policy) { p.RemoveBelow = 0 }, ""},
		{"vpa percentile above 1", ModeVPA, func(p *Policy) { p.VPAPercentile = 1.5 }, "vpa_percentile"},
		{"vpa margin negative", ModeVPA, func(p *Policy) { p.VPAMargin = -0.1 }, "vpa_margin"},
		{"vpa half-life too short", ModeVPA, func(p *Policy) { p.VPAHalfLife = Duration(time.Second) }, "vpa_half_life"},
		{"predictive half-life below the interval", ModePredictive, func(p *Policy) { p.ForecastHalfLife = Duration(time.Second) }, "forecast_half_life"},
		{"predictive min_gain 1", ModePredictive, func(p *Policy) { p.MinGain = 1 }, "min_gain"},
		{"predictive NaN min_gain", ModePredictive, func(p *Policy) { p.MinGain = math.NaN() }, "min_gain"},
		{"predictive prior negative", ModePredictive, func(p *Policy) { p.ForecastPrior = Duration(-time.Minute) }, "forecast_prior"},
		{"predictive prior over a week", ModePredictive, func(p *Policy) { p.ForecastPrior = Duration(169 * time.Hour) }, "forecast_prior"},
		{"predictive without a prior", ModePredictive, func(p *Policy) { p.ForecastPrior = 0 }, ""},
		// Issue 21: a bad value for another mode's key is refused when it
		// is written, not when that mode is switched to; unset ones are not.
		{"a bad forecast_prior is refused under vpa too", ModeVPA, func(p *Policy) { p.ForecastPrior = Duration(-time.Minute) }, "forecast_prior"},
		{"a bad forecast_prior is refused under sandpiper too", ModeSandpiper, func(p *Policy) { p.ForecastPrior = Duration(-time.Hour) }, "forecast_prior"},
		{"a bad vpa_margin is refused under predictive too", ModePredictive, func(p *Policy) { p.VPAMargin = -1 }, "vpa_margin"},
		{"a bad remove_below is refused under sandpiper too", ModeSandpiper, func(p *Policy) { p.RemoveBelow = 2 * p.Upper }, "remove_below"},
		{"other modes need not set forecast_prior", ModeVPA, func(p *Policy) { p.ForecastPrior = 0 }, ""},
		{"defaults valid for predictive", ModePredictive, func(*Policy) {}, ""},
		{"defaults valid for vpa", ModeVPA, func(*Policy) {}, ""},
		{"defaults valid for threshold", ModeThreshold, func(*Policy) {}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := DefaultPolicy()
			p.Mode = tc.mode
			tc.set(&p)
			err := p.Validate()
			var fe *FieldError
			switch {
			case tc.field == "" && err != nil:
				t.Fatalf("want valid, got %v", err)
			case tc.field != "" && (!errors.As(err, &fe) || fe.Field != tc.field):
				t.Fatalf("want an error on %s, got %v", tc.field, err)
			}
		})
	}
}
