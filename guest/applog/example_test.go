package applog

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestPackagedExampleLoads: the example apps.d file shipped in the .deb,
// with its settings uncommented, is a valid configuration — so its keys
// cannot drift from the loader's.
func TestPackagedExampleLoads(t *testing.T) {
	b, err := os.ReadFile("../../packaging/hotplug-agent/apps.d/example.toml.sample")
	if err != nil {
		t.Fatal(err)
	}
	setting := regexp.MustCompile(`^#(\[?[a-z_]+)`)
	var out []string
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if setting.MatchString(line) {
			line = line[1:]
			n++
		}
		out = append(out, line)
	}
	if n < 8 {
		t.Fatalf("only %d settings found to uncomment", n)
	}
	p := filepath.Join(t.TempDir(), "web.toml")
	if err := os.WriteFile(p, []byte(strings.Join(out, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	app, err := LoadFile(p)
	if err != nil {
		t.Fatalf("the packaged example, uncommented, does not load: %v", err)
	}
	if app.Name != "web" || app.Path != "/var/log/nginx/access.log" {
		t.Fatalf("loaded %+v", app)
	}
}
