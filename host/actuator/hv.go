package actuator

import (
	"context"
	"time"

	"github.com/hotplugheaven/hotplug/host/hypervisor"
)

// hvView is the loop's view of the VM's hypervisor: the only source of
// truth for how many vCPUs the VM has. It is read at start, now and then
// while nothing else reads it, and taken from what Plug and Unplug return.
type hvView struct {
	vm                *VM
	state             hypervisor.State
	current           int // vCPUs plugged, as the hypervisor last said
	reachable         bool
	lastRefresh       time.Time
	unreachableLogged bool
	life              lifetime
}

// refresh reads the VM's CPU state from the hypervisor.
func (h *hvView) refresh(ctx context.Context) bool {
	v := h.vm
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	h.lastRefresh = time.Now()
	st, err := v.env.hyp.State(cctx)
	if err != nil {
		if h.reachable || !h.unreachableLogged {
			v.log.Error("hypervisor unreachable; VM will not be scaled until it answers", "error", err)
			h.unreachableLogged = true
		}
		h.reachable = false
		v.publish(func(s *Status) { s.Reachable = false })
		return false
	}
	h.set(st)
	return true
}

// set takes st as the hypervisor's state.
func (h *hvView) set(st hypervisor.State) {
	v := h.vm
	if !h.reachable || st.Plugged() != h.current {
		v.log.Info("hypervisor state", "vcpus", st.Plugged(), "slots", st.Max())
	}
	h.reachable = true
	h.state = st
	h.current = st.Plugged()
	v.env.budget.Set(v.name, h.current)
	v.publish(func(s *Status) { s.Reachable, s.Current, s.MaxSlots = true, h.current, st.Max() })
}

// allowed is the most vCPUs this VM may have now: hypervisor slots and the
// host budget.
func (h *hvView) allowed() int {
	a := h.state.Max()
	if b := h.vm.env.budget.Allowed(h.vm.name, h.current); b > 0 && (a == 0 || b < a) {
		a = b
	}
	return a
}
