// Package sim replays recorded CPU demand of virtual machines through the
// decision engine — the very engine.Engine the live actuator runs, with
// New, Observe, Decide and Acted — and measures what each scaling policy
// costs (vCPU-hours) and what it risks (time with demand above the
// allocation), side by side with hindsight baselines.
//
// It reads PlanetLab CoMon folders, Bitbrains GWA-T-12 CSV files and plain
// `timestamp,demand_cpus` CSV. Traces are streamed, one VM at a time, so a
// fleet of any size fits in memory; bad files are reported by name and line
// and skipped.
//
// sim must not carry its own copy of any scaling rule: a dynamic policy is
// an engine mode and nothing else. Only the hindsight baselines (static
// sizes and the oracle), which no live system can run, live here.
package sim

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Trace is one VM's CPU demand over time.
type Trace struct {
	// Name identifies the VM: the file name, for the file formats here.
	Name string
	// Requested is the number of vCPUs the VM was given (or asked for):
	// the static-requested baseline and the most any policy may allocate.
	Requested int
	// Interval is the nominal sampling interval; each sample covers the
	// time to the next one, or Interval when the next one is further away
	// (a gap in the trace is not counted).
	Interval time.Duration
	// Time is each sample's start, Unix milliseconds, strictly increasing.
	Time []int64
	// Demand is each sample's CPU demand, in CPUs: finite and non-negative.
	Demand []float64
}

// ErrFormat is wrapped by every parse error; the message names the file and
// line.
var ErrFormat = errors.New("bad trace")

// parseError names the file and line of a problem.
func parseError(name string, line int, format string, a ...any) error {
	return fmt.Errorf("%w: %s:%d: %s", ErrFormat, name, line, fmt.Sprintf(format, a...))
}

// Engine sampling intervals the engine accepts (engine.Policy.Validate).
const (
	minInterval = 100 * time.Millisecond
	maxInterval = time.Hour
)

// check verifies the invariants every reader promises.
func (t *Trace) check() error {
	switch {
	case len(t.Demand) == 0:
		return fmt.Errorf("%w: %s: no samples", ErrFormat, t.Name)
	case len(t.Time) != len(t.Demand):
		return fmt.Errorf("%w: %s: %d times for %d samples", ErrFormat, t.Name, len(t.Time), len(t.Demand))
	case t.Requested < 1 || t.Requested > 1024:
		return fmt.Errorf("%w: %s: requested vCPUs must be in [1, 1024], got %d", ErrFormat, t.Name, t.Requested)
	case t.Interval < minInterval || t.Interval > maxInterval:
		return fmt.Errorf("%w: %s: sampling interval %v is outside [%v, %v]", ErrFormat, t.Name, t.Interval, minInterval, maxInterval)
	}
	return nil
}

// duration returns how long sample i lasts, in milliseconds.
func (t *Trace) duration(i int) int64 {
	nominal := t.Interval.Milliseconds()
	if i+1 < len(t.Time) {
		if d := t.Time[i+1] - t.Time[i]; d <= nominal+nominal/2 {
			return d
		}
	}
	return nominal
}

// medianStep returns the median difference of strictly increasing times,
// the nominal interval of a trace with jitter and gaps.
func medianStep(times []int64) time.Duration {
	if len(times) < 2 {
		return 0
	}
	steps := make([]int64, len(times)-1)
	for i := range steps {
		steps[i] = times[i+1] - times[i]
	}
	slices.Sort(steps)
	return time.Duration(steps[len(steps)/2]) * time.Millisecond
}
