package apiserver_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// alertsDir holds the alerting rules the actuator's package ships.
var alertsDir = filepath.Join("..", "..", "packaging", "hotplug-actuator")

// TestAlertRules runs the rules' promtool unit tests.
func TestAlertRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: install Debian's prometheus package (integration/setup-host.sh does)")
	}
	for _, args := range [][]string{{"check", "rules", "alerts.yml"}, {"test", "rules", "alerts_test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = alertsDir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// checkAlertMetrics fails for every metric the alerting rules name that the
// actuator does not export (a renamed metric would silence an alert).
func checkAlertMetrics(t *testing.T, fams []*dto.MetricFamily, vms prometheus.Collector) {
	t.Helper()
	rules, err := os.ReadFile(filepath.Join(alertsDir, "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, f := range fams {
		exported[f.GetName()] = true
	}
	ch := make(chan *prometheus.Desc, 64)
	go func() { vms.Describe(ch); close(ch) }()
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range ch {
		if m := fq.FindStringSubmatch(d.String()); m != nil {
			exported[m[1]] = true
		}
	}
	var used []string
	for _, line := range strings.Split(string(rules), "\n") {
		if e, ok := strings.CutPrefix(strings.TrimSpace(line), "expr:"); ok {
			used = append(used, regexp.MustCompile(`hotplug_[a-z0-9_]+`).FindAllString(e, -1)...)
		}
	}
	if len(used) < 8 {
		t.Fatalf("found only %d metric names in the rules' expressions: %v", len(used), used)
	}
	for _, name := range used {
		if !exported[name] {
			t.Errorf("alerts.yml uses %s, which the actuator does not export", name)
		}
	}
}
