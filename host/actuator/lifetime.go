package actuator

import (
	"context"
	"fmt"
	"time"

	"github.com/hotplugheaven/hotplug/host/eventlog"
	"github.com/hotplugheaven/hotplug/host/hypervisor"
)

// lifetime tracks a hypervisor's limit on vCPUs started over the VM's life
// (QEMU under TCG aborts the VM past it): before each plug the actuator
// checks that one more is allowed, and refuses with a clear error rather
// than crash the VM.
type lifetime struct {
	checked bool
	info    hypervisor.Lifetime
	used    int // vCPUs started since the hypervisor started, boot ones included
}

// allowPlug reports an error when one more plug would pass the limit.
func (h *hvView) allowPlug(ctx context.Context) error {
	v := h.vm
	lim, ok := v.env.hyp.(hypervisor.LifetimeLimiter)
	if !ok {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	info, err := lim.VCPULifetime(cctx)
	cancel()
	if err != nil {
		if info.Limited {
			return fmt.Errorf("cannot check the hypervisor's lifetime vCPU limit, not plugging: %w", err)
		}
		return err
	}
	if !info.Limited {
		return nil
	}
	if !h.life.checked || !info.Started.Equal(h.life.info.Started) {
		// A new hypervisor process (or our first look): count the plugs
		// this VM got since it started, from the event log, which
		// survives our restarts; at least as many as are plugged now.
		plugs := h.plugsSince(info.Started)
		removable := 0
		for _, s := range h.state.Slots {
			if s.Plugged && s.Removable {
				removable++
			}
		}
		h.life = lifetime{checked: true, info: info, used: info.Boot + max(plugs, removable)}
		v.log.Info("hypervisor limits vCPUs over the VM's life", "max", info.Max, "used", h.life.used,
			"since", info.Started, "why", info.Why)
	}
	if h.life.used >= info.Max {
		return fmt.Errorf("%s: %d of %d used since the VM started at %s; restart the VM (or run it under KVM) to plug again",
			info.Why, h.life.used, info.Max, info.Started.Format(time.RFC3339))
	}
	return nil
}

// plugged records a successful plug against the lifetime limit.
func (h *hvView) plugged() {
	if h.life.checked {
		h.life.used++
	}
}

// plugsSince counts successful plug steps for this VM in the event log
// after t.
func (h *hvView) plugsSince(t time.Time) int {
	v := h.vm
	evs, _, err := eventlog.ReadFile(v.env.events.Path(), eventlog.Filter{VM: v.name, Since: t})
	if err != nil {
		v.log.Warn("cannot read the event log to count earlier plugs", "error", err)
		return 0
	}
	n := 0
	for _, ev := range evs {
		for _, s := range ev.Steps {
			if s.Name == "plug" && s.OK {
				n++
			}
		}
	}
	return n
}
