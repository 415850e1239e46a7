package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/host/api"
	"github.com/hotplugheaven/hotplug/host/apiserver/apitest"
	"github.com/hotplugheaven/hotplug/host/eventlog"
)

// cli runs the command line against the rig's socket.
func cli(t *testing.T, r *apitest.Rig, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	args = append(args, "--socket", r.Socket)
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func oneClearLine(t *testing.T, stderr, want string) {
	t.Helper()
	if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "hotplug-actuator ") || !strings.Contains(stderr, want) {
		t.Fatalf("stderr %q: want one line containing %q", stderr, want)
	}
}

func TestStatusExplainAndControls(t *testing.T) {
	r := apitest.Start(t, apitest.Spec{Name: "web", Demand: 2.5, App: true}, apitest.Spec{Name: "db", Demand: 0.2})
	apitest.WaitFor(t, 10*time.Second, "web's scale-up", func() bool {
		p, err := r.Client().Events(context.Background(), api.EventQuery{})
		return err == nil && len(p.Events) > 0
	})

	code, out, errs := cli(t, r, "status")
	if code != 0 || errs != "" {
		t.Fatalf("status: %d %s", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "VM") || !strings.HasPrefix(lines[1], "web ") ||
		!strings.HasPrefix(lines[2], "db ") || !strings.Contains(lines[2], "1/1→1") || !strings.HasPrefix(lines[3], "host: ") {
		t.Fatalf("status table:\n%s", out)
	}
	code, out, _ = cli(t, r, "status", "--json")
	var list api.VMList
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list.VMs) != 2 || list.VMs[0].Current < 3 {
		t.Fatalf("status --json: %d %s", code, out)
	}

	code, out, _ = cli(t, r, "explain", "web")
	for _, want := range []string{"web: ", "last decision ", "by rule ", "why: ", "latest report ", "run-queue p50/p95/p99", "app web: ", "SLA p95 ≤ 50.0ms"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("explain lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = cli(t, r, "explain", "web", "--json")
	var v api.VM
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || v.Name != "web" || v.Explanation.Rule == "" {
		t.Fatalf("explain --json: %d %s", code, out)
	}

	// Flags may follow the VM name.
	code, out, _ = cli(t, r, "pause", "db", "--json")
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || !v.Paused {
		t.Fatalf("pause --json: %d %s", code, out)
	}
	code, out, _ = cli(t, r, "resume", "db")
	if code != 0 || out != "db: scaling resumed at 1 vCPUs\n" {
		t.Fatalf("resume: %d %q", code, out)
	}
	if code, out, _ = cli(t, r, "pause", "db"); code != 0 || !strings.Contains(out, "db: scaling paused at 1 vCPUs") {
		t.Fatalf("pause: %d %q", code, out)
	}
	code, out, _ = cli(t, r, "set-vcpus", "db", "3")
	if code != 0 || !strings.HasPrefix(out, "db: 3 vCPUs\n") || r.VMs["db"].Guest.OnlineCount() != 3 {
		t.Fatalf("set-vcpus 3: %d %q (guest %d online)", code, out, r.VMs["db"].Guest.OnlineCount())
	}
	code, out, _ = cli(t, r, "set-vcpus", "db", "9")
	if code != 0 || !strings.HasPrefix(out, "db: 4 vCPUs (asked for 9; the policy allows 1–4") {
		t.Fatalf("set-vcpus 9: %d %q", code, out)
	}

	// Errors: one line, non-zero.
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"explain", "nope"}, 1, `no VM named "nope"`},
		{[]string{"pause", "nope"}, 1, `no VM named "nope"`},
		{[]string{"explain"}, 2, "usage: explain VM"},
		{[]string{"set-vcpus", "db", "many"}, 2, `N must be a whole number`},
		{[]string{"set-vcpus", "db"}, 2, "usage: set-vcpus VM N"},
		{[]string{"status", "web"}, 2, "takes no arguments"},
		{[]string{"events", "--since", "yesterday"}, 2, "--since: want RFC 3339"},
	} {
		code, _, errs := cli(t, r, tc.args...)
		if code != tc.code {
			t.Errorf("%v: exit %d, want %d (%s)", tc.args, code, tc.code, errs)
			continue
		}
		oneClearLine(t, errs, tc.want)
	}
}

func TestCommandsWithoutAnActuator(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	for _, args := range [][]string{{"status"}, {"explain", "web"}, {"pause", "web"}, {"set-vcpus", "web", "2"}, {"events"}} {
		var out, errb bytes.Buffer
		code := run(append(args, "--socket", sock), &out, &errb)
		if code != 1 {
			t.Errorf("%v: exit %d, want 1", args, code)
		}
		oneClearLine(t, errb.String(), "cannot reach the actuator at "+sock)
		if args[0] == "events" && !strings.Contains(errb.String(), "--log FILE") {
			t.Errorf("events does not point at --log: %s", errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"status", "--url", "http://127.0.0.1:1"}, &out, &errb); code != 1 {
		t.Fatalf("--url without token: exit %d", code)
	}
	oneClearLine(t, errb.String(), "--url needs --token-file")
}

// syncBuffer is a bytes.Buffer safe for the follow goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestEventsThroughTheAPI(t *testing.T) {
	r := apitest.Start(t, apitest.Spec{Name: "web"}, apitest.Spec{Name: "db"})
	c := r.Client()
	ctx := context.Background()
	for _, vm := range []string{"web", "db"} {
		if _, err := c.Pause(ctx, vm); err != nil {
			t.Fatal(err)
		}
		if _, err := c.SetVCPUs(ctx, vm, 2); err != nil {
			t.Fatal(err)
		}
	}
	code, out, errs := cli(t, r, "events", "--vm", "web")
	if code != 0 || strings.Count(out, "scale_up") != 1 || !strings.Contains(out, "web") || strings.Contains(out, "db ") {
		t.Fatalf("events --vm web: %d %s %s", code, out, errs)
	}
	code, out, _ = cli(t, r, "events", "--json")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[0], `{"seq":`) {
		t.Fatalf("events --json:\n%s", out)
	}

	// --follow: the history, then new events once each.
	var buf syncBuffer
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- eventsFromAPI(fctx, c, eventlog.Filter{VM: "web"}, true, func(ev eventlog.Event) {
			b, _ := json.Marshal(ev)
			buf.Write(append(b, '\n'))
		})
	}()
	apitest.WaitFor(t, 5*time.Second, "the history", func() bool { return strings.Count(buf.String(), "\n") == 1 })
	for _, n := range []int{3, 1} {
		if _, err := c.SetVCPUs(ctx, "web", n); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.SetVCPUs(ctx, "db", 3); err != nil {
		t.Fatal(err)
	}
	apitest.WaitFor(t, 5*time.Second, "the followed events", func() bool { return strings.Count(buf.String(), "\n") == 3 })
	time.Sleep(200 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("follow ended with %v", err)
	}
	var seqs []uint64
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var ev eventlog.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil || ev.VM != "web" {
			t.Fatalf("followed line %q", line)
		}
		seqs = append(seqs, ev.Seq)
	}
	if len(seqs) != 3 || seqs[0] >= seqs[1] || seqs[1] >= seqs[2] {
		t.Fatalf("followed seqs %v: want the history and two new events, in order, once each", seqs)
	}

	// --log reads the file without the actuator.
	var o, e bytes.Buffer
	if code := run([]string{"events", "--log", r.EventLog, "--vm", "db"}, &o, &e); code != 0 || strings.Count(o.String(), "scale_up") != 2 {
		t.Fatalf("events --log: %d %s %s", code, o.String(), e.String())
	}
}
