package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/host/qmp/qmptest"
)

// checkGoroutines fails the test if goroutines started during it are still
// running at cleanup (after the other cleanups, which close servers).
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(2 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				t.Errorf("goroutine leak: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func dial(t *testing.T, path string) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, path, nil)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestDialAndExecute(t *testing.T) {
	checkGoroutines(t)
	srv := qmptest.Start(t, nil)
	c := dial(t, srv.Path())

	if got := c.Greeting().String(); got != "10.0.2" {
		t.Errorf("Greeting = %s, want 10.0.2", got)
	}
	var cpus []struct {
		QOMPath string `json:"qom-path"`
		Props   struct {
			CoreID int `json:"core-id"`
		} `json:"props"`
	}
	if err := c.Execute(ctx(t), "query-hotpluggable-cpus", nil, &cpus); err != nil {
		t.Fatal(err)
	}
	if len(cpus) != 4 || cpus[0].Props.CoreID != 3 || cpus[3].QOMPath != "/machine/unattached/device[0]" {
		t.Errorf("query-hotpluggable-cpus = %+v", cpus)
	}
	reqs := srv.Requests()
	if len(reqs) != 2 || reqs[0].Command != "qmp_capabilities" {
		t.Errorf("requests = %+v, want qmp_capabilities first", reqs)
	}
}

func TestExecuteError(t *testing.T) {
	checkGoroutines(t)
	srv := qmptest.Start(t, nil)
	c := dial(t, srv.Path())

	args := map[string]any{"driver": "qemu64-x86_64-cpu", "socket-id": 0, "core-id": 0, "thread-id": 0}
	err := c.Execute(ctx(t), "device_add", args, nil)
	var qe *Error
	if !errors.As(err, &qe) {
		t.Fatalf("err = %v, want *Error", err)
	}
	if qe.Class != "GenericError" || qe.Desc != "CPU[0] with APIC ID 0 exists" {
		t.Errorf("err = %+v", qe)
	}
	if errors.Is(err, ErrClosed) {
		t.Error("a QMP error reply must not look like a closed connection")
	}
	// The connection is still good.
	if err := c.Execute(ctx(t), "query-cpus-fast", nil, nil); err != nil {
		t.Fatal(err)
	}
}

func TestDialErrors(t *testing.T) {
	checkGoroutines(t)
	dir := shortTempDir(t)

	t.Run("no socket", func(t *testing.T) {
		_, err := Dial(ctx(t), filepath.Join(dir, "missing.sock"), nil)
		if err == nil || !strings.Contains(err.Error(), "missing.sock") {
			t.Fatalf("err = %v, want one naming the socket", err)
		}
	})
	t.Run("not QMP", func(t *testing.T) {
		path := scripted(t, dir, "notqmp.sock", func(c net.Conn, r *bufio.Reader) {
			c.Write([]byte(`{"hello": "world"}` + "\n"))
			r.ReadString('\n')
		})
		_, err := Dial(ctx(t), path, nil)
		if !errors.Is(err, ErrProtocol) {
			t.Fatalf("err = %v, want ErrProtocol", err)
		}
	})
	t.Run("silent server honours ctx", func(t *testing.T) {
		path := scripted(t, dir, "silent.sock", func(c net.Conn, r *bufio.Reader) {
			r.ReadString('\n') // never greets; returns when the client hangs up
		})
		cx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := Dial(cx, path, nil)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want DeadlineExceeded", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Dial took %v despite a 100ms context", d)
		}
	})
	t.Run("capabilities refused", func(t *testing.T) {
		path := scripted(t, dir, "refuse.sock", func(c net.Conn, r *bufio.Reader) {
			c.Write([]byte(greeting + "\n"))
			id := readID(r)
			c.Write([]byte(`{"id": ` + id + `, "error": {"class": "GenericError", "desc": "nope"}}` + "\n"))
			r.ReadString('\n')
		})
		_, err := Dial(ctx(t), path, nil)
		var qe *Error
		if !errors.As(err, &qe) || qe.Desc != "nope" {
			t.Fatalf("err = %v, want the QMP error", err)
		}
	})
}

const greeting = `{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}`

func shortTempDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "qmp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// scripted serves one connection with f on a unix socket in dir.
func scripted(t *testing.T, dir, name string, f func(net.Conn, *bufio.Reader)) string {
	t.Helper()
	path := filepath.Join(dir, name)
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		f(c, bufio.NewReader(c))
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return path
}

// readID reads one command line and returns its id as JSON.
func readID(r *bufio.Reader) string {
	line, err := r.ReadString('\n')
	if err != nil {
		return "0"
	}
	var cmd struct {
		ID json.RawMessage `json:"id"`
	}
	json.Unmarshal([]byte(line), &cmd)
	return string(cmd.ID)
}

// TestGarbageReplies: whatever QEMU sends, the client must not panic, and
// a real reply after garbage still reaches its caller.
func TestGarbageReplies(t *testing.T) {
	checkGoroutines(t)
	dir := shortTempDir(t)
	path := scripted(t, dir, "garbage.sock", func(c net.Conn, r *bufio.Reader) {
		c.Write([]byte(greeting + "\n"))
		c.Write([]byte(`{"return": {}, "id": ` + readID(r) + "}\n"))
		id := readID(r)
		for _, junk := range []string{
			`[1, 2, 3]`,
			`"a string"`,
			`{}`,
			`{"return": {}, "id": 999999}`,
			`{"return": {}, "id": "string-id"}`,
			`{"return": {}, "id": -1}`,
			`{"return": {}, "id": 1.5}`,
			`{"return": {}}`,
			`{"error": "not an object", "id": ` + id + `}`,
			`{"event": 5}`,
			`{"event": "X", "timestamp": {"seconds": -1, "microseconds": 99999999}}`,
			`{"QMP": {}}`,
			`null`,
		} {
			c.Write([]byte(junk + "\n"))
		}
		c.Write([]byte(`{"return": {"ok": true}, "id": ` + id + "}\n"))
		readID(r)
		c.Write([]byte(`{"return": ` + "\n")) // then hang up mid-object
	})
	c := dial(t, path)
	var got struct{ OK bool }
	if err := c.Execute(ctx(t), "x", nil, &got); err != nil || !got.OK {
		t.Fatalf("Execute = %v, %+v; want the reply after the garbage", err, got)
	}
	err := c.Execute(ctx(t), "y", nil, nil)
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("err = %v, want ErrClosed after a truncated stream", err)
	}
}

func TestMessageTooLarge(t *testing.T) {
	checkGoroutines(t)
	dir := shortTempDir(t)
	path := scripted(t, dir, "large.sock", func(c net.Conn, r *bufio.Reader) {
		c.Write([]byte(greeting + "\n"))
		c.Write([]byte(`{"return": {}, "id": ` + readID(r) + "}\n"))
		id := readID(r)
		c.Write([]byte(`{"return": "`))
		chunk := []byte(strings.Repeat("a", 1<<20))
		for i := 0; i <= MaxMessageSize>>20; i++ {
			if _, err := c.Write(chunk); err != nil {
				return // the client hung up, as it should
			}
		}
		c.Write([]byte(`", "id": ` + id + "}\n"))
	})
	c := dial(t, path)
	err := c.Execute(ctx(t), "x", nil, nil)
	if !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("err = %v, want the connection closed for an oversized message", err)
	}
}

func TestConnectionLossFailsPendingCalls(t *testing.T) {
	checkGoroutines(t)
	srv := qmptest.Start(t, nil)
	c := dial(t, srv.Path())
	release := srv.Stall("query-cpus-fast")
	defer release()

	const n = 5
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() { errs <- c.Execute(context.Background(), "query-cpus-fast", nil, nil) }()
	}
	// The fake, like QEMU, answers in order: the first call stalls and
	// the others wait in the socket behind it.
	waitFor(t, func() bool { return len(srv.Requests()) == 2 })
	srv.CloseConnections()
	for i := 0; i < n; i++ {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrClosed) {
				t.Errorf("pending call: err = %v, want ErrClosed", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("pending call did not fail after the connection died")
		}
	}
	select {
	case <-c.Done():
	case <-time.After(time.Second):
		t.Fatal("Done not closed")
	}
	if !errors.Is(c.Err(), ErrClosed) {
		t.Errorf("Err = %v", c.Err())
	}
	start := time.Now()
	if err := c.Execute(context.Background(), "query-cpus-fast", nil, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("later call: err = %v, want ErrClosed", err)
	}
	if time.Since(start) > 100*time.Millisecond {
		t.Error("a call on a dead client must fail fast")
	}
}

func TestContextEndsCall(t *testing.T) {
	checkGoroutines(t)
	srv := qmptest.Start(t, nil)
	c := dial(t, srv.Path())
	release := srv.Stall("query-cpus-fast")

	cx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := c.Execute(cx, "query-cpus-fast", nil, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	release()
	// The late reply is dropped as an unknown id; the client carries on.
	if err := c.Execute(ctx(t), "query-hotpluggable-cpus", nil, nil); err != nil {
		t.Fatal(err)
	}
	if c.Err() != nil {
		t.Fatal(c.Err())
	}
	cancelled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if err := c.Execute(cancelled, "query-cpus-fast", nil, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want Canceled", err)
	}
}

func TestConcurrentCalls(t *testing.T) {
	checkGoroutines(t)
	srv := qmptest.Start(t, nil)
	c := dial(t, srv.Path())
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				var apic int
				err := c.Execute(ctx(t), "qom-get", map[string]string{"path": "/machine/unattached/device[0]", "property": "apic-id"}, &apic)
				if err != nil || apic != 0 {
					t.Errorf("qom-get = %d, %v", apic, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestSubscribe(t *testing.T) {
	checkGoroutines(t)
	srv := qmptest.Start(t, nil)
	c := dial(t, srv.Path())

	deleted := c.Subscribe(func(e Event) bool { return e.Name == "DEVICE_DELETED" }, 8)
	all := c.Subscribe(nil, 1)
	srv.Emit("STOP", nil)
	srv.Emit("DEVICE_DELETED", map[string]string{"path": "/machine/peripheral/x/lapic"})

	select {
	case ev := <-deleted.C():
		var d struct{ Path string }
		json.Unmarshal(ev.Data, &d)
		if d.Path != "/machine/peripheral/x/lapic" || ev.Time.IsZero() {
			t.Errorf("event = %+v", ev)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no DEVICE_DELETED")
	}
	// all has room for one: STOP arrived, DEVICE_DELETED was dropped. A
	// full subscriber must not have held up the other one.
	waitFor(t, func() bool { return all.Dropped() == 1 })
	if ev := <-all.C(); ev.Name != "STOP" || ev.Data != nil {
		t.Errorf("first event = %+v, want STOP without data", ev)
	}
	all.Close()
	all.Close() // idempotent
	if _, ok := <-all.C(); ok {
		t.Error("C still open after Close")
	}

	srv.CloseConnections()
	select {
	case _, ok := <-deleted.C():
		if ok {
			t.Error("unexpected event")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("subscription not closed when the connection died")
	}
	late := c.Subscribe(nil, 1)
	if _, ok := <-late.C(); ok {
		t.Error("subscription on a dead client must be closed")
	}
	deleted.Close()
}

func TestCloseIsIdempotent(t *testing.T) {
	checkGoroutines(t)
	srv := qmptest.Start(t, nil)
	c := dial(t, srv.Path())
	c.Close()
	c.Close()
	if !errors.Is(c.Err(), ErrClosed) {
		t.Errorf("Err = %v", c.Err())
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
