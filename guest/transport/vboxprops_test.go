package transport

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/host/hypervisor/vboxfake"
	"github.com/hotplugheaven/hotplug/internal/propbridge"
)

// The guest end against vboxfake's VBoxControl, with the host's side of
// the protocol played by the test through the fake's state. The two ends
// together are tested in host/channel/vboxprops_test.go.

func startGuestFake(t *testing.T) (*vboxfake.Fake, *VBoxProps) {
	t.Helper()
	dir := t.TempDir()
	_, control, err := vboxfake.Build(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	f, err := vboxfake.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.AddMachine(vboxfake.Machine{Name: "vm", CPUs: 1}); err != nil {
		t.Fatal(err)
	}
	return f, &VBoxProps{VBoxControl: control, Env: f.Env("vm"), PollWait: 200 * time.Millisecond, DialTimeout: 3 * time.Second}
}

// hostAnswers plays the host's Accept: when the guest announces a session
// it sets h/sess to answer(session).
func hostAnswers(t *testing.T, f *vboxfake.Fake, answer func(sess string) string) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	// Stop and wait: a write to the fake's state after the test would race
	// the temp dir's removal.
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			m, err := f.Machine("vm")
			if err == nil {
				if s := m.Props[VBoxPropPrefix+"g/sess"].Value; s != "" && m.Props[VBoxPropPrefix+"h/sess"].Value == "" {
					f.UpdateMachine("vm", func(m *vboxfake.Machine) {
						m.Props[VBoxPropPrefix+"h/sess"] = vboxfake.Prop{Value: answer(s), Timestamp: time.Now().UnixNano()}
						m.Changes = append(m.Changes, vboxfake.Change{Name: VBoxPropPrefix + "h/sess", Value: answer(s), Timestamp: time.Now().UnixNano()})
					})
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
}

func TestVBoxPropsDialAccepted(t *testing.T) {
	f, d := startGuestFake(t)
	hostAnswers(t, f, func(s string) string { return s })
	c, err := d.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m, _ := f.Machine("vm")
	sess := m.Props[VBoxPropPrefix+"g/sess"].Value
	if len(sess) != 16 || m.Props[VBoxPropPrefix+"g/ack"].Value != sess+".0" || m.Props[VBoxPropPrefix+"g/sess"].Flags != "TRANSIENT" {
		t.Errorf("guest properties after Dial: %+v", m.Props)
	}
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		m, _ = f.Machine("vm")
		if v := m.Props[VBoxPropPrefix+"g/d0"].Value; v != "" {
			if v != sess+".1.aGVsbG8=" {
				t.Errorf("chunk 1 = %q", v)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no chunk written")
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.Close()
	m, _ = f.Machine("vm")
	if _, ok := m.Props[VBoxPropPrefix+"g/sess"]; ok {
		t.Error("g/sess still set after Close")
	}
}

func TestVBoxPropsDialRefused(t *testing.T) {
	f, d := startGuestFake(t)
	hostAnswers(t, f, func(s string) string { return "-" + s })
	if _, err := d.Dial(context.Background()); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("Dial: %v", err)
	}
}

func TestVBoxPropsDialNoActuator(t *testing.T) {
	_, d := startGuestFake(t)
	start := time.Now()
	_, err := d.Dial(context.Background())
	if err == nil || !strings.Contains(err.Error(), "no actuator accepted") || time.Since(start) > 6*time.Second {
		t.Fatalf("Dial with nobody listening: %v after %v", err, time.Since(start))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := d.Dial(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Dial with a cancelled context: %v", err)
	}
}

func TestVBoxPropsNotInGuest(t *testing.T) {
	f, d := startGuestFake(t)
	f.UpdateMachine("vm", func(m *vboxfake.Machine) { m.State = "poweroff" })
	if _, err := d.Dial(context.Background()); err == nil || !strings.Contains(err.Error(), "Could not contact the host system") {
		t.Fatalf("Dial outside a guest: %v", err)
	}
	missing := &VBoxProps{VBoxControl: "/nonexistent/VBoxControl"}
	if _, err := missing.Dial(context.Background()); err == nil || !strings.Contains(err.Error(), "Guest Additions") {
		t.Fatalf("Dial without VBoxControl: %v", err)
	}
}

func TestParseGuestEnumerate(t *testing.T) {
	out := []byte("Name: /HotplugHeaven/h/sess, value: abc, timestamp: 17, flags: TRANSIENT\n" +
		"Name: /HotplugHeaven/h/d0, value: abc.1.eA==, timestamp: 19, flags: \nName: /Other, value: x, timestamp: 99, flags: \n" +
		"Name: /HotplugHeaven/h/d1, value: " + strings.Repeat("x", propbridge.MaxValue+1) + ", timestamp: 20, flags: \ngarbage\n")
	props, newest := parseGuestEnumerate(out)
	if want := map[string]string{"h/sess": "abc", "h/d0": "abc.1.eA=="}; !reflect.DeepEqual(props, want) || newest != 19 {
		t.Errorf("got %v, newest %d", props, newest)
	}
}

// FuzzParseGuestEnumerate: what VBoxControl prints is the host's, but it
// must not make the agent panic.
func FuzzParseGuestEnumerate(f *testing.F) {
	f.Add([]byte("Name: /HotplugHeaven/h/d0, value: a.1.eA==, timestamp: 1, flags: \n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		props, _ := parseGuestEnumerate(b)
		for _, v := range props {
			if len(v) > propbridge.MaxValue {
				t.Fatalf("value of %d bytes", len(v))
			}
		}
	})
}
