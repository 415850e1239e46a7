package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the logstat golden files")

// Fixtures are the parser's copies of the real logs (see their README).
const fx = "../../applog/parse/testdata/"

func TestLogstatGolden(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{"ingress", []string{"--format", "ingress_nginx", fx + "beats_nginx_ingress_controller.log"}},
		{"access_log", []string{"--format", "combined", fx + "lnav_logfile_access_log.0"}},
		{"nasa_clf", []string{"--format", "clf", fx + "nasa_Aug95_head300.log"}},
		{"nasa_tsv", []string{"--app", "testdata/logstat/nasa_tsv.toml", fx + "nasa_19950801_head1000.tsv"}},
		{"haproxy", []string{"--format", "haproxy", fx + "lnav_logfile_haproxy.0"}},
		{"w3c_big", []string{"--format", "w3c", fx + "lnav_logfile_w3c_big.0"}},
		{"w3c_1", []string{"--format", "w3c", fx + "lnav_logfile_w3c.1"}},
		{"w3c_3", []string{"--format", "w3c", fx + "lnav_logfile_w3c.3"}},
		{"w3c_6", []string{"--format", "w3c", fx + "lnav_logfile_w3c.6"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := cmdLogstat(tc.args, &out, &errb); code != 0 {
				t.Fatalf("exit %d: %s", code, errb.String())
			}
			var parsed logstatOut
			if err := json.Unmarshal(out.Bytes(), &parsed); err != nil {
				t.Fatalf("output is not JSON: %v", err)
			}
			golden := filepath.Join("testdata", "logstat", tc.name+".json")
			if *update {
				os.WriteFile(golden, out.Bytes(), 0o644)
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update once to create it, then check it by hand)", err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Fatalf("output differs from %s:\n%s", golden, out.String())
			}
		})
	}
}

func TestLogstatFigures(t *testing.T) {
	// Figures checked independently of the golden files.
	var out, errb bytes.Buffer
	if code := cmdLogstat([]string{"--format", "haproxy", fx + "lnav_logfile_haproxy.0"}, &out, &errb); code != 0 {
		t.Fatal(errb.String())
	}
	var s logstatOut
	json.Unmarshal(out.Bytes(), &s)
	// 17 lines: 13 requests, 3 start-up messages and 1 SSL error.
	if s.Lines != 17 || s.Requests != 13 || s.Malformed["not_request"] != 4 || s.InterArrival.Method != "timestamps" {
		t.Fatalf("%+v", s)
	}
	// %Ta of the 13 requests, by hand from the file: sum 8344 ms.
	if m := s.ServiceTime.Mean; m < 8.344/13-1e-9 || m > 8.344/13+1e-9 {
		t.Errorf("mean service time %v, want %v", m, 8.344/13)
	}
	if s.First != "2019-02-25T16:19:48.143Z" || s.Last != "2019-02-25T16:20:14.317Z" {
		t.Errorf("first %s last %s", s.First, s.Last)
	}

	out.Reset()
	cmdLogstat([]string{"--format", "combined", fx + "lnav_logfile_access_log.0"}, &out, &errb)
	json.Unmarshal(out.Bytes(), &s)
	if s.ServiceTime != nil || s.ResponseTime != nil || !strings.Contains(s.Note, "arrivals only") || s.Requests != 3 {
		t.Errorf("a log without durations must say so: %s", out.String())
	}
}

func TestLogstatErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("path = \"/a\"\nformat = \"nginx\"\nsla_p95 = 1\n"), 0o644)
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{fx + "lnav_logfile_haproxy.0"}, 2, "--format is required"},
		{[]string{"--format", "nope", fx + "lnav_logfile_haproxy.0"}, 2, "unknown format"},
		{[]string{"--format", "haproxy"}, 2, "no log file"},
		{[]string{"--app", bad, "x"}, 2, bad + ": sla_p95: unknown key"},
		{[]string{"--format", "haproxy", filepath.Join(dir, "missing.log")}, 1, "missing.log"},
	}
	for _, tc := range tests {
		var out, errb bytes.Buffer
		if code := cmdLogstat(tc.args, &out, &errb); code != tc.code || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, errb.String(), tc.code, tc.want)
		}
	}
}

func TestAppsDirErrorsStopTheAgent(t *testing.T) {
	dir := t.TempDir()
	apps := filepath.Join(dir, "apps.d")
	os.Mkdir(apps, 0o755)
	os.WriteFile(filepath.Join(apps, "web.toml"), []byte("path = \"/a\"\nformat = \"nginks\"\n"), 0o644)
	conf := filepath.Join(dir, "agent.toml")
	os.WriteFile(conf, []byte("apps_dir = \""+apps+"\"\nstate_dir = \""+dir+"\"\ntransport = \"tcp\"\ntcp_address = \"127.0.0.1:1\"\n"), 0o644)
	var errb bytes.Buffer
	if code := run([]string{"--config", conf}, new(bytes.Buffer), &errb); code != 2 || !strings.Contains(errb.String(), "web.toml: format") {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
}
