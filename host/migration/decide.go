package migration

import "time"

// Mode is the controller's choice for a migration request.
type Mode int

const (
	ModeWait         Mode = iota // predicted migration does not fit: wait (or refuse at the deadline)
	ModePreCopy                  // plain pre-copy converges within the downtime limit
	ModeAutoConverge             // pre-copy only converges with guest throttling
	ModePostCopy                 // post-copy: bounded time regardless of dirty rate
)

// Decide picks a mode: plain pre-copy if the model converges, pre-copy with
// auto-converge if it converges once the dirty rate is throttled to
// throttledShare of itself, post-copy if allowed, else wait.
func Decide(in Input, postCopyAllowed bool, throttledShare float64) Mode {
	if p, err := PredictPreCopy(in); err == nil && p.Converges {
		return ModePreCopy
	}
	t := in
	t.DirtyRate *= throttledShare
	if p, err := PredictPreCopy(t); err == nil && p.Converges {
		return ModeAutoConverge
	}
	if postCopyAllowed {
		return ModePostCopy
	}
	return ModeWait
}

// Watchdog reports a stall: remaining bytes made no new low for Window.
// Times are passed in; it does no I/O.
type Watchdog struct {
	Window  time.Duration
	low     uint64
	lowAt   time.Time
	started bool
}

// Observe records the remaining bytes at now and reports whether migration stalled.
func (w *Watchdog) Observe(now time.Time, remaining uint64) bool {
	if !w.started || remaining < w.low {
		w.low, w.lowAt, w.started = remaining, now, true
		return false
	}
	return now.Sub(w.lowAt) >= w.Window
}
