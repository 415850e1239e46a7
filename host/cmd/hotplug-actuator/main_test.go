package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/host/eventlog"
)

func TestCheckReportsTheField(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "a.toml")
	os.WriteFile(cfg, []byte(`event_log = "/tmp/e.jsonl"
[[vm]]
name = "web1"
qmp = "/run/web1.qmp"
[vm.channel]
type = "tcp"
listen = "127.0.0.1:7001"
[vm.policy]
k = 9
`), 0o644)
	var out, errb bytes.Buffer
	if code := run([]string{"check", "--config", cfg}, &out, &errb); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	if !strings.Contains(errb.String(), "vm[0].policy.k") || strings.Count(strings.TrimSpace(errb.String()), "\n") > 2 {
		t.Fatalf("want one clear line naming vm[0].policy.k, got %q", errb.String())
	}
	if code := run([]string{"run", "--config", filepath.Join(dir, "missing.toml")}, &out, &errb); code != 2 {
		t.Fatalf("missing config: exit %d", code)
	}
	if code := run([]string{"frobnicate"}, &out, &errb); code != 2 {
		t.Fatalf("unknown command: exit %d", code)
	}
}

func TestEventsCommand(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	l, err := eventlog.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().Add(-time.Hour)
	for i, vm := range []string{"a", "b", "a"} {
		l.Append(&eventlog.Event{Time: t0.Add(time.Duration(i) * time.Minute), VM: vm, Kind: "scale_up", From: 1, To: 2, Result: 2,
			Rule: "hotspot", Reason: "busy", Outcome: eventlog.OutcomeOK, Steps: []eventlog.Step{{Name: "plug", DurationMS: 5, OK: true}}})
	}
	l.Close()
	// A torn line being written right now must not show up or break reading.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"seq":4,"vm":"a"`)
	f.Close()

	var out, errb bytes.Buffer
	if code := run([]string{"events", "--log", path, "--vm", "a"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if got := strings.Count(out.String(), "scale_up"); got != 2 || !strings.Contains(out.String(), "plug 5ms ok") {
		t.Fatalf("human output:\n%s", out.String())
	}
	out.Reset()
	if code := run([]string{"events", "--log", path, "--json"}, &out, &errb); code != 0 {
		t.Fatal(errb.String())
	}
	if lines := strings.Split(strings.TrimSpace(out.String()), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[0], `{"seq":1`) {
		t.Fatalf("json output:\n%s", out.String())
	}
	if code := run([]string{"events", "--log", path, "--since", "not-a-time"}, &out, &errb); code != 2 {
		t.Fatalf("bad --since: exit %d", code)
	}
}
