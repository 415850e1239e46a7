package actuator

import (
	"testing"
)

// TestHypervisorReadsPerPlug counts the QMP commands a 1→4 scale-up
// costs, and logs them per plug: the figure the actuator's redesign
// brought down (each plug used to read the whole state three times, and
// ask query-kvm each time).
func TestHypervisorReadsPerPlug(t *testing.T) {
	r := newRig(t, 0, vmSpec{name: "vm1"})
	vm, ctl := r.vms[0], r.act.VM("vm1")
	ctx := pausedAndConnected(t, ctl)
	before := len(vm.qmp.Requests())
	if err := ctl.SetVCPUs(ctx, 4); err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, req := range vm.qmp.Requests()[before:] {
		counts[req.Command]++
	}
	const plugs = 3
	reads := counts["query-hotpluggable-cpus"] + counts["query-cpus-fast"] + counts["qom-get"] + counts["query-kvm"]
	t.Logf("1→4: %d device_add, %d reads (%.1f per plug): %v", counts["device_add"], reads, float64(reads)/plugs, counts)
	if counts["device_add"] != plugs {
		t.Fatalf("%d device_add for %d plugs", counts["device_add"], plugs)
	}
	if counts["query-kvm"] > 1 {
		t.Errorf("query-kvm asked %d times for one QEMU process", counts["query-kvm"])
	}
	if counts["query-hotpluggable-cpus"] > 2*plugs+1 { // one more for the first lifetime check
		t.Errorf("query-hotpluggable-cpus %d times for %d plugs: state read more than twice a plug", counts["query-hotpluggable-cpus"], plugs)
	}
}
