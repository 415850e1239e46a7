package agent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotplugheaven/hotplug/guest/transport"
	"github.com/hotplugheaven/hotplug/proto"
)

func waitStatus(t *testing.T, path string, what string, ok func(StatusFile) bool) StatusFile {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		f, err := ReadStatusFile(path)
		if err == nil && ok(f) {
			return f
		}
		if time.Now().After(deadline) {
			t.Fatalf("status file never showed %s; last read %+v, %v", what, f, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestStatusFileFollowsTheAgent(t *testing.T) {
	opts := fixture(t)
	path := filepath.Join(t.TempDir(), "run", "status.json")
	act, _ := startAgent(t, opts, Config{Version: "test", StatusFile: NewStatusWriter(path)})

	// Before the actuator answers: sampling goes on, the file says not
	// connected and shows the last report anyway.
	f := waitStatus(t, path, "a report", func(f StatusFile) bool { return f.LastReport != nil && f.LastReport.Seq >= 1 })
	if f.AgentVersion != "test" || f.PID != os.Getpid() || !strings.HasPrefix(f.Transport, "tcp:127.0.0.1:") ||
		f.IntervalSeconds != 0.1 || f.Stale(time.Now()) {
		t.Fatalf("status: %+v", f)
	}
	if f.LastReport.Online != "0-3" || f.LastReport.Present != "0-3" || f.LastReport.MemAvailableBytes == 0 {
		t.Fatalf("last report: %+v", f.LastReport)
	}
	inUse := map[string]bool{}
	for _, s := range f.Sources {
		inUse[s.Name] = s.InUse
		if s.Path == "" || (!s.InUse && s.Error == "") {
			t.Errorf("source %+v: want its path, and a reason when not in use", s)
		}
	}
	for _, name := range []string{"stat", "loadavg", "meminfo", "cpulists"} {
		if !inUse[name] {
			t.Errorf("source %s not in use: %+v", name, f.Sources)
		}
	}

	c, _ := act.accept(t, &proto.Welcome{Version: 1, VM: "vm1"})
	c.next(t)
	f = waitStatus(t, path, "connected", func(f StatusFile) bool { return f.Connected && f.ReportsSent > 0 })
	if f.LastError != "" {
		t.Errorf("connected with last error %q", f.LastError)
	}
	c.c.Close()
	act.ln.Close()
	f = waitStatus(t, path, "the lost connection", func(f StatusFile) bool { return !f.Connected && f.LastError != "" })
	t.Logf("after the actuator went away: %q, %d queued", f.LastError, f.ReportsQueued)
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("status directory holds %d files, want only status.json (no temporary left)", len(entries))
	}
}

func TestStatusFileWriteErrorDoesNotStopSampling(t *testing.T) {
	opts := fixture(t)
	dir := t.TempDir()
	blocker := filepath.Join(dir, "file")
	os.WriteFile(blocker, nil, 0o644)
	a, err := New(Config{Interval: 100 * time.Millisecond, Collector: opts,
		StatusFile: NewStatusWriter(filepath.Join(blocker, "status.json"))}, &transport.TCP{Addr: "127.0.0.1:1"}, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(5 * time.Second)
	for a.Status().LastReport == nil || a.Status().LastReport.Seq < 3 {
		if time.Now().After(deadline) {
			t.Fatal("sampling stopped when the status file could not be written")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestStale(t *testing.T) {
	now := time.Now()
	f := StatusFile{WrittenAt: now.Add(-20 * time.Second), IntervalSeconds: 5}
	if f.Stale(now) {
		t.Error("20 s old with a 5 s interval is not stale (3 intervals + 10 s)")
	}
	f.WrittenAt = now.Add(-26 * time.Second)
	if !f.Stale(now) {
		t.Error("26 s old with a 5 s interval is stale")
	}
}
