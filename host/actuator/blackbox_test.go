package actuator

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/host/actuator/fakeguest"
	"github.com/hotplugheaven/hotplug/host/eventlog"
	"github.com/hotplugheaven/hotplug/host/hypervisor"
	"github.com/hotplugheaven/hotplug/host/hypervisor/vboxfake"
)

// fakeThreads writes /proc/<tid>/stat files for QEMU vCPU threads 7001…
// (qmptest's thread ids) and advances their CPU time: a plugged vCPU
// thread runs `busy` of the time.
type fakeThreads struct {
	root string
	mu   sync.Mutex
	busy float64
	tick map[int]float64 // cumulative clock ticks
}

func (f *fakeThreads) set(busy float64) { f.mu.Lock(); f.busy = busy; f.mu.Unlock() }

func (f *fakeThreads) write(t *testing.T) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for tid := 7001; tid <= 7016; tid++ {
		f.tick[tid] += f.busy * 100 * 0.05 // 50 ms of wall time at USER_HZ=100
		dir := filepath.Join(f.root, fmt.Sprint(tid))
		os.MkdirAll(dir, 0o755)
		line := fmt.Sprintf("%d (CPU 0/TCG) S 1 1 0 0 -1 4194304 99 0 0 0 %d 0 0 0 20 0 1 0 497403 3133440 408 18446744073709551615 1 1 1 0 0 0 0 0 0 0 0 0 -1 0 0 0 0 0 0 1 1 1 1 1 1 1 0\n",
			tid, int64(f.tick[tid]))
		if err := os.WriteFile(filepath.Join(dir, "stat.tmp"), []byte(line), 0o644); err != nil {
			t.Error(err)
		}
		os.Rename(filepath.Join(dir, "stat.tmp"), filepath.Join(dir, "stat"))
	}
}

// TestBlackBoxScalesWithoutAgent: no agent ever connects; after the agent
// timeout the VM is measured from its vCPU threads' CPU time and scaled up
// when they are busy and down when they idle, without any guest command.
func TestBlackBoxScalesWithoutAgent(t *testing.T) {
	f := &fakeThreads{root: t.TempDir(), tick: map[int]float64{}}
	f.write(t)
	stop, stopped := make(chan struct{}), make(chan struct{})
	defer func() { close(stop); <-stopped }()
	go func() {
		defer close(stopped)
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				f.write(t)
			}
		}
	}()
	r := newRig(t, 0, vmSpec{name: "vm1", noGuest: true, blackBox: true, procRoot: f.root})
	vm, ctl := r.vms[0], r.act.VM("vm1")
	f.set(1) // every online vCPU busy
	waitFor(t, 15*time.Second, "black-box scale-up to the max of 4", func() bool { return vm.qmp.Plugged() == 4 })
	if st := ctl.Status(); st.Agent.Source != SourceHost {
		t.Fatalf("status source %q, want host", st.Agent.Source)
	}
	f.set(0.02)
	waitFor(t, 20*time.Second, "black-box scale-down to 1", func() bool { return vm.qmp.Plugged() == 1 })
	for _, ev := range r.eventsOf("vm1") {
		if ev.Outcome != eventlog.OutcomeOK {
			t.Fatalf("event %+v", ev)
		}
		switch ev.Kind {
		case "scale_up":
			// One plug per CPU, one confirm for the batch.
			if !regexp.MustCompile(`^(plug,)+confirm$`).MatchString(stepNames(ev)) {
				t.Fatalf("black-box scale-up steps %q", stepNames(ev))
			}
		case "scale_down":
			if !regexp.MustCompile(`^unplug(,unplug)*$`).MatchString(stepNames(ev)) {
				t.Fatalf("black-box scale-down steps %q", stepNames(ev))
			}
		}
		if ev.Reason[:9] != "black-box" {
			t.Fatalf("reason does not say black-box: %s", ev.Reason)
		}
	}
}

// TestBlackBoxVirtualBox: a VirtualBox VM without an agent is measured by
// VBoxManage metrics (the VM's load as a share of the host's CPUs) and
// scaled by plugcpu/unplugcpu; the guest's VBoxService ejects on unplug.
// VirtualBox cannot run here: this is against vboxfake (see its package
// comment for what it was written from).
func TestBlackBoxVirtualBox(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	manage, _, err := vboxfake.Build(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	f, err := vboxfake.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.AddMachine(vboxfake.Machine{Name: "vb1", State: "running", CPUs: 4, CPUHotplug: true, EjectService: true}); err != nil {
		t.Fatal(err)
	}
	setLoad := func(busyCPUs float64) {
		// The metric is a share of all host CPUs, in percent.
		pct := 100 * busyCPUs / float64(runtime.NumCPU())
		f.UpdateMachine("vb1", func(m *vboxfake.Machine) { m.CPULoadUser = pct })
	}
	attached := func() int {
		m, _ := f.Machine("vb1")
		return len(m.Attached)
	}
	events, _ := eventlog.Open(filepath.Join(dir, "events.jsonl"))
	defer events.Close()
	p := fastPolicy()
	act, err := New([]VMConfig{{Name: "vb1", Policy: p, Channel: fakeguest.NewPipeChannel(),
		Hypervisor: hypervisor.NewVirtualBox("vb1", hypervisor.VirtualBoxOptions{VBoxManage: manage, Env: f.Env("vb1")}),
		BlackBox:   true, AgentTimeout: 300 * time.Millisecond, RecheckInterval: 300 * time.Millisecond}}, events, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { act.Run(runCtx); close(done) }()
	// Stop the actuator (and its VBoxManage runs) before the temp dir goes.
	defer func() { stop(); <-done }()
	setLoad(float64(attached()))
	waitFor(t, 30*time.Second, "plugcpu under load", func() bool {
		setLoad(float64(attached())) // every vCPU busy
		return attached() >= 3
	})
	setLoad(0.02)
	waitFor(t, 30*time.Second, "unplugcpu when idle", func() bool { return attached() == 1 })
	if st := act.VM("vb1").Status(); st.Agent.Source != SourceHost {
		t.Fatalf("source %q", st.Agent.Source)
	}
}
