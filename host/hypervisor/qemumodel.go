package hypervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/go-hclog"

	"github.com/hotplugheaven/hotplug/host/qmp"
)

// The QEMU model: how a QEMU's CPU slots are read over a monitor, written
// once for every backend that reaches QEMU. QEMU runs it over its own QMP
// socket (qmp.Client), libvirt over its monitor passthrough
// (qemu-monitor-command); both are a qmp.Executor. What QEMU does is
// written down in qemu.go.

// hotpluggableCPU is one entry of query-hotpluggable-cpus.
type hotpluggableCPU struct {
	Type       string                     `json:"type"`
	VCPUsCount int                        `json:"vcpus-count"`
	QOMPath    string                     `json:"qom-path"`
	Props      map[string]json.RawMessage `json:"props"`
}

// qslot is a Slot with what Plug and Unplug need to address it in QEMU.
type qslot struct {
	Slot
	cpuType string
	// props are QEMU's, verbatim, to hand back to device_add.
	props map[string]json.RawMessage
	topo  []int64 // sort key, in topoKeys order
}

// topoKeys orders slots, outermost level first, as QEMU's CPU topology
// does: x86 uses socket/die/module/core/thread (module-id since QEMU 9,
// listed only with -smp modules > 1); cluster-id (QEMU 7.0+ on other
// machines) sits between die and module. A level missing from a slot's
// props counts as 0.
var topoKeys = []string{"socket-id", "die-id", "cluster-id", "module-id", "core-id", "thread-id"}

// Positions in topoKeys.
const (
	topoSocket = iota
	topoDie
	topoCluster
	topoModule
	topoCore
	topoThread
)

// idPrefixes name the parts of a device id we derive from props.
var idPrefixes = map[string]string{"socket-id": "s", "die-id": "d", "cluster-id": "cl", "module-id": "m", "core-id": "c", "thread-id": "t"}

// readSlots reads QEMU's CPU slots, ordered by topology so index 0 is the
// boot CPU. It does not fill APICID or ThreadID.
func readSlots(ctx context.Context, m qmp.Executor) ([]qslot, error) {
	var cpus []hotpluggableCPU
	if err := m.Execute(ctx, "query-hotpluggable-cpus", nil, &cpus); err != nil {
		return nil, fmt.Errorf("query-hotpluggable-cpus: %w", err)
	}
	out := make([]qslot, 0, len(cpus))
	for _, cpu := range cpus {
		if cpu.VCPUsCount != 1 {
			return nil, fmt.Errorf("slot of type %s holds %d vCPUs; only machines with one vCPU per slot (x86) are supported",
				cpu.Type, cpu.VCPUsCount)
		}
		s := qslot{cpuType: cpu.Type, props: cpu.Props, topo: make([]int64, len(topoKeys))}
		for i, k := range topoKeys {
			if raw, ok := cpu.Props[k]; ok {
				if err := json.Unmarshal(raw, &s.topo[i]); err != nil {
					return nil, fmt.Errorf("query-hotpluggable-cpus: %s is %s, want an integer", k, raw)
				}
			}
		}
		s.Plugged = cpu.QOMPath != ""
		s.Ref = cpu.QOMPath
		s.Removable = hotplugged(cpu.QOMPath)
		s.APICID = -1
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return topoLess(out[i].topo, out[j].topo) })
	for i := range out {
		out[i].Index = i
	}
	return out, nil
}

func topoLess(a, b []int64) bool {
	for k := range a {
		if a[k] != b[k] {
			return a[k] < b[k]
		}
	}
	return false
}

// topoKey is a map key for a slot's place in the topology.
func topoKey(topo []int64) string { return fmt.Sprint(topo) }

// cpuFast is one entry of query-cpus-fast.
type cpuFast struct {
	QOMPath  string `json:"qom-path"`
	ThreadID int    `json:"thread-id"`
}

// readState reads the slots with each plugged CPU's host thread
// (query-cpus-fast) and APIC id (qom-get apic-id). A CPU unplugged
// between the queries is reported as QEMU first listed it, with its APIC
// id unknown (-1).
func readState(ctx context.Context, m qmp.Executor, log hclog.Logger) ([]qslot, error) {
	slots, err := readSlots(ctx, m)
	if err != nil {
		return nil, err
	}
	var fast []cpuFast
	if err := m.Execute(ctx, "query-cpus-fast", nil, &fast); err != nil {
		return nil, fmt.Errorf("query-cpus-fast: %w", err)
	}
	threads := make(map[string]int, len(fast))
	for _, f := range fast {
		threads[f.QOMPath] = f.ThreadID
	}
	for i := range slots {
		s := &slots[i]
		if !s.Plugged {
			continue
		}
		s.ThreadID = threads[s.Ref]
		var apic int
		err := m.Execute(ctx, "qom-get", map[string]string{"path": s.Ref, "property": "apic-id"}, &apic)
		var qe *qmp.Error
		switch {
		case err == nil:
			s.APICID = apic
		case errors.As(err, &qe) && qe.Class == "DeviceNotFound":
			log.Debug("CPU vanished while reading state", "qom_path", s.Ref)
		default:
			return nil, fmt.Errorf("qom-get %s apic-id: %w", s.Ref, err)
		}
	}
	return slots, nil
}

// hotplugged reports whether a CPU was created by device_add: QEMU puts
// those under /machine/peripheral (with an id) or /machine/peripheral-anon.
func hotplugged(qomPath string) bool {
	return strings.HasPrefix(qomPath, "/machine/peripheral/") || strings.HasPrefix(qomPath, "/machine/peripheral-anon/")
}

// deviceID is the id Plug gives the CPU in a slot: stable across restarts
// of the actuator, so a CPU we plugged is recognisable, e.g. hpcpu-s0-c1-t0.
func deviceID(s qslot) string {
	var b strings.Builder
	b.WriteString("hpcpu")
	for i, k := range topoKeys {
		if _, ok := s.props[k]; ok {
			fmt.Fprintf(&b, "-%s%d", idPrefixes[k], s.topo[i])
		}
	}
	return b.String()
}
