package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/guest/agent"
)

func writeStatus(t *testing.T, f agent.StatusFile) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "status.json")
	b, _ := json.Marshal(f)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestAgentStatusCommand(t *testing.T) {
	now := time.Now()
	f := agent.StatusFile{AgentVersion: "1.2", PID: 42, WrittenAt: now.Add(-2 * time.Second), IntervalSeconds: 5,
		Transport: "virtio-serial:org.hotplugheaven.0", LastError: "open /dev/vport0p1: no such device",
		ReportsSent: 10, ReportsDropped: 3, ReportsQueued: 12,
		Sources: []agent.SourceState{{Name: "stat", Path: "/proc/stat", InUse: true},
			{Name: "psi", Path: "/proc/pressure/cpu", Error: "kernel without CONFIG_PSI"}},
		Extras: []string{"runq"},
		LastReport: &agent.ReportSummary{Seq: 77, At: now.Add(-3 * time.Second), Online: "0-1", Present: "0-3", BusyCPUs: 1.5,
			Load1: 2, RunQSource: "schedstat", RunQP95Seconds: 0.004, MemAvailableBytes: 512 << 20}}
	path := writeStatus(t, f)
	var out, errb bytes.Buffer
	if code := cmdStatus([]string{"--file", path}, &out, &errb); code != 0 || errb.Len() != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"hotplug-agent 1.2 (pid 42), status written 2s ago, sampling every 5s",
		"actuator: NOT connected over virtio-serial:org.hotplugheaven.0; last error: open /dev/vport0p1: no such device",
		"reports: 10 sent, 3 dropped, 12 waiting", "/proc/stat", "NOT USED: kernel without CONFIG_PSI", "extra measurements: runq",
		"last report #77, 3s ago: CPUs online 0-1 (present 0-3), busy 1.50 CPUs", "run-queue p95 4.00ms (schedstat)", "512 MiB available"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if code := cmdStatus([]string{"--file", path, "--json"}, &out, &errb); code != 0 {
		t.Fatalf("--json: exit %d", code)
	}
	var back agent.StatusFile
	if err := json.Unmarshal(out.Bytes(), &back); err != nil || back.LastReport.Seq != 77 {
		t.Fatalf("--json: %v %s", err, out.String())
	}

	// An agent that stopped writing: the status is shown, and the exit
	// says something is wrong.
	f.WrittenAt = now.Add(-time.Minute)
	out.Reset()
	if code := cmdStatus([]string{"--file", writeStatus(t, f)}, &out, &errb); code != 1 || !strings.Contains(out.String(), "pid 42") ||
		strings.Count(errb.String(), "\n") != 1 || !strings.Contains(errb.String(), "looks stopped") {
		t.Fatalf("stale: exit %d, stderr %q", code, errb.String())
	}

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--file", filepath.Join(t.TempDir(), "none.json")}, 1, "is hotplug-agent running?"},
		{[]string{"--file", "/etc/hostname"}, 1, "not a status file"},
		{[]string{"extra"}, 2, "takes no arguments"},
	} {
		errb.Reset()
		if code := cmdStatus(tc.args, &out, &errb); code != tc.code || strings.Count(errb.String(), "\n") != 1 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, errb.String(), tc.code, tc.want)
		}
	}

	// The path comes from the agent's config.
	cfg := filepath.Join(t.TempDir(), "agent.toml")
	os.WriteFile(cfg, []byte("status_file = \""+path+"\"\n"), 0o644)
	out.Reset()
	if code := cmdStatus([]string{"--config", cfg}, &out, &errb); code != 0 || !strings.Contains(out.String(), "pid 42") {
		t.Fatalf("--config: exit %d", code)
	}
}
