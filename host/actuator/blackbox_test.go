package actuator

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/host/eventlog"
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
	if st := ctl.Status(); st.Source != SourceHost {
		t.Fatalf("status source %q, want host", st.Source)
	}
	f.set(0.02)
	waitFor(t, 20*time.Second, "black-box scale-down to 1", func() bool { return vm.qmp.Plugged() == 1 })
	for _, ev := range r.eventsOf("vm1") {
		if ev.Outcome != eventlog.OutcomeOK {
			t.Fatalf("event %+v", ev)
		}
		switch ev.Kind {
		case "scale_up":
			if stepNames(ev)[:12] != "plug,confirm" {
				t.Fatalf("black-box scale-up steps %q", stepNames(ev))
			}
		case "scale_down":
			if stepNames(ev) != "unplug" {
				t.Fatalf("black-box scale-down steps %q", stepNames(ev))
			}
		}
		if ev.Reason[:9] != "black-box" {
			t.Fatalf("reason does not say black-box: %s", ev.Reason)
		}
	}
}
