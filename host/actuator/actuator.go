// Package actuator runs the host side of Hot-Plug Heaven: one controller per
// VM that takes the agent's reports, asks the engine what to do, and carries
// it out on the hypervisor and in the guest, in an order that never leaves a
// CPU plugged but offline or unplugged but believed online. Every action is
// recorded in the event log.
//
// It decides nothing itself (that is the engine) and speaks no hypervisor
// protocol itself (that is the hypervisor package).
package actuator

import (
	"context"
	"fmt"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/hotplugheaven/hotplug/host/eventlog"
)

// Actuator runs a set of VM controllers sharing one event log and budget.
type Actuator struct {
	vms    []*VM
	events *eventlog.Log
	budget *Budget
	log    hclog.Logger
}

// New builds an actuator. It owns the given hypervisors and channels and
// closes them when Run returns. Observers (the API stream, metrics) are
// told of every report, decision, event and rejection.
func New(vms []VMConfig, events *eventlog.Log, hostBudget int, logger hclog.Logger, obs ...Observer) (*Actuator, error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	a := &Actuator{events: events, budget: NewBudget(hostBudget), log: logger}
	// Actions a previous actuator started and did not finish: read the
	// log once here rather than once per VM.
	past, _, err := eventlog.ReadFile(events.Path(), eventlog.Filter{WithStarted: true})
	if err != nil {
		logger.Warn("cannot read the event log for interrupted actions", "error", err)
	}
	for _, c := range vms {
		v, err := newVM(c, events, a.budget, observers(obs), logger)
		if err != nil {
			return nil, err
		}
		v.unfinished = eventlog.Unfinished(past, c.Name)
		a.vms = append(a.vms, v)
	}
	if len(a.vms) == 0 {
		return nil, fmt.Errorf("no VMs to control")
	}
	return a, nil
}

// VMs returns the controllers, for status.
func (a *Actuator) VMs() []*VM { return a.vms }

// VM returns the controller of the named VM, or nil.
func (a *Actuator) VM(name string) *VM {
	for _, v := range a.vms {
		if v.name == name {
			return v
		}
	}
	return nil
}

// Budget returns the host budget and the vCPUs in use.
func (a *Actuator) Budget() (limit, used int) { return a.budget.limit, a.budget.Total() }

// Run controls every VM until ctx ends. A VM whose hypervisor or agent
// fails does not affect the others.
func (a *Actuator) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, v := range a.vms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v.Run(ctx)
		}()
	}
	wg.Wait()
}
