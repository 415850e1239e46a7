package actuator

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/hotplugheaven/hotplug/host/memory"
)

// The host-pressure override, MoM-like: when the host's own MemAvailable
// falls under a reserve, the VMs with the most slack above their floors
// give memory back first, lowest memory priority first (memory.Squeeze
// decides), and no VM's memory grows until the host has its reserve again,
// except to answer an OOM kill in a guest.

// squeezer watches the host's memory for an Actuator.
type squeezer struct {
	host    HostMemory
	reserve uint64
	every   time.Duration
	// short is set while the host is under its reserve; memory resources
	// read it to hold their grows.
	short atomic.Bool
}

// SetHostMemoryReserve turns the host-pressure override on: every `every`
// (default 10 s) host's MemAvailable is read, and below reserve bytes the
// VMs are squeezed. Call it before Run.
func (a *Actuator) SetHostMemoryReserve(host HostMemory, reserve uint64, every time.Duration) {
	if every <= 0 {
		every = 10 * time.Second
	}
	a.squeeze.host, a.squeeze.reserve, a.squeeze.every = host, reserve, every
}

// squeezeLoop runs the override until ctx ends.
func (a *Actuator) squeezeLoop(ctx context.Context) {
	s := &a.squeeze
	t := time.NewTicker(s.every)
	defer t.Stop()
	logged := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		avail, _, err := s.host.Available()
		if err != nil {
			if err.Error() != logged {
				logged = err.Error()
				a.log.Warn("cannot read the host's memory; the host-pressure override waits", "error", err)
			}
			continue
		}
		logged = ""
		a.squeezeOnce(ctx, avail)
	}
}

// squeezeOnce acts on one reading of the host's MemAvailable.
func (a *Actuator) squeezeOnce(ctx context.Context, avail uint64) {
	s := &a.squeeze
	short := avail < s.reserve
	if short != s.short.Swap(short) {
		if short {
			a.log.Warn("host short of memory: squeezing VMs, no memory grows", "available_mib", avail>>20, "reserve_mib", s.reserve>>20)
		} else {
			a.log.Info("host memory back above its reserve: memory grows allowed", "available_mib", avail>>20, "reserve_mib", s.reserve>>20)
		}
	}
	if !short {
		return
	}
	var tenants []memory.Tenant
	byName := map[string]*VM{}
	for _, v := range a.vms {
		m := v.Status().Memory
		if m.Mode == memory.ModeOff || m.Device == "" || m.Floor == 0 {
			continue
		}
		tenants = append(tenants, memory.Tenant{Name: v.name, Priority: m.Priority, Current: m.Total, Floor: m.Floor, Block: m.Block})
		byName[v.name] = v
	}
	cuts, missing := memory.Squeeze(avail, s.reserve, tenants)
	if missing > 0 {
		a.log.Warn("the VMs' slack does not cover the host's shortfall", "missing_mib", missing>>20)
	}
	for _, c := range cuts {
		v := byName[c.Name]
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		err := v.request(cctx, control{kind: "squeeze", memory: c.To, why: c.Reason})
		cancel()
		if err != nil && !errors.Is(err, context.Canceled) {
			v.log.Warn("squeeze fell short", "to_mib", c.To>>20, "error", err)
		}
	}
}
