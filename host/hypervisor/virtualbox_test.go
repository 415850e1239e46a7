package hypervisor

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/guest/cpu"
	"github.com/hotplugheaven/hotplug/guest/cpu/cputest"
	"github.com/hotplugheaven/hotplug/host/hypervisor/vboxfake"
)

// VirtualBox cannot run here: these tests drive the backend against
// vboxfake, a fake VBoxManage written from VirtualBox's manual and sources
// (see its package comment), built for each test.

type vboxEnv struct {
	fake *vboxfake.Fake
	vb   *VirtualBox
	vm   string
}

func startVBoxFake(t *testing.T, m vboxfake.Machine) *vboxEnv {
	t.Helper()
	dir := t.TempDir()
	manage, _, err := vboxfake.Build(testCtx(t), dir)
	if err != nil {
		t.Fatal(err)
	}
	f, err := vboxfake.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m.Name == "" {
		m.Name = "web1"
	}
	if err := f.AddMachine(m); err != nil {
		t.Fatal(err)
	}
	vb := NewVirtualBox(m.Name, VirtualBoxOptions{VBoxManage: manage, Env: f.Env(m.Name)})
	t.Cleanup(func() { vb.Close() })
	return &vboxEnv{fake: f, vb: vb, vm: m.Name}
}

func (e *vboxEnv) machine(t *testing.T) vboxfake.Machine {
	t.Helper()
	m, err := e.fake.Machine(e.vm)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestVirtualBoxState(t *testing.T) {
	e := startVBoxFake(t, vboxfake.Machine{CPUs: 4, CPUHotplug: true, Attached: []int{2}})
	st, err := e.vb.State(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	want := []Slot{
		{Index: 0, Plugged: true, Ref: "0", APICID: 0},
		{Index: 1, APICID: -1},
		{Index: 2, Plugged: true, Removable: true, Ref: "2", APICID: 2},
		{Index: 3, APICID: -1},
	}
	if !reflect.DeepEqual(st.Slots, want) {
		t.Errorf("State = %+v\nwant %+v", st.Slots, want)
	}
}

func TestVirtualBoxPlugUntilFull(t *testing.T) {
	e := startVBoxFake(t, vboxfake.Machine{CPUs: 3, CPUHotplug: true})
	ctx := testCtx(t)
	for i := 1; i < 3; i++ {
		s, _, err := e.vb.Plug(ctx)
		if err != nil {
			t.Fatalf("Plug %d: %v", i, err)
		}
		if want := (Slot{Index: i, Plugged: true, Removable: true, Ref: string(rune('0' + i)), APICID: i}); s != want {
			t.Errorf("Plug %d = %+v, want %+v", i, s, want)
		}
	}
	if got := e.machine(t).Attached; !reflect.DeepEqual(got, []int{0, 1, 2}) {
		t.Errorf("VirtualBox has CPUs %v attached", got)
	}
	if _, _, err := e.vb.Plug(ctx); !errors.Is(err, ErrNoFreeSlot) || !strings.Contains(err.Error(), "web1") {
		t.Errorf("Plug on a full VM: %v", err)
	}
}

// VirtualBox refuses to remove a CPU the guest has not ejected, and keeps
// it; once the guest has ejected it, it goes.
func TestVirtualBoxUnplugNeedsEject(t *testing.T) {
	e := startVBoxFake(t, vboxfake.Machine{CPUs: 4, CPUHotplug: true, Attached: []int{1}})
	ctx := testCtx(t)
	st, err := e.vb.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.vb.Unplug(ctx, st.Slots[1])
	if !errors.Is(err, ErrUnplugTimeout) || !strings.Contains(err.Error(), "did not eject CPU 1") ||
		!strings.Contains(err.Error(), "Hot-Remove was aborted because the CPU may still be used by the guest") {
		t.Fatalf("Unplug of a CPU the guest holds: %v", err)
	}
	if st, _ := e.vb.State(ctx); !st.Slots[1].Plugged {
		t.Error("CPU 1 is gone after the refused unplug")
	}
	if err := e.fake.GuestEject(e.vm, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := e.vb.Unplug(ctx, st.Slots[1]); err != nil {
		t.Fatalf("Unplug after the guest ejected: %v", err)
	}
	if st, _ := e.vb.State(ctx); st.Plugged() != 1 {
		t.Errorf("after Unplug: %+v", st)
	}
	// Again: already gone is not an error.
	if _, err := e.vb.Unplug(ctx, st.Slots[1]); err != nil {
		t.Errorf("second Unplug: %v", err)
	}
}

// TestVirtualBoxUnplugAfterAgentEject runs the agent's half of a
// VirtualBox unplug without the Guest Additions: the guest's CPU
// controller offlines and ejects a CPU on a sysfs tree whose kernel's
// _EJ0 reaches the fake VirtualBox, as the real ACPI device's does (it
// unlocks the CPU); only then does unplugcpu succeed. The guest's CPU
// numbers differ from VirtualBox's, as after out-of-order hot-adds.
func TestVirtualBoxUnplugAfterAgentEject(t *testing.T) {
	e := startVBoxFake(t, vboxfake.Machine{CPUs: 4, CPUHotplug: true, Attached: []int{1, 2, 3}})
	ctx := testCtx(t)
	guest := []cputest.CPU{{Linux: 0, VBox: 0}, {Linux: 1, VBox: 1}, {Linux: 2, VBox: 3}, {Linux: 3, VBox: 2}}
	sys := t.TempDir()
	if err := cputest.WriteVirtualBox(sys, 4, guest); err != nil {
		t.Fatal(err)
	}
	k := cputest.NewKernel(sys, guest)
	k.SetEJ0(func(id int) error { return e.fake.GuestEject(e.vm, id) })
	kctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { k.Run(kctx); close(done) }()
	t.Cleanup(func() { stop(); <-done })
	c := cpu.NewController(sys)
	slot := func(apic int) Slot {
		t.Helper()
		st, err := e.vb.State(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range st.Slots {
			if s.Plugged && s.APICID == apic {
				return s
			}
		}
		t.Fatalf("no plugged slot with APIC id %d: %+v", apic, st.Slots)
		return Slot{}
	}

	// Offlined only: VirtualBox still refuses, and keeps the CPU.
	if err := c.Offline(3); err != nil {
		t.Fatal(err)
	}
	if _, err := e.vb.Unplug(ctx, slot(2)); !errors.Is(err, ErrUnplugTimeout) {
		t.Fatalf("Unplug of a CPU the guest offlined but did not eject: %v", err)
	}
	// Ejected: Linux's cpu3 is VirtualBox's CPU 2, which now goes.
	ectx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.Eject(ectx, 3); err != nil {
		t.Fatal(err)
	}
	if _, err := e.vb.Unplug(ctx, slot(2)); err != nil {
		t.Fatalf("Unplug after the guest ejected: %v", err)
	}
	if got := e.machine(t).Attached; !reflect.DeepEqual(got, []int{0, 1, 3}) {
		t.Errorf("attached after unplugging CPU 2: %v, want [0 1 3]", got)
	}
	// A refused _EJ0 leaves the CPU locked, and VirtualBox keeps it.
	k.SetEJ0(func(int) error { return errors.New("_EJ0 failed") })
	if err := c.Offline(2); err != nil {
		t.Fatal(err)
	}
	ectx2, cancel2 := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel2()
	if err := c.Eject(ectx2, 2); !errors.Is(err, cpu.ErrStillPresent) {
		t.Fatalf("eject with a refusing firmware: %v", err)
	}
	if _, err := e.vb.Unplug(ctx, slot(3)); !errors.Is(err, ErrUnplugTimeout) {
		t.Fatalf("Unplug after a failed eject: %v", err)
	}
}

// With the Guest Additions' service the guest ejects on request, unless it
// cannot give the CPU up.
func TestVirtualBoxUnplugWithGuestService(t *testing.T) {
	e := startVBoxFake(t, vboxfake.Machine{CPUs: 4, CPUHotplug: true, Attached: []int{1, 2}, EjectService: true, Busy: []int{2},
		UnplugWait: 50 * time.Millisecond})
	ctx := testCtx(t)
	st, _ := e.vb.State(ctx)
	if _, err := e.vb.Unplug(ctx, st.Slots[1]); err != nil {
		t.Fatalf("Unplug with the service: %v", err)
	}
	if _, err := e.vb.Unplug(ctx, st.Slots[2]); !errors.Is(err, ErrUnplugTimeout) {
		t.Fatalf("Unplug of a CPU the guest cannot give up: %v", err)
	}
	if got := e.machine(t).Attached; !reflect.DeepEqual(got, []int{0, 2}) {
		t.Errorf("attached = %v, want [0 2]", got)
	}
}

func TestVirtualBoxUnplugRefused(t *testing.T) {
	e := startVBoxFake(t, vboxfake.Machine{CPUs: 4, CPUHotplug: true})
	ctx := testCtx(t)
	if _, err := e.vb.Unplug(ctx, Slot{Index: 0, Plugged: true, Ref: "0"}); !errors.Is(err, ErrNotUnpluggable) || !strings.Contains(err.Error(), "CPU 0") {
		t.Errorf("Unplug(CPU 0): %v", err)
	}
	if n := e.machine(t).Calls["controlvm unplugcpu"]; n != 0 {
		t.Errorf("CPU 0 unplug reached VBoxManage %d times", n)
	}
	if _, err := e.vb.Unplug(ctx, Slot{Index: 2}); !errors.Is(err, ErrNotUnpluggable) {
		t.Errorf("Unplug(empty slot): %v", err)
	}
	if _, err := e.vb.Unplug(ctx, Slot{Index: 9, Ref: "9"}); !errors.Is(err, ErrNotUnpluggable) {
		t.Errorf("Unplug(CPU 9 of 4): %v", err)
	}
}

func TestVirtualBoxHotplugDisabled(t *testing.T) {
	e := startVBoxFake(t, vboxfake.Machine{CPUs: 2})
	ctx := testCtx(t)
	st, err := e.vb.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Plugged() != 2 || st.Slots[1].Removable {
		t.Errorf("without hot-plug every CPU is plugged and fixed: %+v", st)
	}
	if _, _, err := e.vb.Plug(ctx); !errors.Is(err, ErrNoFreeSlot) || !strings.Contains(err.Error(), "--cpuhotplug on") {
		t.Errorf("Plug: %v", err)
	}
	if _, err := e.vb.Unplug(ctx, st.Slots[1]); !errors.Is(err, ErrNotUnpluggable) {
		t.Errorf("Unplug: %v", err)
	}
}

func TestVirtualBoxUnavailable(t *testing.T) {
	e := startVBoxFake(t, vboxfake.Machine{CPUs: 2, CPUHotplug: true, State: "poweroff"})
	ctx := testCtx(t)
	if _, err := e.vb.State(ctx); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "poweroff") {
		t.Errorf("State of a powered-off VM: %v", err)
	}
	// Plugging on a VM that stopped between State and the call: VBoxManage
	// says it is not running.
	if err := e.fake.UpdateMachine(e.vm, func(m *vboxfake.Machine) { m.State = "running" }); err != nil {
		t.Fatal(err)
	}
	if _, err := e.vb.manage(ctx, "controlvm", "web1", "plugcpu", "1"); err != nil {
		t.Fatal(err)
	}
	e.fake.UpdateMachine(e.vm, func(m *vboxfake.Machine) { m.State = "poweroff" })
	if _, err := e.vb.manage(ctx, "controlvm", "web1", "plugcpu", "1"); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "not running") {
		t.Errorf("controlvm on a stopped VM: %v", err)
	}

	other := NewVirtualBox("nope", VirtualBoxOptions{VBoxManage: e.vb.opts.VBoxManage, Env: e.vb.opts.Env})
	if _, err := other.State(ctx); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "not registered") {
		t.Errorf("unknown VM: %v", err)
	}
	missing := NewVirtualBox("web1", VirtualBoxOptions{VBoxManage: filepath.Join(t.TempDir(), "VBoxManage")})
	if _, err := missing.State(ctx); !errors.Is(err, ErrUnavailable) {
		t.Errorf("missing VBoxManage: %v", err)
	}
}

func TestVirtualBoxContext(t *testing.T) {
	e := startVBoxFake(t, vboxfake.Machine{CPUs: 2, CPUHotplug: true, Attached: []int{1}, EjectService: true, UnplugWait: 10 * time.Second})
	ctx, cancel := context.WithTimeout(testCtx(t), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := e.vb.Unplug(ctx, Slot{Index: 1, Plugged: true, Ref: "1"})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 3*time.Second {
		t.Errorf("Unplug under a 500 ms deadline: %v after %v", err, time.Since(start))
	}
}

func TestVirtualBoxCPULoad(t *testing.T) {
	e := startVBoxFake(t, vboxfake.Machine{CPUs: 2, CPUHotplug: true, CPULoadUser: 37.5, CPULoadKernel: 2.25})
	load, err := e.vb.CPULoad(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if load != (CPULoad{User: 0.375, Kernel: 0.0225}) {
		t.Errorf("CPULoad = %+v", load)
	}
}

func TestParseShowVMInfo(t *testing.T) {
	out := []byte("name=\"web 1\"\nEncryption:     disabled\nUUID=\"u\"\nCfgFile=\"/vms/web 1/web 1.vbox\"\ncpus=4\nVMState=\"running\"\ncpuhotplug=\"on\"\n")
	info, err := parseShowVMInfo(out)
	if err != nil {
		t.Fatal(err)
	}
	if info.cpus != 4 || info.state != "running" || info.cfgFile != "/vms/web 1/web 1.vbox" || info.hotplug != "on" {
		t.Errorf("info = %+v", info)
	}
	for _, bad := range []string{"cpus=4\nVMState=\"running\"\n", "cpus=x\nVMState=\"running\"\nCfgFile=\"f\"\n", "cpus=0\nVMState=\"r\"\nCfgFile=\"f\"\n"} {
		if _, err := parseShowVMInfo([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestParseVBoxSettingsCPU(t *testing.T) {
	doc := []byte(`<?xml version="1.0"?><VirtualBox xmlns="http://www.virtualbox.org/" version="1.19-linux"><Machine name="m"><Hardware>
<CPU count="4" hotplug="true"><CpuTree><Cpu id="0"/><Cpu id="3"/></CpuTree></CPU></Hardware></Machine></VirtualBox>`)
	c, err := parseVBoxSettingsCPU(doc)
	if err != nil {
		t.Fatal(err)
	}
	st, hotplug := slotsOf(vboxInfo{cpus: 4, settings: c})
	if !hotplug || c.Count != 4 || st.Plugged() != 2 || !st.Slots[3].Plugged || !st.Slots[3].Removable {
		t.Errorf("settings %+v → %+v", c, st)
	}
	if _, err := parseVBoxSettingsCPU([]byte(`<VirtualBox><Machine/></VirtualBox>`)); err == nil {
		t.Error("no <CPU> accepted")
	}
}

func TestParseToolErrors(t *testing.T) {
	stderr := []byte("VBoxManage: error: Invalid CPU number '0'.\nVBoxManage: error: It is not possible to detach CPU 0\n" +
		"VBoxManage: error: Details: code E_INVALIDARG (0x80070057), component SessionMachineWrap, interface IMachine, callee nsISupports\n" +
		"VBoxManage: error: Context: \"HotUnplugCPU(n)\" at line 470 of file VBoxManageControlVM.cpp\n")
	want := []string{"Invalid CPU number '0'.", "It is not possible to detach CPU 0"}
	if got := parseToolErrors(stderr); !reflect.DeepEqual(got, want) {
		t.Errorf("got %q", got)
	}
}

func TestParseMetricsQuery(t *testing.T) {
	out := []byte("Object          Metric                                   Values\n" +
		"--------------- ---------------------------------------- --------------------------------------------\n" +
		"web1            CPU/Load/User                            1.00%, 3.50%\nweb1            CPU/Load/Kernel                          \n")
	got, err := parseMetricsQuery(out)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, map[string]float64{"CPU/Load/User": 3.5}) {
		t.Errorf("got %v", got)
	}
}

// FuzzVirtualBoxParsers: VBoxManage's output and the settings file are the
// host's, but parsing must not panic whatever they hold.
func FuzzVirtualBoxParsers(f *testing.F) {
	f.Add([]byte("cpus=4\nVMState=\"running\"\nCfgFile=\"f\"\n"))
	f.Add([]byte(`<VirtualBox><CPU count="2" hotplug="true"><CpuTree><Cpu id="1"/></CpuTree></CPU></VirtualBox>`))
	f.Add([]byte("Object x\n---\nvm CPU/Load/User 1.00%\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if info, err := parseShowVMInfo(b); err == nil {
			if info.cpus < 1 || info.cpus > 1024 {
				t.Fatalf("cpus %d", info.cpus)
			}
			slotsOf(info)
		}
		if c, err := parseVBoxSettingsCPU(b); err == nil {
			slotsOf(vboxInfo{cpus: 4, settings: c})
		}
		parseMetricsQuery(b)
		parseToolErrors(b)
	})
}
