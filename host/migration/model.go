// Package migration holds the pieces of live migration that converges (issue 17).
//
// model.go is pure: no I/O, no clock. It predicts pre-copy live migration in the
// style of Akoush et al., "Predicting the Performance of Virtual Machine
// Migration", MASCOTS 2010: each pre-copy iteration sends the pages dirtied
// during the previous one; the migration stops iterating when the remaining
// data can be sent within the downtime limit, or when the iteration cap is hit.
package migration

import (
	"errors"
	"time"
)

// Input describes the VM and link at prediction time. Rates are bytes/second.
type Input struct {
	RAMBytes      float64       // guest RAM to transfer in the first pass
	DirtyRate     float64       // bytes dirtied per second (calc-dirty-rate)
	Bandwidth     float64       // bytes per second the stream achieves (or the cap)
	DowntimeLimit time.Duration // QEMU downtime-limit
	MaxPasses     int           // iteration cap for the model (QEMU has none); 0 means 30
}

// Prediction is the model's forecast for pre-copy.
type Prediction struct {
	Converges bool          // remaining data fits the downtime limit before the cap
	Passes    int           // pre-copy passes including the first full pass
	Total     time.Duration // total migration time including the stop-and-copy phase
	Downtime  time.Duration // stop-and-copy time
	BytesSent float64
}

// ErrBadInput is returned for non-positive RAM or bandwidth, or a negative dirty rate.
var ErrBadInput = errors.New("migration model: RAM and bandwidth must be > 0, dirty rate >= 0")

// PredictPreCopy applies the Akoush et al. iteration: V_0 = RAM, T_i = V_i / B,
// V_{i+1} = min(RAM, D * T_i); stop when V_i / B <= downtime limit.
func PredictPreCopy(in Input) (Prediction, error) {
	if in.RAMBytes <= 0 || in.Bandwidth <= 0 || in.DirtyRate < 0 {
		return Prediction{}, ErrBadInput
	}
	maxPasses := in.MaxPasses
	if maxPasses <= 0 {
		maxPasses = 30
	}
	limit := in.DowntimeLimit.Seconds()
	var p Prediction
	remaining := in.RAMBytes
	total := 0.0
	for p.Passes < maxPasses {
		if remaining/in.Bandwidth <= limit && p.Passes > 0 {
			p.Converges = true
			break
		}
		t := remaining / in.Bandwidth
		total += t
		p.BytesSent += remaining
		p.Passes++
		remaining = in.DirtyRate * t
		if remaining > in.RAMBytes {
			remaining = in.RAMBytes
		}
	}
	down := remaining / in.Bandwidth
	if !p.Converges && down <= limit {
		p.Converges = true
	}
	p.BytesSent += remaining
	p.Downtime = time.Duration(down * float64(time.Second))
	p.Total = time.Duration((total + down) * float64(time.Second))
	return p, nil
}
