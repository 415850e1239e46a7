package applog

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeConf(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadFileGood(t *testing.T) {
	dir := t.TempDir()
	p := writeConf(t, dir, "shop.toml", `
path = "/var/log/nginx/access*.log"
format = "nginx"
duration_source = "upstream"
drop_statuses = ["5xx", 429, "404"]
[sla]
percentile = "p95"
target = "300ms"
`)
	a, err := LoadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if a.Name != "shop" || !a.Parse.Upstream || a.SLAPercentile != 0.95 || a.SLATarget != 0.3 {
		t.Fatalf("%+v", a)
	}
	for s, want := range map[int]bool{500: true, 599: true, 429: true, 404: true, 200: false, 499: false} {
		if a.Drop[s] != want {
			t.Errorf("drop[%d] = %v", s, a.Drop[s])
		}
	}
	p = writeConf(t, dir, "api.toml", `
name = "api"
path = "/srv/api/log.jsonl"
format = "json"
duration_unit = "ms"
time_format = "unix_ms"
[fields]
time = "ts"
duration = "took"
[sla]
mean = "150ms"
`)
	a, err = LoadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if a.Parse.Unit != 1e-3 || a.Parse.Fields.Time != "ts" || a.SLAMean != 0.15 || !a.Drop[503] || a.Drop[404] {
		t.Fatalf("%+v", a)
	}
}

func TestLoadFileRejectsWithFileAndKey(t *testing.T) {
	tests := []struct{ body, key string }{
		{`path = "/a"` + "\nformat = \"nginx\"\nsla_mean = \"1s\"", "sla_mean"},
		{`path = "/a"` + "\nformat = \"nginx\"\n[sla]\nmedian = \"1s\"", "sla.median"},
		{`format = "nginx"`, "path"},
		{`path = "relative.log"` + "\nformat = \"nginx\"", "path"},
		{`path = "/a/[x"` + "\nformat = \"nginx\"", "path"},
		{`path = "/a"` + "\nformat = \"nginxx\"", "format"},
		{`path = "/a"`, "format"},
		{`path = "/a"` + "\nformat = \"nginx\"\nduration_unit = \"fortnights\"", "duration_unit"},
		{`path = "/a"` + "\nformat = \"clf\"\nduration_unit = \"ms\"", "duration_unit"},
		{`path = "/a"` + "\nformat = \"w3c\"\nduration_source = \"upstream\"", "duration_source"},
		{`path = "/a"` + "\nformat = \"nginx\"\nduration_source = \"backend\"", "duration_source"},
		{`path = "/a"` + "\nformat = \"nginx\"\ndrop_statuses = [\"6xx\"]", "drop_statuses[0]"},
		{`path = "/a"` + "\nformat = \"nginx\"\ndrop_statuses = [\"5xx\", 1000]", "drop_statuses[1]"},
		{`path = "/a"` + "\nformat = \"regex\"", "regex"},
		{`path = "/a"` + "\nformat = \"regex\"\nregex = \"(\"", "regex"},
		{`path = "/a"` + "\nformat = \"nginx\"\nregex = \"x\"", "regex"},
		{`path = "/a"` + "\nformat = \"json\"\ntime_format = \"soon\"", "time_format"},
		{`path = "/a"` + "\nformat = \"nginx\"\n[fields]\ntime = \"t\"", "fields"},
		{`path = "/a"` + "\nformat = \"nginx\"\n[sla]\nmean = \"-1s\"", "sla.mean"},
		{`path = "/a"` + "\nformat = \"nginx\"\n[sla]\npercentile = \"p100\"\ntarget = \"1s\"", "sla.percentile"},
		{`path = "/a"` + "\nformat = \"nginx\"\n[sla]\npercentile = 0.95", "sla"},
		{`path = "/a"` + "\nformat = \"nginx\"\n[sla]\nmean = \"1s\"\npercentile = 0.9\ntarget = \"1s\"", "sla"},
		{`path = "/a"` + "\nformat = \"nginx\"\nmax_line_bytes = 10", "max_line_bytes"},
		{`name = "../etc"` + "\npath = \"/a\"\nformat = \"nginx\"", "name"},
	}
	dir := t.TempDir()
	for i, tc := range tests {
		p := writeConf(t, dir, "app.toml", tc.body)
		_, err := LoadFile(p)
		if err == nil {
			t.Errorf("%d: accepted:\n%s", i, tc.body)
			continue
		}
		if !strings.Contains(err.Error(), p+": "+tc.key+":") {
			t.Errorf("%d: error %q does not name %s and key %q", i, err, p, tc.key)
		}
	}
	p := writeConf(t, dir, "broken.toml", "path = \"/a\nformat")
	if _, err := LoadFile(p); err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "line") {
		t.Errorf("syntax error: %v", err)
	}
}

func TestLoadDir(t *testing.T) {
	if apps, err := LoadDir(filepath.Join(t.TempDir(), "none")); err != nil || apps != nil {
		t.Fatalf("missing dir: %v %v", apps, err)
	}
	dir := t.TempDir()
	writeConf(t, dir, "a.toml", "path = \"/a\"\nformat = \"nginx\"")
	writeConf(t, dir, "b.toml", "name = \"a\"\npath = \"/b\"\nformat = \"nginx\"")
	writeConf(t, dir, "c.toml", "path = \"/c\"\nformat = \"bad\"")
	writeConf(t, dir, "README", "not a config")
	_, err := LoadDir(dir)
	if err == nil || !strings.Contains(err.Error(), "already used by") || !strings.Contains(err.Error(), "c.toml: format") {
		t.Fatalf("want both the duplicate and the bad format reported, got %v", err)
	}
	os.Remove(filepath.Join(dir, "b.toml"))
	os.Remove(filepath.Join(dir, "c.toml"))
	apps, err := LoadDir(dir)
	if err != nil || len(apps) != 1 || apps[0].Name != "a" {
		t.Fatalf("%v %v", apps, err)
	}
}
