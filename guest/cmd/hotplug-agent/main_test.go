package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBadConfigIsOneClearLine(t *testing.T) {
	dir := t.TempDir()
	tests := []struct{ name, file, want string }{
		{"unknown key", "transprot = \"tcp\"\n", `unknown key "transprot"`},
		{"bad duration", "interval = \"often\"\n", "not a duration"},
		{"bad transport", "transport = \"pigeon\"\n", "transport: must be"},
		{"tcp without address", "transport = \"tcp\"\n", "tcp_address: required"},
		{"bad level", "log_level = \"loud\"\n", "log_level"},
		{"interval too short", "interval = \"1ms\"\n", "interval"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, "agent.toml")
			os.WriteFile(p, []byte(tc.file), 0o644)
			var errb bytes.Buffer
			if code := run([]string{"--config", p}, &errb); code != 2 {
				t.Fatalf("exit %d, want 2 (%s)", code, errb.String())
			}
			if !strings.Contains(errb.String(), tc.want) {
				t.Fatalf("got %q, want it to mention %q", errb.String(), tc.want)
			}
		})
	}
	var errb bytes.Buffer
	if code := run([]string{"--config", filepath.Join(dir, "nope.toml")}, &errb); code != 2 {
		t.Fatalf("explicit missing config file: exit %d", code)
	}
}

func TestCheckCommand(t *testing.T) {
	dir := t.TempDir()
	apps := filepath.Join(dir, "apps.d")
	os.MkdirAll(apps, 0o755)
	cfg := filepath.Join(dir, "agent.toml")
	os.WriteFile(cfg, []byte("transport = \"tcp\"\ntcp_address = \"127.0.0.1:1\"\napps_dir = \""+apps+"\"\nstate_dir = \""+dir+"\"\nstatus_file = \"\"\n"), 0o644)
	var errb bytes.Buffer
	if code := run([]string{"check", "--config", cfg}, &errb); code != 0 {
		t.Fatalf("good config: exit %d: %s", code, errb.String())
	}
	os.WriteFile(filepath.Join(apps, "web.toml"), []byte("name = \"web\"\npath = \"/var/log/x.log\"\nformat = \"nginx\"\nsla_typo = 1\n"), 0o644)
	errb.Reset()
	if code := run([]string{"check", "--config", cfg}, &errb); code != 2 || !strings.Contains(errb.String(), "web.toml") {
		t.Fatalf("bad app config: exit %d: %s", code, errb.String())
	}
}
