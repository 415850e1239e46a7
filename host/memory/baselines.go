package memory

import (
	"fmt"
	"time"
)

// The field's balloon rules, as baselines to compare with (not
// recommended): they look at the host's memory and never at the guest's
// pressure.
//
//   - ModeProxmox, Proxmox VE's auto-ballooning (pvestatd): while the
//     host's memory use is above 80 %, take ProxmoxStep from the VM every
//     BaselinePeriod, down to its minimum; below, give it back the same
//     way, up to its maximum.
//   - ModeMoM, oVirt MoM's balloon rule as the issue states it: every
//     BaselinePeriod, with the host's free memory under 20 % shrink the VM
//     by 5 %, else grow it by 5 %.
const (
	BaselinePeriod = 10 * time.Second
	ProxmoxTarget  = 0.80
	ProxmoxStep    = 100 << 20
	MoMFreeLow     = 0.20
	MoMStep        = 0.05
)

// Rules of the baselines.
const (
	RuleHostTarget = "host_target" // proxmox: host use against 80 %
	RuleHostFree   = "host_free"   // mom: host free against 20 %
	RuleNoHost     = "no_host"     // the host's memory is unknown
)

// Host is the host's memory as the baselines see it: its total and what
// the VMs (or everything) use, bytes.
type Host struct {
	Total, Used uint64
}

// SetHost gives the engine the host's memory, for the baselines.
func (e *Engine) SetHost(h Host) { e.host = h }

// baseline decides for ModeProxmox and ModeMoM.
func (e *Engine) baseline(now time.Time, d Decision, ceiling uint64) Decision {
	p, h, current := e.p, e.host, d.From
	if h.Total == 0 {
		d.Rule, d.Reason = RuleNoHost, "the host's memory is unknown (set host_memory_budget)"
		return e.bounded(d, ceiling)
	}
	if !e.lastStep.IsZero() && now.Sub(e.lastStep) < BaselinePeriod {
		d.Rule, d.Reason = RuleSteady, fmt.Sprintf("one step per %v", BaselinePeriod)
		return e.bounded(d, ceiling)
	}
	use := float64(min(h.Used, h.Total)) / float64(h.Total)
	blk := uint64(p.Block)
	switch p.Mode {
	case ModeProxmox:
		d.Rule = RuleHostTarget
		if use > ProxmoxTarget {
			d.To = current - min(current, ProxmoxStep)
			d.Reason = fmt.Sprintf("host memory %.0f%% used, above %.0f%%: take %d MiB", 100*use, 100*ProxmoxTarget, ProxmoxStep>>20)
		} else {
			d.To = sat(current, ProxmoxStep)
			d.Reason = fmt.Sprintf("host memory %.0f%% used, at most %.0f%%: give back %d MiB", 100*use, 100*ProxmoxTarget, ProxmoxStep>>20)
		}
	case ModeMoM:
		d.Rule = RuleHostFree
		if free := 1 - use; free < MoMFreeLow {
			d.To = current - scale(current, MoMStep)
			d.Reason = fmt.Sprintf("host memory %.0f%% free, under %.0f%%: shrink by %.0f%%", 100*free, 100*MoMFreeLow, 100*MoMStep)
		} else {
			d.To = sat(current, scale(current, MoMStep))
			d.Reason = fmt.Sprintf("host memory %.0f%% free: grow by %.0f%%", 100*free, 100*MoMStep)
		}
	}
	// Whole blocks, the small steps rounded to one at least.
	if d.To > current {
		d.To = roundUp(max(d.To, current+blk), blk)
	} else if d.To < current {
		d.To = roundDown(min(d.To, current-min(current, blk)), blk)
	}
	d = e.bounded(d, ceiling)
	if d.Action != Hold {
		e.lastStep = now
	}
	return d
}
