package integration_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/host/actuator/fakeguest"
	"github.com/hotplugheaven/hotplug/host/eventlog"
	"github.com/hotplugheaven/hotplug/host/qmp/qmptest"
	"github.com/hotplugheaven/hotplug/integration/stack"
	"github.com/hotplugheaven/hotplug/proto"
)

// procRig runs the hotplug-actuator binary as a process — so it can be
// killed with SIGKILL — against fake QEMUs (qmptest) and fake guests over
// TCP channels, all in this test process.
type procRig struct {
	t       *testing.T
	dir     string
	bin     string
	config  string
	events  string
	vms     []*procVM
	cmd     *exec.Cmd
	done    chan error
	log     *os.File
	ctx     context.Context
	cancel  context.CancelFunc
	guestMu chan struct{}
}

type procVM struct {
	name   string
	qmp    *qmptest.Server
	guest  *fakeguest.Guest
	addr   string
	cancel context.CancelFunc // stops the guest's agent
}

const faultPolicy = `
min_vcpus = 1
max_vcpus = 4
interval = "200ms"
k = 2
n = 3
window = 6
down_samples = 3
cooldown_up = "0s"
cooldown_down = "0s"
`

var builtActuator string

func actuatorBinary(t *testing.T) string {
	t.Helper()
	if builtActuator == "" {
		dir, err := os.MkdirTemp("", "hotplug-bin")
		if err != nil {
			t.Fatal(err)
		}
		if _, builtActuator, err = stack.Build(context.Background(), dir); err != nil {
			t.Fatal(err)
		}
	}
	return builtActuator
}

func newProcRig(t *testing.T, n int, eventLog string) *procRig {
	t.Helper()
	r := &procRig{t: t, dir: t.TempDir(), bin: actuatorBinary(t)}
	r.events = eventLog
	if r.events == "" {
		r.events = filepath.Join(r.dir, "events.jsonl")
	}
	r.config = filepath.Join(r.dir, "actuator.toml")
	r.ctx, r.cancel = context.WithCancel(context.Background())
	t.Cleanup(func() {
		r.kill()
		r.cancel()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(r.dir, "actuator.log"))
			lines := strings.Split(string(b), "\n")
			if len(lines) > 60 {
				lines = lines[len(lines)-60:]
			}
			t.Logf("actuator log tail:\n%s", strings.Join(lines, "\n"))
		}
	})
	cfg := fmt.Sprintf("event_log = %q\nlog_level = \"debug\"\n[api]\nsocket = %q\n", r.events, filepath.Join(r.dir, "api.sock"))
	for i := 0; i < n; i++ {
		addr := freePort(t)
		v := &procVM{name: fmt.Sprintf("vm%d", i), qmp: qmptest.Start(t, &qmptest.Config{MaxCPUs: 16}), addr: addr}
		v.guest = fakeguest.New(v.qmp)
		r.vms = append(r.vms, v)
		cfg += fmt.Sprintf(`
[[vm]]
name = %q
qmp = %q
command_timeout = "5s"
unplug_timeout = "2s"
black_box = false
[vm.channel]
type = "tcp"
listen = %q
[vm.policy]
%s
`, v.name, v.qmp.Path(), addr, faultPolicy)
	}
	if err := os.WriteFile(r.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, v := range r.vms {
		r.startAgent(v)
	}
	return r
}

// freePort picks a TCP port below Linux's ephemeral range (32768+), so
// that the fake agents' own outgoing connections cannot take it before the
// actuator binds it.
func freePort(t *testing.T) string {
	t.Helper()
	base := 10000 + int(time.Now().UnixNano()%15000)
	for p := base; p < base+5000; p++ {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err == nil {
			ln.Close()
			if !portsTaken[p] {
				portsTaken[p] = true
				return fmt.Sprintf("127.0.0.1:%d", p)
			}
		}
	}
	t.Fatal("no free TCP port below the ephemeral range")
	return ""
}

var portsTaken = map[int]bool{}

// startAgent (re)starts a VM's agent: a new process, sequence from 1.
func (r *procRig) startAgent(v *procVM) {
	ctx, cancel := context.WithCancel(r.ctx)
	v.cancel = cancel
	go v.guest.Run(ctx, func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", v.addr)
	}, 200*time.Millisecond)
}

func (r *procRig) start() {
	r.t.Helper()
	f, err := os.OpenFile(filepath.Join(r.dir, "actuator.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		r.t.Fatal(err)
	}
	r.log = f
	r.cmd = exec.Command(r.bin, "run", "--config", r.config)
	r.cmd.Stdout, r.cmd.Stderr = f, f
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.done = make(chan error, 1)
	go func(c *exec.Cmd, done chan error) { done <- c.Wait() }(r.cmd, r.done)
}

// kill9 kills the actuator with SIGKILL: no deferred code, no flush.
func (r *procRig) kill9() {
	r.t.Helper()
	r.cmd.Process.Signal(syscall.SIGKILL)
	<-r.done
	r.log.Close()
	r.cmd = nil
}

func (r *procRig) kill() {
	if r.cmd != nil {
		r.kill9()
	}
}

func (r *procRig) waitFor(d time.Duration, what string, cond func() bool) {
	r.t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if r.cmd != nil {
			select {
			case err := <-r.done:
				r.log.Close()
				r.cmd = nil
				r.t.Fatalf("actuator exited while waiting for %s: %v", what, err)
			default:
			}
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// consistent: every CPU QEMU has plugged is online in the guest, and no
// action is left unfinished in the log.
func (r *procRig) consistent(v *procVM) bool {
	if v.qmp.Plugged() != v.guest.OnlineCount() {
		return false
	}
	all, _, err := eventlog.ReadFile(r.events, eventlog.Filter{WithStarted: true})
	return err == nil && len(eventlog.Unfinished(all, v.name)) == 0
}

// checkLog asserts the log has only whole lines, and returns its events.
func (r *procRig) checkLog() []eventlog.Event {
	r.t.Helper()
	all, skipped, err := eventlog.ReadFile(r.events, eventlog.Filter{WithStarted: true})
	if err != nil || skipped != 0 {
		r.t.Fatalf("event log: %d lines that are not events, err %v", skipped, err)
	}
	return all
}

func hasRecover(evs []eventlog.Event, vm string, kind string) bool {
	for _, ev := range evs {
		if ev.VM == vm && ev.Kind == "recover" && strings.Contains(ev.Reason, "stopped during "+kind) {
			return true
		}
	}
	return false
}

// agentSlowAt is an arm for TestKillDuringActions: the agent takes a
// second over each command, and the demand moves to demand; it returns
// once the agent has received the action's command, so the actuator is
// waiting on the guest step.
func agentSlowAt(demand float64) func(r *procRig, v *procVM) func() {
	return func(r *procRig, v *procVM) func() {
		drain(v.guest.Received())
		v.guest.SetCommandDelay(time.Second)
		v.guest.SetDemand(demand)
		<-v.guest.Received()
		return func() { v.guest.SetCommandDelay(0) }
	}
}

// TestKillDuringActions kills the actuator with SIGKILL at each step of a
// scale-up and a scale-down; a new actuator must reconcile from QEMU and
// the guest, finish or roll back, and log what it found, with every line of
// the log whole and no committed event lost.
func TestKillDuringActions(t *testing.T) {
	steps := []struct {
		name string
		kind string // the interrupted action
		// setup brings the VM to the state before the action, arm sets
		// the trap, and hit waits until the actuator is inside the step.
		setup func(r *procRig, v *procVM)
		arm   func(r *procRig, v *procVM) (release func())
	}{
		{name: "during device_add", kind: "scale_up",
			arm: func(r *procRig, v *procVM) func() {
				release := v.qmp.Stall("device_add")
				v.guest.SetDemand(2)
				r.waitFor(10*time.Second, "device_add sent", func() bool { return sent(v.qmp, "device_add") })
				return release
			}},
		{name: "between plug and online", kind: "scale_up", arm: agentSlowAt(2)},
		{name: "between offline and unplug", kind: "scale_down", setup: scaledUp, arm: agentSlowAt(0)},
		{name: "during device_del", kind: "scale_down",
			setup: scaledUp,
			arm: func(r *procRig, v *procVM) func() {
				v.qmp.SetGuestIgnoresUnplug(true)
				v.guest.SetDemand(0)
				r.waitFor(10*time.Second, "device_del sent", func() bool { return sent(v.qmp, "device_del") })
				return func() { v.qmp.SetGuestIgnoresUnplug(false) }
			}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			r := newProcRig(t, 1, "")
			v := r.vms[0]
			r.start()
			r.waitFor(10*time.Second, "agent connected", func() bool { return v.guest.Sessions() > 0 })
			if st.setup != nil {
				st.setup(r, v)
			}
			committed := len(r.checkLog())
			release := st.arm(r, v)
			r.kill9()
			release()
			time.Sleep(1500 * time.Millisecond) // the guest finishes what it was asked
			before := r.checkLog()
			if len(before) < committed {
				t.Fatalf("kill -9 lost committed events: %d before, %d after", committed, len(before))
			}
			if len(eventlog.Unfinished(before, v.name)) == 0 {
				t.Fatalf("no started line for the interrupted %s", st.kind)
			}
			v.guest.SetDemand(1) // steady: neither scale-up nor scale-down pressure
			r.start()
			r.waitFor(20*time.Second, "QEMU and the guest to agree, the action recovered", func() bool { return r.consistent(v) })
			r.waitFor(5*time.Second, "a recover line", func() bool { return hasRecover(r.checkLog(), v.name, st.kind) })
			for _, ev := range r.checkLog() {
				if ev.Kind == "recover" {
					t.Logf("%s", ev.Reason)
				}
			}
		})
	}
}

// scaledUp brings the VM to more than one vCPU first.
func scaledUp(r *procRig, v *procVM) {
	v.guest.SetDemand(2)
	r.waitFor(10*time.Second, "scale-up", func() bool { return v.qmp.Plugged() >= 2 && r.consistent(v) && hasFinal(r, "scale_up") })
	v.guest.SetDemand(1.2) // hold
}

func hasFinal(r *procRig, kind string) bool {
	evs, _, _ := eventlog.ReadFile(r.events, eventlog.Filter{})
	for _, ev := range evs {
		if ev.Kind == kind {
			return true
		}
	}
	return false
}

// drain empties a signal channel of signals from earlier commands.
func drain(ch <-chan struct{}) {
	for len(ch) > 0 {
		<-ch
	}
}

func sent(s *qmptest.Server, command string) bool {
	for _, q := range s.Requests() {
		if q.Command == command {
			return true
		}
	}
	return false
}

// TestFaultsAroundTheActuator: the agent killed and restarted, the guest
// rebooted, the QMP connection dropped, QEMU killed and back — each time the
// VM is scaled again, and a second VM never notices.
func TestFaultsAroundTheActuator(t *testing.T) {
	r := newProcRig(t, 2, "")
	v, other := r.vms[0], r.vms[1]
	r.start()
	other.guest.SetDemand(0.3)
	cycle := func(what string) {
		t.Helper()
		v.guest.SetDemand(2.5)
		r.waitFor(20*time.Second, what+": scale-up", func() bool { return v.qmp.Plugged() >= 3 && r.consistent(v) })
		v.guest.SetDemand(0.05)
		r.waitFor(20*time.Second, what+": scale-down", func() bool { return v.qmp.Plugged() == 1 && r.consistent(v) })
	}
	cycle("start")

	v.cancel() // agent killed
	time.Sleep(500 * time.Millisecond)
	r.startAgent(v)
	cycle("agent restarted")

	v.guest.SetDemand(2.5)
	r.waitFor(20*time.Second, "scale-up before the reboot", func() bool { return v.qmp.Plugged() >= 3 && r.consistent(v) })
	v.cancel() // guest rebooted: the kernel onlines every present CPU at boot
	present, _ := v.guest.Sets()
	v.guest.SetOnline(present)
	r.startAgent(v)
	v.guest.SetDemand(0.05)
	r.waitFor(20*time.Second, "guest rebooted: scale-down", func() bool { return v.qmp.Plugged() == 1 && r.consistent(v) })

	v.qmp.CloseConnections() // QMP socket closed under the actuator
	cycle("QMP connection dropped")

	path := v.qmp.Path()
	v.qmp.Crash() // QEMU killed
	time.Sleep(time.Second)
	srv, err := qmptest.NewServer(path, &qmptest.Config{MaxCPUs: 16})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	v.qmp = srv
	v.guest.SetQMP(srv)
	v.guest.SetOnline(proto.NewCPUSet(0))
	cycle("QEMU restarted")

	if n := other.qmp.Plugged(); n != 1 {
		t.Fatalf("the other VM was scaled to %d by faults on its neighbour", n)
	}
	r.checkLog()
}

// TestFullDiskUnderEventLog: with the event log's file system full, the
// actuator says so clearly, keeps scaling, and counts the loss.
func TestFullDiskUnderEventLog(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root to mount a tiny tmpfs (CI runs as root)")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	// Fill it but for a few hundred bytes.
	filler, _ := os.Create(filepath.Join(mnt, "filler"))
	filler.Write(make([]byte, 60<<10))
	filler.Close()
	r := newProcRig(t, 1, filepath.Join(mnt, "events.jsonl"))
	v := r.vms[0]
	r.start()
	v.guest.SetDemand(2.5)
	r.waitFor(20*time.Second, "scale-up with a full disk", func() bool { return v.qmp.Plugged() >= 3 && v.guest.OnlineCount() >= 3 })
	v.guest.SetDemand(0.05)
	r.waitFor(20*time.Second, "scale-down with a full disk", func() bool { return v.qmp.Plugged() == 1 })
	b, _ := os.ReadFile(filepath.Join(r.dir, "actuator.log"))
	if !strings.Contains(string(b), "scaling event NOT recorded") || !strings.Contains(string(b), "no space left on device") {
		t.Fatalf("the actuator did not say the event log is full:\n%s", b)
	}
	r.checkLog() // what did get written is whole
}
