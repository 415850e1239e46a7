package apiserver_test

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/hotplugheaven/hotplug/host/actuator"
	"github.com/hotplugheaven/hotplug/host/apiserver/apitest"
)

func family(t *testing.T, fams []*dto.MetricFamily, name string) *dto.MetricFamily {
	t.Helper()
	for _, f := range fams {
		if f.GetName() == name {
			return f
		}
	}
	t.Fatalf("no metric %s", name)
	return nil
}

// value returns the metric of family name whose labels include want.
func value(t *testing.T, fams []*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	t.Helper()
	f := family(t, fams, name)
next:
	for _, m := range f.GetMetric() {
		for k, v := range want {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		return m
	}
	t.Fatalf("no %s with labels %v", name, want)
	return nil
}

func TestMetricsFollowTheVMsAndPassTheLinter(t *testing.T) {
	r := apitest.Start(t, apitest.Spec{Name: "web", App: true}, apitest.Spec{Name: "db"})
	r.VMs["web"].Guest.SetDemand(2.5)
	// The event reaches the log before the observers: wait for the count.
	apitest.WaitFor(t, 10*time.Second, "web's scale-up counted", func() bool {
		fams, err := r.Metrics.Registry().Gather()
		if err != nil {
			return false
		}
		for _, f := range fams {
			if f.GetName() == "hotplug_scaling_actions_total" {
				return true
			}
		}
		return false
	})
	// Rejections come from the actuator's session code; the observer
	// call is what is under test here.
	r.Metrics.Rejected("db", actuator.RejectMalformed)
	r.Metrics.Rejected("db", actuator.RejectMalformed)

	fams, err := r.Metrics.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	web := map[string]string{"vm": "web"}
	st, _ := r.Client().VM(ctx(t), "web")
	if got := value(t, fams, "hotplug_vm_vcpus", web).GetGauge().GetValue(); got < 3 {
		t.Errorf("hotplug_vm_vcpus{vm=web} = %v, want the scaled-up count", got)
	}
	if got := value(t, fams, "hotplug_vm_policy_max_vcpus", web).GetGauge().GetValue(); got != 4 {
		t.Errorf("policy max %v", got)
	}
	if got := value(t, fams, "hotplug_vm_cpu_utilisation_ratio", web).GetGauge().GetValue(); got <= 0 || got > 3 {
		t.Errorf("utilisation ratio %v (a ratio, not a percentage)", got)
	}
	if got := value(t, fams, "hotplug_vm_runqueue_latency_seconds", map[string]string{"vm": "web", "percentile": "95"}).GetGauge().GetValue(); got <= 0 || got > 1 {
		t.Errorf("run-queue p95 %v s", got)
	}
	if got := value(t, fams, "hotplug_vm_app_sla_seconds", map[string]string{"vm": "web", "app": "web"}).GetGauge().GetValue(); got != 0.05 {
		t.Errorf("SLA %v s, want 0.05", got)
	}
	value(t, fams, "hotplug_vm_app_response_time_sla_ratio", map[string]string{"vm": "web", "app": "web"})
	if got := value(t, fams, "hotplug_scaling_actions_total", map[string]string{"vm": "web", "kind": "scale_up", "outcome": "ok"}).GetCounter().GetValue(); got < 1 {
		t.Errorf("scale-ups counted %v", got)
	}
	plug := value(t, fams, "hotplug_vcpu_plug_duration_seconds", web).GetHistogram()
	if plug.GetSampleCount() < 2 || plug.GetSampleSum() <= 0 || plug.GetSampleSum() > 30 {
		t.Errorf("plug latency: %d samples, sum %v s (one per vCPU added)", plug.GetSampleCount(), plug.GetSampleSum())
	}
	if got := value(t, fams, "hotplug_report_receive_errors_total", map[string]string{"vm": "db", "reason": "malformed"}).GetCounter().GetValue(); got != 2 {
		t.Errorf("malformed reports %v, want 2", got)
	}
	if got := value(t, fams, "hotplug_report_receive_errors_total", map[string]string{"vm": "web", "reason": "replayed"}).GetCounter().GetValue(); got != 0 {
		t.Errorf("replayed reports %v, want a 0 that exists before the first", got)
	}
	if got := value(t, fams, "hotplug_vm_forecast_overload_predicted_ratio", web).GetGauge().GetValue(); got < 0 || got > 1 {
		t.Errorf("forecast overload chance %v, want a ratio", got)
	}
	checkAlertMetrics(t, fams, r.Metrics.VMCollector())
	hot := value(t, fams, "hotplug_vm_hotspot", web).GetGauge().GetValue()
	if (hot == 1) != st.Hotspot && st.LastDecisionAt.IsZero() {
		t.Errorf("hotspot gauge %v, API %v", hot, st.Hotspot)
	}

	// The Prometheus linter, on the collectors we wrote and on the whole
	// registry.
	problems, err := testutil.CollectAndLint(r.Metrics.VMCollector())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}
	problems, err = testutil.GatherAndLint(r.Metrics.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}

	// The exposition as served, kept for `promtool check metrics`.
	resp, err := r.HTTPClient().Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(text), "# HELP hotplug_vm_vcpus ") {
		t.Fatalf("/metrics:\n%.500s", text)
	}
	if dir := os.Getenv("HOTPLUG_METRICS_OUT"); dir != "" {
		os.WriteFile(filepath.Join(dir, "metrics.txt"), text, 0o644)
	}
}
