package testvm_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/integration/testvm"
)

// bootGuest boots a 1-of-4 vCPU guest with the vsock modules in its image.
// Anything missing on the host fails the test: CI installs everything, so a
// skip there would hide a broken setup. Only -short skips.
func bootGuest(t *testing.T, ctx context.Context) *testvm.VM {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a QEMU guest; skipped under -short")
	}
	t0 := time.Now()
	k, err := testvm.EnsureKernel(ctx, "")
	if err != nil {
		t.Fatalf("guest kernel: %v", err)
	}
	t.Logf("kernel %s ready in %s", k.Version, time.Since(t0).Round(time.Millisecond))

	t0 = time.Now()
	img, err := testvm.BuildInitramfs(ctx, testvm.InitramfsOptions{
		Kernel:  k,
		Modules: []string{"vsock_loopback"},
		Files: map[string]testvm.File{
			"/etc/testvm/start.sh": {Data: []byte("echo started >/tmp/start.ok\n")},
		},
	})
	if err != nil {
		t.Fatalf("initramfs: %v", err)
	}
	t.Logf("initramfs %s ready in %s", img, time.Since(t0).Round(time.Millisecond))

	t0 = time.Now()
	vm, err := testvm.Start(ctx, testvm.Config{
		Name:      "tvm-hotplug",
		Kernel:    k,
		Initramfs: img,
		CPUs:      1,
		MaxCPUs:   4,
	})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		if err := vm.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	t.Logf("qemu-system-x86_64 %s", strings.Join(vm.Args(), " "))
	t.Logf("console log: %s (kept after the test with HOTPLUG_TESTVM_KEEP=1)", vm.ConsoleLog())
	if err := vm.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("boot-to-ready: %s", time.Since(t0).Round(time.Millisecond))
	return vm
}

// run runs cmd in the guest and fails the test unless it exits 0.
func run(t *testing.T, ctx context.Context, vm *testvm.VM, cmd string) string {
	t.Helper()
	out, st, err := vm.Run(ctx, cmd)
	if err != nil {
		t.Fatal(err)
	}
	if st != 0 {
		t.Fatalf("guest: %q exited %d: %s\nconsole:\n%s", cmd, st, out, vm.ConsoleTail(40))
	}
	return out
}

// poll runs cmd until it exits 0 or the deadline passes.
func poll(ctx context.Context, vm *testvm.VM, cmd string, within time.Duration) (time.Duration, error) {
	t0 := time.Now()
	for time.Since(t0) < within {
		_, st, err := vm.Run(ctx, cmd)
		if err != nil {
			return 0, err
		}
		if st == 0 {
			return time.Since(t0), nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return 0, fmt.Errorf("%q still failing after %s", cmd, within)
}

func TestGuest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	vm := bootGuest(t, ctx)

	t.Run("BootCPUOnly", func(t *testing.T) {
		if got := strings.TrimSpace(run(t, ctx, vm, "cat /sys/devices/system/cpu/online")); got != "0" {
			t.Errorf("online CPUs = %q, want 0", got)
		}
	})

	t.Run("VirtioPorts", func(t *testing.T) {
		got := strings.Fields(run(t, ctx, vm, "cat /sys/class/virtio-ports/*/name"))
		sort.Strings(got)
		want := []string{testvm.AgentPortName, testvm.ControlPortName}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("virtio ports = %v, want %v", got, want)
		}
	})

	t.Run("StartScript", func(t *testing.T) {
		if _, err := poll(ctx, vm, "test -f /tmp/start.ok", 10*time.Second); err != nil {
			t.Fatalf("start.sh did not run: %v\n%s", err, vm.ConsoleTail(40))
		}
	})

	t.Run("RunExactOutputAndStatus", func(t *testing.T) {
		cases := []struct {
			cmd    string
			out    string
			status int
		}{
			{"true", "", 0},
			{"printf 'a\\nb'; exit 3", "a\nb", 3},
			{"echo oops >&2", "oops\n", 0},
			{"printf '\\n\\n'", "\n\n", 0},
			{"cat <<'EOF'\nquotes ' \" $HOME `x`\nEOF", "quotes ' \" $HOME `x`\n", 0},
			{"read x; echo \"stdin=[$x]\"", "stdin=[]\n", 0},
		}
		for _, c := range cases {
			out, st, err := vm.Run(ctx, c.cmd)
			if err != nil {
				t.Fatal(err)
			}
			if out != c.out || st != c.status {
				t.Errorf("Run(%q) = %q, %d; want %q, %d", c.cmd, out, st, c.out, c.status)
			}
		}
	})

	t.Run("ConcurrentRuns", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for i := range 8 {
			wg.Go(func() {
				out, _, err := vm.Run(ctx, fmt.Sprintf("echo %d", i))
				if err == nil && out != fmt.Sprintf("%d\n", i) {
					err = fmt.Errorf("run %d got %q", i, out)
				}
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
	})

	t.Run("VsockModules", func(t *testing.T) {
		run(t, ctx, vm, "modprobe vsock_loopback")
		run(t, ctx, vm, "test -d /sys/module/vsock && test -d /sys/module/vsock_loopback")
	})

	t.Run("SpawnAndKill", func(t *testing.T) {
		job, err := vm.Spawn(ctx, "while :; do :; done")
		if err != nil {
			t.Fatal(err)
		}
		run(t, ctx, vm, fmt.Sprintf("test -d /proc/%d", job.PID))
		if err := vm.Kill(ctx, job); err != nil {
			t.Fatal(err)
		}
		// Gone, or a zombie until init reaps it: either way not running.
		gone := fmt.Sprintf("! test -d /proc/%[1]d || grep -q '^State:.*Z' /proc/%[1]d/status", job.PID)
		if _, err := poll(ctx, vm, gone, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	})

	// Last: it changes the guest's CPUs.
	t.Run("HotplugCPU", func(t *testing.T) {
		q, err := dialQMP(ctx, vm.TestQMPSocket())
		if err != nil {
			t.Fatal(err)
		}
		defer q.Close()

		var slots []struct {
			Type    string         `json:"type"`
			Props   map[string]any `json:"props"`
			QOMPath string         `json:"qom-path"`
		}
		if err := q.Exec("query-hotpluggable-cpus", nil, &slots); err != nil {
			t.Fatal(err)
		}
		free := -1
		for i, s := range slots {
			if s.QOMPath == "" && (free < 0 || slotKey(s.Props) < slotKey(slots[free].Props)) {
				free = i
			}
		}
		if free < 0 {
			t.Fatalf("no free CPU slot in %+v", slots)
		}
		args := map[string]any{"driver": slots[free].Type, "id": "cpu1"}
		for k, v := range slots[free].Props {
			if k != "node-id" {
				args[k] = v
			}
		}
		t0 := time.Now()
		if err := q.Exec("device_add", args, nil); err != nil {
			t.Fatal(err)
		}
		added := time.Since(t0)
		if _, err := poll(ctx, vm, "test -d /sys/devices/system/cpu/cpu1", 30*time.Second); err != nil {
			t.Fatalf("guest never saw cpu1: %v\n%s", err, vm.ConsoleTail(40))
		}
		t.Logf("hot-plug to visible: %s (device_add returned after %s)", time.Since(t0).Round(time.Millisecond), added.Round(time.Millisecond))

		if got := strings.TrimSpace(run(t, ctx, vm, "cat /sys/devices/system/cpu/online")); got != "0" {
			t.Errorf("before onlining, online = %q, want 0 (no udev rule onlines CPUs)", got)
		}
		t0 = time.Now()
		run(t, ctx, vm, "echo 1 >/sys/devices/system/cpu/cpu1/online")
		t.Logf("online cpu1: %s", time.Since(t0).Round(time.Millisecond))
		if got := strings.TrimSpace(run(t, ctx, vm, "cat /sys/devices/system/cpu/online")); got != "0-1" {
			t.Errorf("online CPUs = %q, want 0-1", got)
		}

		t0 = time.Now()
		if err := q.Exec("device_del", map[string]any{"id": "cpu1"}, nil); err != nil {
			t.Fatal(err)
		}
		if err := q.WaitEvent(ctx, "DEVICE_DELETED", 30*time.Second); err != nil {
			t.Fatalf("unplug: %v\n%s", err, vm.ConsoleTail(40))
		}
		t.Logf("device_del to DEVICE_DELETED: %s", time.Since(t0).Round(time.Millisecond))
		if got := strings.TrimSpace(run(t, ctx, vm, "cat /sys/devices/system/cpu/online")); got != "0" {
			t.Errorf("after unplug, online CPUs = %q, want 0", got)
		}
	})

	t.Run("StopDuringRunIsIdempotent", func(t *testing.T) {
		// A command that never finishes must not keep Stop waiting.
		hung := make(chan error, 1)
		go func() {
			_, _, err := vm.Run(ctx, "sleep 600")
			hung <- err
		}()
		time.Sleep(300 * time.Millisecond)
		t0 := time.Now()
		if err := vm.Stop(); err != nil {
			t.Fatal(err)
		}
		t.Logf("stop: %s", time.Since(t0).Round(time.Millisecond))
		select {
		case err := <-hung:
			if err == nil {
				t.Error("Run of a command killed with the VM reported success")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Run still blocked 5s after Stop")
		}
		if err := vm.Stop(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-vm.Exited():
		default:
			t.Fatal("QEMU still running after Stop")
		}
		if _, _, err := vm.Run(ctx, "true"); err == nil {
			t.Error("Run after Stop succeeded")
		}
	})
}

// A guest that cannot boot must fail WaitReady quickly, naming the cause and
// showing the console, not time out with a socket error.
func TestBootFailureIsDiagnosable(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a QEMU guest; skipped under -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	k, err := testvm.EnsureKernel(ctx, "")
	if err != nil {
		t.Fatalf("guest kernel: %v", err)
	}
	img, err := testvm.BuildInitramfs(ctx, testvm.InitramfsOptions{Kernel: k})
	if err != nil {
		t.Fatalf("initramfs: %v", err)
	}
	vm, err := testvm.Start(ctx, testvm.Config{Name: "tvm-broken", Kernel: k, Initramfs: img, KernelArgs: "rdinit=/no-such-init"})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	defer vm.Stop()
	t0 := time.Now()
	err = vm.WaitReady(ctx)
	if err == nil {
		t.Fatal("WaitReady succeeded without an init")
	}
	t.Logf("failed after %s with:\n%.300s…", time.Since(t0).Round(time.Millisecond), err)
	for _, want := range []string{"tvm-broken", `console shows "Kernel panic`, "--- console, last 40 lines", "Unable to mount root fs"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if ctx.Err() != nil {
		t.Error("WaitReady waited for the context instead of noticing the panic")
	}
}

// slotKey orders CPU slots by topology so the test plugs the lowest one.
func slotKey(props map[string]any) string {
	return fmt.Sprintf("%06v/%06v/%06v", props["socket-id"], props["core-id"], props["thread-id"])
}

// qmp is the few lines of raw QMP this test needs. The real client lives in
// host/qmp; the harness test must not depend on the code it helps test.
type qmp struct {
	conn   net.Conn
	r      *bufio.Reader
	events []string
}

func dialQMP(ctx context.Context, path string) (*qmp, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	q := &qmp{conn: c, r: bufio.NewReader(c)}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := q.r.ReadBytes('\n'); err != nil {
		c.Close()
		return nil, fmt.Errorf("qmp greeting: %w", err)
	}
	if err := q.Exec("qmp_capabilities", nil, nil); err != nil {
		c.Close()
		return nil, err
	}
	return q, nil
}

func (q *qmp) Close() error { return q.conn.Close() }

type qmpMsg struct {
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	Event string `json:"event"`
}

func (q *qmp) read(deadline time.Time) (qmpMsg, error) {
	q.conn.SetDeadline(deadline)
	line, err := q.r.ReadBytes('\n')
	if err != nil {
		return qmpMsg{}, err
	}
	var m qmpMsg
	if err := json.Unmarshal(line, &m); err != nil {
		return qmpMsg{}, fmt.Errorf("qmp: %w: %s", err, line)
	}
	return m, nil
}

// Exec runs one command; events that arrive meanwhile are kept for WaitEvent.
func (q *qmp) Exec(cmd string, args any, ret any) error {
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, _ := json.Marshal(req)
	q.conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		return err
	}
	for {
		m, err := q.read(time.Now().Add(10 * time.Second))
		if err != nil {
			return fmt.Errorf("qmp %s: %w", cmd, err)
		}
		switch {
		case m.Event != "":
			q.events = append(q.events, m.Event)
		case m.Error != nil:
			return fmt.Errorf("qmp %s: %s: %s", cmd, m.Error.Class, m.Error.Desc)
		default:
			if ret != nil {
				return json.Unmarshal(m.Return, ret)
			}
			return nil
		}
	}
}

func (q *qmp) WaitEvent(ctx context.Context, name string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		for i, e := range q.events {
			if e == name {
				q.events = append(q.events[:i], q.events[i+1:]...)
				return nil
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		m, err := q.read(deadline)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return fmt.Errorf("no %s event within %s (saw %v)", name, within, q.events)
			}
			return err
		}
		if m.Event != "" {
			q.events = append(q.events, m.Event)
		}
	}
}
