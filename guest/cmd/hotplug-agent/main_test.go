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
			if code := run([]string{"--config", p}, new(bytes.Buffer), &errb); code != 2 {
				t.Fatalf("exit %d, want 2 (%s)", code, errb.String())
			}
			if !strings.Contains(errb.String(), tc.want) {
				t.Fatalf("got %q, want it to mention %q", errb.String(), tc.want)
			}
		})
	}
	var errb bytes.Buffer
	if code := run([]string{"--config", filepath.Join(dir, "nope.toml")}, new(bytes.Buffer), &errb); code != 2 {
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
	if code := run([]string{"check", "--config", cfg}, new(bytes.Buffer), &errb); code != 0 {
		t.Fatalf("good config: exit %d: %s", code, errb.String())
	}
	os.WriteFile(filepath.Join(apps, "web.toml"), []byte("name = \"web\"\npath = \"/var/log/x.log\"\nformat = \"nginx\"\nsla_typo = 1\n"), 0o644)
	errb.Reset()
	if code := run([]string{"check", "--config", cfg}, new(bytes.Buffer), &errb); code != 2 || !strings.Contains(errb.String(), "web.toml") {
		t.Fatalf("bad app config: exit %d: %s", code, errb.String())
	}
}

// TestPackagedConfigChecks: the agent.toml shipped in the .deb, with every
// setting uncommented, passes `hotplug-agent check` — its keys cannot drift
// from the binary's.
func TestPackagedConfigChecks(t *testing.T) {
	b, err := os.ReadFile("../../../packaging/hotplug-agent/agent.toml")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if len(line) > 1 && line[0] == '#' && line[1] >= 'a' && line[1] <= 'z' && strings.Contains(line, " = ") {
			line = line[1:]
			n++
		}
		out = append(out, line)
	}
	if n < 10 {
		t.Fatalf("only %d settings found", n)
	}
	dir := t.TempDir()
	text := strings.Join(out, "\n")
	// Point the paths somewhere this test may use.
	apps := filepath.Join(dir, "apps.d")
	os.MkdirAll(apps, 0o755)
	text = strings.ReplaceAll(text, `"/etc/hotplug-agent/apps.d"`, `"`+apps+`"`)
	p := filepath.Join(dir, "agent.toml")
	os.WriteFile(p, []byte(text), 0o644)
	var errb bytes.Buffer
	if code := run([]string{"check", "--config", p}, new(bytes.Buffer), &errb); code != 0 {
		t.Fatalf("packaged agent.toml, uncommented: exit %d: %s", code, errb.String())
	}
}

// TestHelpListsSubcommands: every subcommand the docs tell users to run is
// in --help.
func TestHelpListsSubcommands(t *testing.T) {
	var out bytes.Buffer
	run([]string{"--help"}, &out, new(bytes.Buffer))
	for _, sub := range []string{"hotplug-agent check", "hotplug-agent status", "hotplug-agent logstat --format"} {
		if !strings.Contains(out.String(), sub) {
			t.Errorf("--help lacks %q:\n%s", sub, out.String())
		}
	}
}
