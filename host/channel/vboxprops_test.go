package channel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/guest/transport"
	"github.com/hotplugheaven/hotplug/host/hypervisor/vboxfake"
	"github.com/hotplugheaven/hotplug/internal/propbridge"
	"github.com/hotplugheaven/hotplug/proto"
)

// These tests run both ends of the guest-property bridge — this channel and
// guest/transport's VBoxProps dialer — against vboxfake, the fake
// VBoxManage and VBoxControl (VirtualBox cannot run here), carrying real
// proto frames.

type vboxBridgeEnv struct {
	fake    *vboxfake.Fake
	ch      *VBoxProps
	dialer  *transport.VBoxProps
	control string
}

func startBridge(t *testing.T) *vboxBridgeEnv {
	t.Helper()
	dir := t.TempDir()
	manage, control, err := vboxfake.Build(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	f, err := vboxfake.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.AddMachine(vboxfake.Machine{Name: "web1", CPUs: 2}); err != nil {
		t.Fatal(err)
	}
	e := &vboxBridgeEnv{fake: f, control: control,
		ch:     &VBoxProps{VM: "web1", VBoxManage: manage, Env: f.Env("web1"), PollWait: 300 * time.Millisecond},
		dialer: &transport.VBoxProps{VBoxControl: control, Env: f.Env("web1"), PollWait: 300 * time.Millisecond, DialTimeout: 10 * time.Second},
	}
	t.Cleanup(func() { e.ch.Close() })
	return e
}

func bridgeCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// connect accepts on the host while the guest dials.
func (e *vboxBridgeEnv) connect(t *testing.T) (host net.Conn, guest io.ReadWriteCloser) {
	t.Helper()
	ctx := bridgeCtx(t)
	type res struct {
		c   net.Conn
		err error
	}
	acc := make(chan res, 1)
	go func() {
		c, err := e.ch.Accept(ctx)
		acc <- res{c, err}
	}()
	guest, err := e.dialer.Dial(ctx)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	r := <-acc
	if r.err != nil {
		t.Fatalf("Accept: %v", r.err)
	}
	t.Cleanup(func() { guest.Close(); r.c.Close() })
	return r.c, guest
}

func report(seq uint64, cpus int) *proto.Report {
	r := &proto.Report{Seq: seq, MonotonicNanos: int64(seq) * 1e9, IntervalNanos: 1e9}
	for i := 0; i < cpus; i++ {
		r.CPUs = append(r.CPUs, proto.CPUStat{CPU: uint16(i), Busy: 0.5, Idle: 0.5})
		r.Online.Add(i)
	}
	r.Present = r.Online
	return r
}

// A session carries proto frames both ways, in order and intact, frames
// of many chunks included.
func TestVBoxPropsRoundTrip(t *testing.T) {
	e := startBridge(t)
	host, guest := e.connect(t)
	gw, gr := proto.NewWriter(guest), proto.NewReader(guest, 0)
	hw, hr := proto.NewWriter(host), proto.NewReader(host, 0)

	start := time.Now()
	hello := &proto.Hello{MinVersion: proto.MinVersion, MaxVersion: proto.MaxVersion, AgentVersion: "test", Hostname: "g", IntervalNanos: 1e9}
	hello.Possible.Add(0)
	hello.Present.Add(0)
	hello.Online.Add(0)
	if err := gw.Write(hello); err != nil {
		t.Fatal(err)
	}
	m, err := hr.Next()
	if err != nil {
		t.Fatal(err)
	}
	if h, ok := m.(*proto.Hello); !ok || h.AgentVersion != "test" {
		t.Fatalf("host got %#v", m)
	}
	if err := hw.Write(&proto.Welcome{Version: proto.MaxVersion, VM: "web1", IntervalNanos: 1e9}); err != nil {
		t.Fatal(err)
	}
	if m, err := gr.Next(); err != nil || m.(*proto.Welcome).VM != "web1" {
		t.Fatalf("guest got %#v, %v", m, err)
	}
	t.Logf("Hello/Welcome round trip over the fake: %v", time.Since(start).Round(time.Millisecond))

	// Reports from 2 to 64 CPUs (the largest is many chunks, more than a
	// window) while commands go the other way.
	errc := make(chan error, 1)
	go func() {
		for i := uint64(1); i <= 6; i++ {
			if err := gw.Write(report(i, int(2<<i))); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	for i := uint64(1); i <= 3; i++ {
		if err := hw.Write(&proto.Command{ID: i, Online: proto.NewCPUSet(int(i))}); err != nil {
			t.Fatal(err)
		}
	}
	for i := uint64(1); i <= 6; i++ {
		m, err := hr.Next()
		if err != nil {
			t.Fatalf("report %d: %v", i, err)
		}
		r := m.(*proto.Report)
		if r.Seq != i || len(r.CPUs) != int(2<<i) {
			t.Fatalf("report %d: seq %d with %d CPUs", i, r.Seq, len(r.CPUs))
		}
	}
	for i := uint64(1); i <= 3; i++ {
		m, err := gr.Next()
		if err != nil || m.(*proto.Command).ID != i {
			t.Fatalf("command %d: %#v %v", i, m, err)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	big, _ := proto.Marshal(report(6, 128))
	t.Logf("a 128-CPU report is %d bytes: %d chunks of %d", len(big), (len(big)+737)/738, 738)
	// Only the window's 8 slots per direction and the session keys exist.
	m2, _ := e.fake.Machine("web1")
	if n := len(m2.Props); n > 2*propbridge.Window+4 {
		t.Errorf("%d properties in use", n)
	}
	for name, p := range m2.Props {
		if len(p.Value) > propbridge.MaxValue || !strings.HasPrefix(name, vboxPropPrefix) || p.Flags != "TRANSIENT" {
			t.Errorf("property %s = %d bytes, flags %q", name, len(p.Value), p.Flags)
		}
	}
}

// Either end closing shows as EOF at the other.
func TestVBoxPropsClose(t *testing.T) {
	e := startBridge(t)
	host, guest := e.connect(t)
	guest.Close()
	host.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := host.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("host Read after the guest closed: %v, want EOF", err)
	}
	host.Close()

	host2, guest2 := e.connect(t)
	host2.Close()
	done := make(chan error, 1)
	go func() {
		_, err := guest2.Read(make([]byte, 1))
		done <- err
	}()
	select {
	case err := <-done:
		if err != io.EOF {
			t.Errorf("guest Read after the host closed: %v, want EOF", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("guest Read still blocked 5 s after the host closed")
	}
	if _, err := guest2.Write([]byte("x")); err == nil {
		t.Error("guest Write after the host closed succeeded")
	}
}

// A guest that stops reading blocks the host's writes, which then meet
// their deadline instead of hanging.
func TestVBoxPropsWriteDeadline(t *testing.T) {
	e := startBridge(t)
	host, _ := e.connect(t)
	host.SetWriteDeadline(time.Now().Add(2 * time.Second))
	payload := bytes.Repeat([]byte("x"), 4096)
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		_, err = host.Write(payload)
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("writing to a guest that reads nothing: %v", err)
	}
}

// A chunk seen again (a wait woke us twice, a guest replays a property) is
// not delivered twice.
func TestVBoxPropsNothingTwice(t *testing.T) {
	e := startBridge(t)
	host, guest := e.connect(t)
	if _, err := guest.Write([]byte("once")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	host.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := host.Read(buf)
	if err != nil || string(buf[:n]) != "once" {
		t.Fatalf("first read %q %v", buf[:n], err)
	}
	m, _ := e.fake.Machine("web1")
	replay := m.Props[vboxPropPrefix+"g/d0"].Value
	runFake(t, e, "web1", e.control, "--nologo", "guestproperty", "set", vboxPropPrefix+"g/d0", replay)
	host.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
	if n, err := host.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("replayed chunk delivered again: %q %v", buf[:n], err)
	}
}

// A guest that writes a chunk that cannot be in its slot, or does not
// decode, loses the session.
func TestVBoxPropsBadChunks(t *testing.T) {
	for _, tc := range []struct{ name, value string }{
		{"future sequence", "%s.9.eA=="},
		{"not base64", "%s.1.!!!"},
		{"no sequence", "%s.x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startBridge(t)
			host, guest := e.connect(t)
			sess := guest.(interface{ Session() string }).Session()
			runFake(t, e, "web1", e.control, "--nologo", "guestproperty", "set", vboxPropPrefix+"g/d0", fmt.Sprintf(tc.value, sess))
			host.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := host.Read(make([]byte, 1)); err == nil || err == io.EOF || !strings.Contains(err.Error(), "session "+sess) {
				t.Fatalf("host Read: %v, want the protocol error", err)
			}
			// The guest is told: its next read ends.
			if _, err := guest.Read(make([]byte, 1)); err != io.EOF {
				t.Errorf("guest Read after the host dropped the session: %v", err)
			}
		})
	}
}

// A session an earlier actuator accepted cannot be resumed: it is refused
// and the agent's next session accepted.
func TestVBoxPropsRefusesEarlierSession(t *testing.T) {
	e := startBridge(t)
	stale := "0123456789abcdef"
	if err := e.fake.UpdateMachine("web1", func(m *vboxfake.Machine) {
		m.Props = map[string]vboxfake.Prop{
			vboxPropPrefix + "g/sess": {Value: stale, Timestamp: 1}, vboxPropPrefix + "h/sess": {Value: stale, Timestamp: 2},
		}
	}); err != nil {
		t.Fatal(err)
	}
	host, guest := e.connect(t)
	m, _ := e.fake.Machine("web1")
	if got := m.Props[vboxPropPrefix+"h/sess"].Value; got == stale || got == "-"+stale {
		t.Errorf("h/sess = %q after the new session", got)
	}
	if guest.(interface{ Session() string }).Session() == stale {
		t.Error("the guest reused the stale session")
	}
	var refused bool
	for _, c := range m.Changes {
		refused = refused || (c.Name == vboxPropPrefix+"h/sess" && c.Value == "-"+stale)
	}
	if !refused {
		t.Error("the stale session was not refused")
	}
	go guest.Write([]byte("hi"))
	buf := make([]byte, 2)
	host.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(host, buf); err != nil || string(buf) != "hi" {
		t.Errorf("read %q %v", buf, err)
	}
}

func TestVBoxPropsAcceptContext(t *testing.T) {
	e := startBridge(t)
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	if _, err := e.ch.Accept(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Accept with no guest: %v", err)
	}
	e.ch.Close()
	if _, err := e.ch.Accept(context.Background()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v", err)
	}
}

func runFake(t *testing.T, e *vboxBridgeEnv, vm, prog string, args ...string) {
	t.Helper()
	cmd := exec.Command(prog, args...)
	cmd.Env = append(os.Environ(), e.fake.Env(vm)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", prog, args, err, out)
	}
}

func TestParseHostEnumerate(t *testing.T) {
	out := []byte("/HotplugHeaven/g/ack  = 'abc.3'          @ 2024-01-01T00:00:00.000Z TRANSIENT\n" +
		"/HotplugHeaven/g/sess = 'abc'            @ 2024-01-01T00:00:00.000Z\n/Other/x = 'y'\nNo properties found.\n" +
		"Name: /HotplugHeaven/g/d0, value: abc.1.eA==, timestamp: 17, flags: TRANSIENT\n" +
		"/HotplugHeaven/g/d1 = '" + strings.Repeat("x", propbridge.MaxValue+1) + "'\n")
	want := map[string]string{"g/ack": "abc.3", "g/sess": "abc", "g/d0": "abc.1.eA=="}
	if got := parseHostEnumerate(out); !reflect.DeepEqual(got, want) {
		t.Errorf("got %v", got)
	}
}

// FuzzParseHostEnumerate: the guest chooses property names and values.
func FuzzParseHostEnumerate(f *testing.F) {
	f.Add([]byte("/HotplugHeaven/g/sess = 'abc'  @ 2024\nName: /HotplugHeaven/g/d0, value: a.1.eA==, timestamp: 1, flags: \n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for k, v := range parseHostEnumerate(b) {
			if len(v) > propbridge.MaxValue {
				t.Fatalf("%q = %d bytes", k, len(v))
			}
		}
	})
}
