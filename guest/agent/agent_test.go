package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotplugheaven/hotplug/guest/collector"
	"github.com/hotplugheaven/hotplug/guest/transport"
	"github.com/hotplugheaven/hotplug/proto"
)

// fixture copies the collector's 4-CPU guest tree and adds per-CPU online
// files (cpu0 without one, as on most x86 kernels).
func fixture(t testing.TB) collector.Options {
	t.Helper()
	root := t.TempDir()
	if err := os.CopyFS(root, os.DirFS("../collector/testdata/guest4")); err != nil {
		t.Fatal(err)
	}
	cpuDir := filepath.Join(root, "sys/devices/system/cpu")
	for i := 0; i < 4; i++ {
		os.MkdirAll(filepath.Join(cpuDir, "cpu"+itoa(i)), 0o755)
		if i > 0 {
			os.WriteFile(filepath.Join(cpuDir, "cpu"+itoa(i), "online"), []byte("1\n"), 0o644)
		}
	}
	return collector.Options{ProcRoot: filepath.Join(root, "proc"), SysRoot: filepath.Join(root, "sys"), EtcRoot: filepath.Join(root, "etc")}
}

func itoa(i int) string { return string(rune('0' + i)) }

// fakeActuator accepts one agent at a time over TCP and lets a test drive it.
type fakeActuator struct {
	ln net.Listener
}

type conn struct {
	c net.Conn
	r *proto.Reader
	w *proto.Writer
}

func (f *fakeActuator) accept(t *testing.T, welcome *proto.Welcome) (*conn, *proto.Hello) {
	t.Helper()
	f.ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	c, err := f.ln.Accept()
	if err != nil {
		t.Fatalf("agent did not connect: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	cc := &conn{c: c, r: proto.NewReader(c, 0), w: proto.NewWriter(c)}
	m := cc.next(t)
	hello, ok := m.(*proto.Hello)
	if !ok {
		t.Fatalf("first message %v, want Hello", m.Type())
	}
	if err := cc.w.Write(welcome); err != nil {
		t.Fatal(err)
	}
	return cc, hello
}

func (c *conn) next(t *testing.T) proto.Message {
	t.Helper()
	c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	m, err := c.r.Next()
	if err != nil {
		t.Fatalf("reading from agent: %v", err)
	}
	return m
}

// ack sends a command and returns its Ack, skipping reports.
func (c *conn) ack(t *testing.T, cmd *proto.Command) *proto.Ack {
	t.Helper()
	if err := c.w.Write(cmd); err != nil {
		t.Fatal(err)
	}
	for {
		if a, ok := c.next(t).(*proto.Ack); ok {
			if a.ID != cmd.ID {
				t.Fatalf("ack for %d, want %d", a.ID, cmd.ID)
			}
			return a
		}
	}
}

func startAgent(t *testing.T, opts collector.Options, cfg Config) (*fakeActuator, *Agent) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	cfg.Collector = opts
	if cfg.Interval == 0 {
		cfg.Interval = 100 * time.Millisecond
	}
	a, err := New(cfg, &transport.TCP{Addr: ln.Addr().String()}, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("agent did not stop within 5 s of cancel")
		}
	})
	return &fakeActuator{ln: ln}, a
}

func TestHelloReportsAndCommands(t *testing.T) {
	opts := fixture(t)
	act, _ := startAgent(t, opts, Config{Version: "test", OnlineTimeout: time.Second})
	c, hello := act.accept(t, &proto.Welcome{Version: 1, VM: "vm1", IntervalNanos: int64(100 * time.Millisecond)})
	if hello.AgentVersion != "test" || hello.Online.String() != "0-3" || hello.Possible.String() != "0-7" ||
		hello.MachineID == "" || len(hello.Topology) != 4 {
		t.Fatalf("hello = %+v", hello)
	}

	// Reports arrive with increasing sequence numbers.
	var last uint64
	for i := 0; i < 3; {
		if r, ok := c.next(t).(*proto.Report); ok {
			if r.Seq <= last {
				t.Fatalf("seq %d after %d", r.Seq, last)
			}
			last = r.Seq
			i++
		}
	}

	cpu3 := filepath.Join(opts.SysRoot, "devices/system/cpu/cpu3/online")
	a := c.ack(t, &proto.Command{ID: 1, Offline: proto.NewCPUSet(3)})
	if !a.OK || readFile(t, cpu3) != "0" {
		t.Fatalf("offline cpu3: ack %+v, file %q", a, readFile(t, cpu3))
	}
	if len(a.Topology) != 1 || a.Topology[0].CPU != 3 || a.Topology[0].APICID != 5 {
		t.Fatalf("offline ack must carry cpu3's APIC id (5): %+v", a.Topology)
	}

	a = c.ack(t, &proto.Command{ID: 2, Offline: proto.NewCPUSet(0)})
	if a.OK || len(a.Failed) != 1 || a.Failed[0].CPU != 0 || !strings.Contains(a.Failed[0].Error, "cannot be taken offline") {
		t.Fatalf("offline cpu0 must fail per CPU: %+v", a)
	}

	a = c.ack(t, &proto.Command{ID: 3, Online: proto.NewCPUSet(3)})
	if !a.OK || readFile(t, cpu3) != "1" {
		t.Fatalf("online cpu3: %+v", a)
	}

	// A CPU that never appears times out with a per-CPU error, not a hang.
	start := time.Now()
	a = c.ack(t, &proto.Command{ID: 4, Online: proto.NewCPUSet(6)})
	if a.OK || len(a.Failed) != 1 || a.Failed[0].CPU != 6 {
		t.Fatalf("online of absent cpu6: %+v", a)
	}
	t.Logf("absent CPU answered after %v", time.Since(start).Round(time.Millisecond))
}

func TestReconnectsAfterDrop(t *testing.T) {
	opts := fixture(t)
	act, _ := startAgent(t, opts, Config{})
	c, _ := act.accept(t, &proto.Welcome{Version: 1})
	c.next(t)
	c.c.Close()
	c2, hello := act.accept(t, &proto.Welcome{Version: 1})
	if hello == nil {
		t.Fatal("no Hello on reconnect")
	}
	if _, ok := c2.next(t).(*proto.Report); !ok {
		t.Fatal("no report after reconnect")
	}
}

func TestRefusedWelcome(t *testing.T) {
	opts := fixture(t)
	act, a := startAgent(t, opts, Config{})
	act.accept(t, &proto.Welcome{Error: "no common protocol version"})
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(a.Status().LastError, "refused") {
		if time.Now().After(deadline) {
			t.Fatalf("status after refusal: %+v", a.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAutoOnlineHotAdded(t *testing.T) {
	opts := fixture(t)
	cpuDir := filepath.Join(opts.SysRoot, "devices/system/cpu")
	// cpu2 is present but offline (the actuator took it offline): it must
	// stay offline. Only CPUs that newly appear are onlined.
	os.WriteFile(filepath.Join(cpuDir, "cpu2/online"), []byte("0\n"), 0o644)
	startAgent(t, opts, Config{AutoOnline: true})
	time.Sleep(700 * time.Millisecond)
	os.MkdirAll(filepath.Join(cpuDir, "cpu4"), 0o755)
	os.WriteFile(filepath.Join(cpuDir, "cpu4/online"), []byte("0\n"), 0o644)
	os.WriteFile(filepath.Join(cpuDir, "present"), []byte("0-4\n"), 0o644)
	deadline := time.Now().Add(5 * time.Second)
	for readFile(t, filepath.Join(cpuDir, "cpu4/online")) != "1" {
		if time.Now().After(deadline) {
			t.Fatal("hot-added cpu4 was not onlined")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := readFile(t, filepath.Join(cpuDir, "cpu2/online")); got != "0" {
		t.Fatalf("auto-online touched cpu2, which was offline on purpose: %q", got)
	}
}

func TestQueueBoundedAndDropsStale(t *testing.T) {
	q := newQueue(3)
	now := int64(100e9)
	q.now = func() int64 { return now }
	for i := 1; i <= 5; i++ {
		q.push(&proto.Report{Seq: uint64(i), MonotonicNanos: now})
	}
	if q.len() != 3 {
		t.Fatalf("len %d", q.len())
	}
	ctx := context.Background()
	r, dropped, _ := q.pop(ctx, time.Second)
	if r.Seq != 3 || dropped != 2 {
		t.Fatalf("pop = seq %d dropped %d, want 3 and 2", r.Seq, dropped)
	}
	now += int64(5 * time.Second) // the rest are stale now
	q.push(&proto.Report{Seq: 6, MonotonicNanos: now})
	r, dropped, _ = q.pop(ctx, time.Second)
	if r.Seq != 6 || dropped != 2 {
		t.Fatalf("pop = seq %d dropped %d, want 6 and 2 (4 and 5 stale)", r.Seq, dropped)
	}
	q.unpop(r)
	r, _, _ = q.pop(ctx, time.Second)
	if r.Seq != 6 {
		t.Fatalf("unpop lost the report")
	}
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, _, ok := q.pop(cctx, time.Second); ok {
		t.Fatal("pop on empty queue returned")
	}
}

func TestBadConfig(t *testing.T) {
	if _, err := New(Config{Interval: time.Millisecond}, &transport.TCP{}, nil); err == nil {
		t.Fatal("1ms interval accepted")
	}
	if _, err := New(Config{Collector: collector.Options{ProcRoot: "/nonexistent"}}, &transport.TCP{}, nil); err == nil {
		t.Fatal("missing proc root accepted")
	}
}

func readFile(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

type fakeExtra struct{ fail bool }

func (fakeExtra) Name() string { return "fake" }
func (fakeExtra) Path() string { return "nowhere" }
func (fakeExtra) Read() error  { return nil }
func (f fakeExtra) Fill(r *proto.Report) error {
	if f.fail {
		return errors.New("broken")
	}
	r.RunQueue = &proto.RunQueue{Source: proto.RunQSourcePSI, P50Nanos: 1, P95Nanos: 2, P99Nanos: 3}
	return nil
}

func TestExtrasFillReports(t *testing.T) {
	opts := fixture(t)
	opts.Extra = []collector.Source{fakeExtra{}, fakeExtra{fail: true}}
	act, _ := startAgent(t, opts, Config{})
	c, _ := act.accept(t, &proto.Welcome{Version: 1})
	for {
		if r, ok := c.next(t).(*proto.Report); ok {
			if r.RunQueue == nil || r.RunQueue.P99Nanos != 3 {
				t.Fatalf("extra did not fill the report: %+v", r.RunQueue)
			}
			return
		}
	}
}

// TestWantOnlineOnlinesTheHotAddedCPU: the actuator asks for one more CPU
// online without naming it; the agent waits for the hot-added CPU to
// appear — here as cpu6, not the lowest free number — and onlines it.
func TestWantOnlineOnlinesTheHotAddedCPU(t *testing.T) {
	opts := fixture(t)
	act, _ := startAgent(t, opts, Config{OnlineTimeout: 5 * time.Second})
	c, _ := act.accept(t, &proto.Welcome{Version: 1})
	cpuDir := filepath.Join(opts.SysRoot, "devices/system/cpu")
	// The kernel: once cpu6/online says 1, the online list says so too.
	go func() {
		time.Sleep(300 * time.Millisecond) // the ACPI handler is slow
		os.MkdirAll(filepath.Join(cpuDir, "cpu6"), 0o755)
		os.WriteFile(filepath.Join(cpuDir, "cpu6/online"), []byte("0\n"), 0o644)
		os.WriteFile(filepath.Join(cpuDir, "present"), []byte("0-3,6\n"), 0o644)
		for i := 0; i < 200; i++ {
			if b, _ := os.ReadFile(filepath.Join(cpuDir, "cpu6/online")); strings.TrimSpace(string(b)) == "1" {
				os.WriteFile(filepath.Join(cpuDir, "online"), []byte("0-3,6\n"), 0o644)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	a := c.ack(t, &proto.Command{ID: 7, WantOnline: 5})
	if !a.OK || a.Online.String() != "0-3,6" {
		t.Fatalf("ack %+v", a)
	}
	// Nothing more appears: the agent says so instead of hanging.
	a = c.ack(t, &proto.Command{ID: 8, WantOnline: 6})
	if a.OK || len(a.Failed) == 0 || !strings.Contains(a.Failed[0].Error, "no hot-added CPU appeared") {
		t.Fatalf("ack %+v", a)
	}
}
