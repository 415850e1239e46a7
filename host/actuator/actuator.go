// Package actuator runs the host side of Hot-Plug Heaven: one controller per
// VM that takes the agent's reports, asks the engine what to do, and carries
// it out on the hypervisor and in the guest, in an order that never leaves a
// CPU plugged but offline or unplugged but believed online. Every action is
// recorded in the event log.
//
// It decides nothing itself (that is the engine) and speaks no hypervisor
// protocol itself (that is the hypervisor package).
//
// # Who runs what
//
// Per VM there are two goroutines. The agent connection (agentConn, conn.go)
// accepts the VM's channel, does the Hello and turns frames into events on
// the VM's inbox; it holds no VM state. The VM loop (loop, loop.go) owns
// everything else: the session in use, the hypervisor view (hvView), the
// resources and the action in flight. It is a state machine:
//
//	idle ──decide──▶ acting ──Ack──▶ confirming ──report──▶ idle
//	  ▲                 │  (timeout, lost agent:    │
//	  └─────────────────┴── rollback steps) ◀───────┘
//
// The hypervisor steps of an action (plug, unplug) run at once on the loop;
// only the waits for the guest are states, so the loop never nests: while
// acting or confirming it still reads reports (they feed the engines but
// start nothing) and operator controls (pause, resume and policy apply at
// once; set-vcpus waits its turn). VM's exported methods only read the
// published Status or send a request to the loop.
//
// # Resources
//
// What is scaled sits behind the resource interface (resource.go): observe
// a sample, decide, start an action whose steps return what they wait for
// next, reconcile after a (re)connect, and end the action. cpuResource
// (cpu.go) is the only one. Memory (virtio-mem) will be a second resource in
// the same loop: its observe takes the report's memory figures, decide asks
// a memory engine, and start sets requested-size through the hypervisor and
// returns a confirming wait for the guest's plugged size; the loop's
// one-action-at-a-time rule keeps a CPU and a memory action from
// interleaving, and decide asks the resources in order, so CPU can take
// precedence. A live migration will be a loop state of its own (migrating),
// entered only from idle: while in it the loop keeps reading reports and
// controls but asks no resource to decide, so both CPU and memory pause, and
// on leaving it the loop reconciles each resource against the destination's
// hypervisor state, as it does after an actuator restart.
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
	// memBudget caps the memory of all VMs, bytes (SetMemoryBudget).
	memBudget *Budget
	squeeze   squeezer
	log       hclog.Logger
}

// New builds an actuator. It owns the given hypervisors and channels and
// closes them when Run returns. Observers (the API stream, metrics) are
// told of every report, decision, event and rejection.
func New(vms []VMConfig, events *eventlog.Log, hostBudget int, logger hclog.Logger, obs ...Observer) (*Actuator, error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	a := &Actuator{events: events, budget: NewBudget(hostBudget), memBudget: NewBudget(0), log: logger}
	// Actions a previous actuator started and did not finish: read the
	// log once here rather than once per VM.
	past, _, err := eventlog.ReadFile(events.Path(), eventlog.Filter{WithStarted: true})
	if err != nil {
		logger.Warn("cannot read the event log for interrupted actions", "error", err)
	}
	for _, c := range vms {
		v, err := newVM(c, events, a.budget, a.memBudget, observers(obs), logger)
		if v != nil {
			v.env.hostShort = &a.squeeze.short
		}
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

// SetMemoryBudget caps the memory of all the VMs together, bytes (0: no
// cap). Call it before Run.
func (a *Actuator) SetMemoryBudget(bytes uint64) { a.memBudget.SetLimit(int(bytes)) }

// Budget returns the host budget and the vCPUs in use.
func (a *Actuator) Budget() (limit, used int) { return a.budget.limit, a.budget.Total() }

// Run controls every VM until ctx ends. A VM whose hypervisor or agent
// fails does not affect the others.
func (a *Actuator) Run(ctx context.Context) {
	var wg sync.WaitGroup
	if a.squeeze.host != nil && a.squeeze.reserve > 0 {
		wg.Go(func() { a.squeezeLoop(ctx) })
	}
	for _, v := range a.vms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v.Run(ctx)
		}()
	}
	wg.Wait()
}
