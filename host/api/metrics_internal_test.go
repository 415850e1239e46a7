package api

import (
	"fmt"
	"strings"
	"testing"

	"github.com/hotplugheaven/hotplug/host/eventlog"
)

func TestVCPULatenciesFromSteps(t *testing.T) {
	s := func(name string, ms float64, ok bool) eventlog.Step {
		return eventlog.Step{Name: name, DurationMS: ms, OK: ok}
	}
	tests := []struct {
		name  string
		steps []eventlog.Step
		want  string
	}{
		{"two CPUs up", []eventlog.Step{s("plug", 5, true), s("online", 700, true), s("confirm", 300, true),
			s("plug", 10, true), s("online", 400, true), s("confirm", 500, true)}, "[{true 1.005} {true 0.91}]"},
		{"one CPU down", []eventlog.Step{s("offline", 100, true), s("unplug", 50, true)}, "[{false 0.15}]"},
		{"down without an agent", []eventlog.Step{s("unplug", 40, true)}, "[{false 0.04}]"},
		{"up without an agent", []eventlog.Step{s("plug", 5, true), s("confirm", 20, true)}, "[{true 0.025}]"},
		{"online failed and rolled back", []eventlog.Step{s("plug", 5, true), s("online", 20000, false),
			s("rollback_unplug", 60, true)}, "[]"},
		{"unplug failed, CPU back online", []eventlog.Step{s("offline", 100, true), s("unplug", 30000, false),
			s("rollback_online", 50, true)}, "[]"},
		{"first ok, second plug failed", []eventlog.Step{s("plug", 5, true), s("online", 5, true), s("confirm", 5, true),
			s("plug", 1, false)}, "[{true 0.015}]"},
		{"three CPUs up in one batch", []eventlog.Step{s("plug", 5, true), s("plug", 5, true), s("plug", 10, true),
			s("online", 80, true), s("confirm", 100, true)}, "[{true 0.2} {true 0.2} {true 0.2}]"},
		{"two CPUs down in one batch", []eventlog.Step{s("offline", 100, true), s("unplug", 50, true), s("unplug", 30, true)},
			"[{false 0.15} {false 0.13}]"},
		{"batch with a CPU rolled back", []eventlog.Step{s("plug", 5, true), s("plug", 5, true), s("online", 80, false),
			s("rollback_unplug", 60, true), s("confirm", 100, true)}, "[]"},
		{"reconcile online only", []eventlog.Step{s("online", 30, true)}, "[]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := vcpuLatencies(tc.steps)
			var parts []string
			for _, l := range got {
				parts = append(parts, fmt.Sprintf("{%v %.4g}", l.up, l.seconds))
			}
			if s := "[" + strings.Join(parts, " ") + "]"; s != tc.want {
				t.Fatalf("got %s, want %s", s, tc.want)
			}
		})
	}
}
