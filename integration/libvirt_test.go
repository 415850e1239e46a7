package integration_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotplugheaven/hotplug/host/actuator"
	"github.com/hotplugheaven/hotplug/host/channel"
	"github.com/hotplugheaven/hotplug/host/engine"
	"github.com/hotplugheaven/hotplug/host/eventlog"
	"github.com/hotplugheaven/hotplug/host/hypervisor"
	"github.com/hotplugheaven/hotplug/integration/stack"
)

// TestLibvirtEndToEnd runs the whole product on a libvirt domain: a real
// libvirtd starts QEMU (TCG) with the testvm kernel and the real agent, its
// agent port a libvirt unix channel; the real actuator logic, driven here as
// a library, scales it through hypervisor.Libvirt over libvirtd's socket and
// channel.VirtioSerial on the channel. Under load vCPUs are plugged and
// onlined, and they are removed when it stops, as the guest's sysfs, QEMU's
// own state and the event log all show.
//
// Two busy/idle cycles: under TCG libvirt never sees an unplug complete, so
// the second cycle plugs fresh slots, whose new APIC ids Linux numbers past
// the old CPUs (cpu4, not cpu1) — the actuator asks the agent for one more
// CPU online, not for a number.
func TestLibvirtEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a libvirt guest; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	dir := t.TempDir()
	g, err := stack.StartLibvirtGuest(ctx, stack.LibvirtOptions{Dir: dir, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Stop)

	logFile, err := os.Create(filepath.Join(dir, "actuator.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	logger := hclog.New(&hclog.LoggerOptions{Name: "hotplug-actuator", Level: hclog.Debug, Output: logFile})
	events, err := eventlog.Open(filepath.Join(dir, "events.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer events.Close()
	policy := engine.DefaultPolicy()
	policy.MinVCPUs, policy.MaxVCPUs = 1, 4
	policy.Interval = engine.Duration(time.Second)
	policy.K, policy.N, policy.Window, policy.DownSamples = 3, 5, 10, 5
	policy.CooldownUp, policy.CooldownDown = engine.Duration(5*time.Second), engine.Duration(5*time.Second)
	hyp := hypervisor.NewLibvirt(g.Domain, hypervisor.LibvirtOptions{UnplugTimeout: 60 * time.Second, Logger: logger.Named("guest")})
	act, err := actuator.New([]actuator.VMConfig{{
		Name: "guest", Policy: policy, Hypervisor: hyp,
		Channel:        &channel.VirtioSerial{Path: g.AgentSocket(), Logger: logger},
		CommandTimeout: 60 * time.Second,
	}}, events, 0, logger)
	if err != nil {
		t.Fatal(err)
	}
	actCtx, stopAct := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); act.Run(actCtx) }()
	// Stop the actuator before the domain goes (cleanups run last first).
	t.Cleanup(func() {
		stopAct()
		wg.Wait()
		hyp.Close()
		if t.Failed() {
			dumpFile(t, filepath.Join(dir, "actuator.log"), 80)
			t.Logf("guest console tail:\n%s", g.ConsoleTail(60))
		}
	})
	readEvents := func() []eventlog.Event {
		evs, _, err := eventlog.ReadFile(filepath.Join(dir, "events.jsonl"), eventlog.Filter{})
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		return evs
	}
	count := func(kind string) int { return countKind(readEvents(), kind) }

	waitLibvirt(ctx, t, g, 90*time.Second, "agent connected, guest idle at 1 vCPU", func(online, plugged int) bool {
		return online == 1 && plugged == 1 && strings.Contains(readFile(filepath.Join(dir, "actuator.log")), "agent connected")
	})

	loadStart := time.Now()
	if err := g.StartLoad(ctx, 2); err != nil {
		t.Fatal(err)
	}
	waitLibvirt(ctx, t, g, 3*time.Minute, "≥2 vCPUs online in the guest and plugged in QEMU", func(online, plugged int) bool {
		return online >= 2 && plugged == online && count("scale_up") > 0
	})
	var up eventlog.Event
	for _, ev := range readEvents() {
		if ev.Kind == "scale_up" {
			up = ev
			break
		}
	}
	if up.Outcome != eventlog.OutcomeOK || up.Rule != "hotspot" || up.Result < 2 {
		t.Fatalf("scale-up event: %+v", up)
	}
	// Let the allocation settle under load, then stop it.
	time.Sleep(5 * time.Second)
	loadStop := time.Now()
	if err := g.StopLoad(ctx); err != nil {
		t.Fatal(err)
	}
	// The actuator commits an event after its last step, a moment after
	// the guest and QEMU show the change.
	backAtOne := func() bool {
		for _, ev := range readEvents() {
			if ev.Kind == "scale_down" && ev.Result == 1 {
				return true
			}
		}
		return false
	}
	waitLibvirt(ctx, t, g, 4*time.Minute, "back to 1 vCPU in the guest, in QEMU and in the event log", func(online, plugged int) bool {
		return online == 1 && plugged == 1 && backAtOne()
	})
	// A second burst: fresh slots, new CPU numbers in the guest.
	if err := g.StartLoad(ctx, 2); err != nil {
		t.Fatal(err)
	}
	waitLibvirt(ctx, t, g, 3*time.Minute, "a second scale-up on fresh slots", func(online, plugged int) bool {
		return online >= 2 && plugged == online && count("scale_up") > 1
	})
	if err := g.StopLoad(ctx); err != nil {
		t.Fatal(err)
	}
	waitLibvirt(ctx, t, g, 4*time.Minute, "back to 1 vCPU after the second burst", func(online, plugged int) bool {
		return online == 1 && plugged == 1 && count("scale_down") >= 2
	})
	libvirtCount, err := g.LibvirtCurrent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var unplugMS []string
	downs := 0
	for _, ev := range readEvents() {
		if ev.Kind != "scale_down" {
			continue
		}
		downs++
		if ev.Outcome != eventlog.OutcomeOK || ev.Rule != "sustained-low" {
			t.Errorf("scale-down event: %+v", ev)
		}
		unplugMS = append(unplugMS, stepList(ev, "unplug"))
	}
	t.Logf("scale-up: load start → decision %v, %d → %d vCPUs; plug steps %s ms, online %s ms, confirm %s ms",
		up.Time.Sub(loadStart).Round(10*time.Millisecond), up.From, up.Result, stepList(up, "plug"), stepList(up, "online"), stepList(up, "confirm"))
	t.Logf("scale-down: load stop → 1 vCPU in %v over %d scale-downs; unplug steps %s ms (libvirt waits 5 s for QEMU's DEVICE_DELETED, which TCG never sends for a CPU); libvirt still counts %d live vCPUs, QEMU has 1",
		time.Since(loadStop).Round(100*time.Millisecond), downs, strings.Join(unplugMS, "; "), libvirtCount)
	for _, ev := range readEvents() {
		var steps []string
		for _, st := range ev.Steps {
			steps = append(steps, fmt.Sprintf("%s %.0f ms", st.Name, st.DurationMS))
		}
		t.Logf("event %s %d → %d (result %d) %s, rule %s: %s", ev.Kind, ev.From, ev.To, ev.Result, ev.Outcome, ev.Rule, strings.Join(steps, ", "))
		if ev.Outcome != eventlog.OutcomeOK {
			t.Errorf("event with outcome %s: %+v", ev.Outcome, ev)
		}
	}
}

// waitLibvirt polls the guest's sysfs and QEMU's state until cond holds.
func waitLibvirt(ctx context.Context, t *testing.T, g *stack.LibvirtGuest, d time.Duration, what string, cond func(online, plugged int) bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		set, err := g.GuestOnline(ctx)
		if err != nil {
			t.Fatal(err)
		}
		plugged, err := g.QEMUPlugged(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if cond(set.Len(), plugged) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: still waiting for %s (guest online %s, QEMU plugged %d)", d, what, set, plugged)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// stepList lists the durations of every step called name, in ms.
func stepList(ev eventlog.Event, name string) string {
	var out []string
	for _, s := range ev.Steps {
		if s.Name == name {
			out = append(out, fmt.Sprintf("%.0f", s.DurationMS))
		}
	}
	return strings.Join(out, ", ")
}

// TestLibvirtVirtioMem: a libvirt domain with a virtio-mem device (and the
// NUMA cell libvirt needs for it) is resized through hypervisor.Libvirt —
// QEMU's device over libvirt's monitor passthrough — and the guest's
// MemTotal follows.
func TestLibvirtVirtioMem(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	g, err := stack.StartLibvirtGuest(ctx, stack.LibvirtOptions{Dir: dir, MaxCPUs: 2, MemoryDeviceMB: 1024, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Stop)
	lv := hypervisor.NewLibvirt(g.Domain, hypervisor.LibvirtOptions{Socket: stack.LibvirtSocket})
	defer lv.Close()
	mem, err := lv.Memory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if mem.Device != hypervisor.MemVirtioMem || mem.Base != 512<<20 || mem.Max != 1536<<20 || mem.Total != 512<<20 {
		t.Fatalf("Memory = %+v", mem)
	}
	memTotal := func() uint64 {
		out, st, err := g.Run(ctx, "grep MemTotal: /proc/meminfo")
		f := strings.Fields(out)
		if err != nil || st != 0 || len(f) != 3 {
			t.Fatalf("MemTotal: %q %d %v", out, st, err)
		}
		kb, _ := strconv.ParseUint(f[1], 10, 64)
		return kb << 10
	}
	boot := memTotal()
	start := time.Now()
	if mem, err = lv.ResizeMemory(ctx, 1024<<20, 30*time.Second); err != nil || mem.Total != 1024<<20 {
		t.Fatalf("grow through libvirt: %+v, %v", mem, err)
	}
	t.Logf("grow 512 → 1024 MiB through libvirt's passthrough: %v", time.Since(start))
	deadline := time.Now().Add(10 * time.Second)
	for memTotal()-boot != 512<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("guest MemTotal %+d MiB over boot, QEMU plugged 512", int64(memTotal()-boot)>>20)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if mem, err = lv.ResizeMemory(ctx, 512<<20, 30*time.Second); err != nil || mem.Total != 512<<20 {
		t.Fatalf("shrink through libvirt: %+v, %v", mem, err)
	}
	// View-only: no passthrough, so no memory resizing, said so.
	vo := hypervisor.NewLibvirt(g.Domain, hypervisor.LibvirtOptions{Socket: stack.LibvirtSocket, LibvirtViewOnly: true})
	defer vo.Close()
	if _, err := vo.Memory(ctx); !errors.Is(err, hypervisor.ErrNoMemoryDevice) || !strings.Contains(err.Error(), "libvirt_view_only") {
		t.Fatalf("view-only Memory: %v", err)
	}
}
