package main

import (
	"bytes"
	"strings"
	"testing"
)

// Every way of asking for help prints that command's usage on stdout and
// exits 0; mistakes exit 2 and name what was wrong on stderr.
func TestHelpEverywhere(t *testing.T) {
	top := []string{"run ", "status", "events", "simulate", "set-vcpus"} // the command list
	cases := []struct {
		args []string
		want []string // in stdout
	}{
		{[]string{"--help"}, top},
		{[]string{"-h"}, top},
		{[]string{"help"}, top},
		{[]string{"help", "help"}, top},
	}
	for cmd := range commands {
		if cmd == "help" || cmd == "version" {
			continue
		}
		name := "hotplug-actuator " + cmd
		want := []string{name, "-config"} // its name and its flags
		if cmd == "simulate" {
			want = []string{"simulate", "-policies"}
		}
		cases = append(cases,
			struct {
				args []string
				want []string
			}{[]string{cmd, "--help"}, want},
			struct {
				args []string
				want []string
			}{[]string{cmd, "-h"}, want},
			struct {
				args []string
				want []string
			}{[]string{"help", cmd}, want})
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		code := run(c.args, &out, &errb)
		if code != 0 || errb.Len() != 0 {
			t.Errorf("%q: exit %d, stderr %q; want 0 and nothing on stderr", c.args, code, errb.String())
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%q: stdout lacks %q:\n%s", c.args, w, out.String())
			}
		}
	}
}

func TestMistakesNameWhatWasWrong(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"help", "frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"help", "run", "check"}, "takes one command"},
		{[]string{"run", "extra"}, `unexpected argument "extra"`},
		{[]string{"check", "--config", "x.toml", "extra"}, `unexpected argument "extra"`},
		{[]string{"version", "extra"}, `unexpected argument "extra"`},
		{[]string{"status", "--bogus"}, "-bogus"},
	} {
		var out, errb bytes.Buffer
		if code := run(c.args, &out, &errb); code != 2 || !strings.Contains(errb.String(), c.want) {
			t.Errorf("%q: exit %d, stderr %q; want 2 and %q", c.args, code, errb.String(), c.want)
		}
	}
}
