package engine

// mode is one scaling policy's steady-state rule. Decide handles the
// policy limits, stale data and warm-up before asking a mode, and the
// helpers on step (up, down, hold) apply bounds and cooldowns, so a mode
// only says what size it wants and why. Modes keep no state of their own
// between calls beyond what they are built with: everything they know
// comes from the engine's samples, so a trace replays identically.
type mode interface {
	decide(s *step) Decision
}

// modes maps Policy.Mode to a constructor.
var modes = map[string]func(Policy) mode{
	ModeSandpiper:  func(Policy) mode { return sandpiper{} },
	ModeGraybox:    func(Policy) mode { return graybox{} },
	ModeThreshold:  func(Policy) mode { return threshold{} },
	ModeVPA:        func(Policy) mode { return vpa{} },
	ModePredictive: func(Policy) mode { return predictive{} },
}

// mode returns the policy's mode name, defaulting to Sandpiper.
func (p Policy) mode() string {
	if p.Mode == "" {
		return ModeSandpiper
	}
	return p.Mode
}
