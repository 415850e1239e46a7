package main

import (
	"strings"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/host/api"
)

func TestStatusAndExplainShowMemory(t *testing.T) {
	v := api.VM{Status: api.Status{Name: "web", Mode: "sandpiper", Current: 2, Online: 2, Target: 2,
		Memory: &api.Memory{Mode: "pressure", Device: "virtio-mem", Total: 2 << 30, Max: 4 << 30, Target: 2560 << 20,
			LastAction: "grow", LastRule: "stall", LastReason: "memory stall 5.0% of the interval", Degraded: "the guest reached 2048 MiB of 2560 MiB"}}}
	plain := api.VM{Status: api.Status{Name: "db", Mode: "sandpiper", Current: 1, Online: 1}}
	var b strings.Builder
	printStatus(&b, api.VMList{VMs: []api.VM{v, plain}})
	lines := strings.Split(b.String(), "\n")
	if !strings.Contains(lines[0], "MEMORY") || !strings.Contains(lines[1], "2GiB→2560MiB") || !strings.Contains(lines[2], " - ") {
		t.Fatalf("status:\n%s", b.String())
	}
	b.Reset()
	printExplain(&b, v, time.Now())
	for _, want := range []string{"memory: 2GiB (virtio-mem, at most 4GiB), sizing pressure", "grow to 2560MiB by rule stall: memory stall 5.0%",
		"last memory resize fell short: the guest reached 2048 MiB"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("explain lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	printExplain(&b, plain, time.Now())
	if strings.Contains(b.String(), "memory:") {
		t.Errorf("explain of a VM without memory sizing:\n%s", b.String())
	}
}
