package qmptest_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/host/qmp"
	"github.com/hotplugheaven/hotplug/host/qmp/qmptest"
)

func dial(t *testing.T, srv *qmptest.Server) *qmp.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := qmp.Dial(ctx, srv.Path(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func exec(t *testing.T, c *qmp.Client, cmd string, args, result any) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.Execute(ctx, cmd, args, result)
}

func addCPU(id string, core int) map[string]any {
	return map[string]any{"driver": "qemu64-x86_64-cpu", "id": id, "socket-id": 0, "core-id": core, "thread-id": 0}
}

func next(t *testing.T, sub *qmp.Subscription) (string, map[string]any) {
	t.Helper()
	select {
	case ev, ok := <-sub.C():
		if !ok {
			t.Fatal("subscription closed")
		}
		var data map[string]any
		json.Unmarshal(ev.Data, &data)
		return ev.Name, data
	case <-time.After(3 * time.Second):
		t.Fatal("no event")
	}
	return "", nil
}

// TestGuestEvents: the events a Linux 6.1 guest caused on QEMU 10.0.2 (as
// on 7.2) under TCG, in order and shape.
func TestGuestEvents(t *testing.T) {
	srv := qmptest.Start(t, nil)
	c := dial(t, srv)
	sub := c.Subscribe(nil, 16)

	if err := exec(t, c, "device_add", addCPU("cpu1", 1), nil); err != nil {
		t.Fatal(err)
	}
	name, data := next(t, sub)
	info, _ := data["info"].(map[string]any)
	if name != "ACPI_DEVICE_OST" || info["device"] != "cpu1" || info["source"] != 1.0 || info["status"] != 0.0 || info["slot"] != "1" || info["slot-type"] != "CPU" {
		t.Errorf("after device_add: %s %v", name, data)
	}

	if err := exec(t, c, "device_del", map[string]any{"id": "cpu1"}, nil); err != nil {
		t.Fatal(err)
	}
	name, data = next(t, sub)
	info, _ = data["info"].(map[string]any)
	if name != "ACPI_DEVICE_OST" || info["device"] != "cpu1" || info["source"] != 3.0 || info["status"] != 132.0 {
		t.Errorf("first unplug event: %s %v", name, data)
	}
	name, data = next(t, sub)
	if name != "DEVICE_DELETED" || data["path"] != "/machine/peripheral/cpu1/lapic" || data["device"] != nil {
		t.Errorf("second unplug event: %s %v", name, data)
	}
	name, data = next(t, sub)
	info, _ = data["info"].(map[string]any)
	if name != "ACPI_DEVICE_OST" || info["device"] != nil || info["source"] != 3.0 || info["status"] != 0.0 {
		t.Errorf("third unplug event: %s %v", name, data)
	}
	if srv.Plugged() != 1 {
		t.Errorf("Plugged = %d after the eject", srv.Plugged())
	}
	// The id is free again.
	if err := exec(t, c, "device_add", addCPU("cpu1", 1), nil); err != nil {
		t.Errorf("re-plug: %v", err)
	}
}

func TestGuestIgnoresUnplug(t *testing.T) {
	srv := qmptest.Start(t, &qmptest.Config{GuestIgnoresUnplug: true, UnplugDelay: time.Millisecond})
	c := dial(t, srv)
	deleted := c.Subscribe(func(e qmp.Event) bool { return e.Name == "DEVICE_DELETED" }, 4)
	if err := exec(t, c, "device_add", addCPU("cpu2", 2), nil); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // QEMU accepts a repeated device_del
		if err := exec(t, c, "device_del", map[string]any{"id": "/machine/peripheral/cpu2"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case ev := <-deleted.C():
		t.Fatalf("unexpected %s", ev.Name)
	case <-time.After(100 * time.Millisecond):
	}
	if srv.Plugged() != 2 {
		t.Fatalf("Plugged = %d", srv.Plugged())
	}
	srv.EjectPending()
	if name, _ := next(t, deleted); name != "DEVICE_DELETED" || srv.Plugged() != 1 {
		t.Errorf("EjectPending: %s, Plugged %d", name, srv.Plugged())
	}
}

func TestFaultKnobs(t *testing.T) {
	srv := qmptest.Start(t, nil)
	c := dial(t, srv)

	srv.FailNext("query-cpus-fast", "GenericError", "boom")
	var qe *qmp.Error
	if err := exec(t, c, "query-cpus-fast", nil, nil); !errors.As(err, &qe) || qe.Desc != "boom" {
		t.Errorf("FailNext: err = %v", err)
	}
	if err := exec(t, c, "query-cpus-fast", nil, nil); err != nil {
		t.Errorf("FailNext fails only once: %v", err)
	}

	release := srv.Stall("query-cpus-fast")
	done := make(chan error, 1)
	go func() { done <- exec(t, c, "query-cpus-fast", nil, nil) }()
	select {
	case err := <-done:
		t.Fatalf("stalled reply arrived: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	release()
	if err := <-done; err != nil {
		t.Errorf("after release: %v", err)
	}
	release() // idempotent

	// qom-set cpu-hotplug-legacy=true aborts QEMU before it replies.
	err := exec(t, c, "qom-set", map[string]any{"path": srv.PMPath(), "property": "cpu-hotplug-legacy", "value": true}, nil)
	if !errors.Is(err, qmp.ErrClosed) {
		t.Fatalf("qom-set: err = %v, want the connection closed", err)
	}
	select {
	case <-c.Done():
	case <-time.After(3 * time.Second):
		t.Fatal("connection still up after the simulated abort")
	}
	if _, err := net.Dial("unix", srv.Path()); err == nil {
		t.Error("socket still accepts after the simulated abort")
	}
}

func TestOneClientAtATime(t *testing.T) {
	srv := qmptest.Start(t, nil)
	first := dial(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := qmp.Dial(ctx, srv.Path(), nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second client: err = %v, want no greeting while the first is connected", err)
	}
	first.Close()
	dial(t, srv)

	conc := qmptest.Start(t, &qmptest.Config{ConcurrentClients: true})
	a, b := dial(t, conc), dial(t, conc)
	sa, sb := a.Subscribe(nil, 1), b.Subscribe(nil, 1)
	conc.Emit("STOP", nil)
	next(t, sa)
	next(t, sb)
}

// TestTCGContexts: under TCG a VM creates at most MaxCPUs vCPUs in its life;
// the device_add that would create one more kills QEMU. KVM has no limit.
func TestTCGContexts(t *testing.T) {
	for _, accel := range []string{"tcg", "kvm"} {
		t.Run(accel, func(t *testing.T) {
			srv := qmptest.Start(t, &qmptest.Config{MaxCPUs: 2, Accel: accel, UnplugDelay: time.Millisecond})
			c := dial(t, srv)
			deleted := c.Subscribe(func(e qmp.Event) bool { return e.Name == "DEVICE_DELETED" }, 16)
			if err := exec(t, c, "device_add", addCPU("cpu1", 1), nil); err != nil {
				t.Fatal(err)
			}
			if err := exec(t, c, "device_del", map[string]any{"id": "cpu1"}, nil); err != nil {
				t.Fatal(err)
			}
			_, data := next(t, deleted)
			if data["path"] != "/machine/peripheral/cpu1/lapic" {
				t.Errorf("first DEVICE_DELETED: %v", data)
			}
			if accel == "kvm" {
				// Under KVM the CPU itself follows its lapic.
				if _, data := next(t, deleted); data["path"] != "/machine/peripheral/cpu1" || data["device"] != "cpu1" {
					t.Errorf("second DEVICE_DELETED: %v", data)
				}
			}
			err := exec(t, c, "device_add", addCPU("cpu1", 1), nil)
			switch accel {
			case "tcg":
				if !errors.Is(err, qmp.ErrClosed) {
					t.Errorf("third vCPU of a maxcpus=2 TCG VM: err = %v, want QEMU gone", err)
				}
			case "kvm":
				if err != nil {
					t.Errorf("re-plug under KVM: %v", err)
				}
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []qmptest.Config{
		{MaxCPUs: 6, Sockets: 2, Cores: 2},
		{MaxCPUs: 4, Modules: 2, Cores: 3},
		{BootCPUs: 5},
		{MaxCPUs: -1},
		{Accel: "hvf"},
	} {
		if s, err := qmptest.NewServer("/nonexistent/x.sock", &cfg); err == nil {
			s.Close()
			t.Errorf("NewServer(%+v) succeeded", cfg)
		}
	}
}
