package integration_test

import (
	"strings"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/host/eventlog"
	"github.com/hotplugheaven/hotplug/integration/stack"
)

// TestBlackBoxWithoutAgent boots a guest with no agent — only a udev-like
// loop in init that onlines hot-added CPUs — and checks that the actuator,
// measuring the vCPU threads from the host, scales it up under load and
// back down when the load stops.
func TestBlackBoxWithoutAgent(t *testing.T) {
	ctx, s, _ := startStack(t, stack.Options{NoAgent: true, VMKeys: `agent_timeout = "3s"`})
	loadStart := time.Now()
	if err := s.StartLoad(ctx, 2); err != nil {
		t.Fatal(err)
	}
	waitState(ctx, t, s, 3*time.Minute, "a black-box scale-up, onlined by the guest itself", func(online, plugged int) bool {
		return online >= 2 && plugged == online && hasEvent(s, "scale_up")
	})
	up := firstEvent(t, s, "scale_up")
	if up.Outcome != eventlog.OutcomeOK || !strings.HasPrefix(up.Reason, "black-box") {
		t.Fatalf("scale-up event %+v", up)
	}
	if err := s.StopLoad(ctx); err != nil {
		t.Fatal(err)
	}
	// Polled once a second: the test's commands in the guest are CPU
	// work the host measures (at ten a second they kept a vCPU over the
	// lower threshold on a slow host).
	waitStateEvery(ctx, t, s, 3*time.Minute, time.Second, "back to 1 vCPU by ACPI eject alone", func(online, plugged int) bool {
		return online == 1 && plugged == 1 && hasEvent(s, "scale_down")
	})
	t.Logf("black-box: load start → plug decision %v (%d → %d vCPUs, reason: %s)",
		up.Time.Sub(loadStart).Round(10*time.Millisecond), up.From, up.Result, up.Reason)
}
