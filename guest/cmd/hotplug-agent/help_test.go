package main

import (
	"bytes"
	"strings"
	"testing"
)

// Every way of asking for help prints usage on stdout and exits 0, without
// starting the daemon; a stray argument is a named error, not a daemon.
func TestHelpEverywhere(t *testing.T) {
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, []string{"logstat", "status", "check", "-transport"}},
		{[]string{"-h"}, []string{"logstat", "-transport"}},
		{[]string{"help"}, []string{"logstat", "-transport"}},
		{[]string{"check", "--help"}, []string{"-config"}},
		{[]string{"help", "check"}, []string{"-config"}},
		{[]string{"logstat", "--help"}, []string{"-format", "-app"}},
		{[]string{"help", "logstat"}, []string{"-format", "-app"}},
		{[]string{"status", "-h"}, []string{"-json", "-file"}},
		{[]string{"help", "status"}, []string{"-json", "-file"}},
	} {
		var out, errb bytes.Buffer
		if code := run(c.args, &out, &errb); code != 0 || errb.Len() != 0 {
			t.Errorf("%q: exit %d, stderr %q; want 0 and nothing on stderr", c.args, code, errb.String())
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%q: stdout lacks %q:\n%s", c.args, w, out.String())
			}
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `"frobnicate"`},
		{[]string{"--config", "/nonexistent/agent.toml", "extra"}, `stray argument "extra"`},
		{[]string{"help", "frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"help", "check", "status"}, "takes one command"},
		{[]string{"check", "extra"}, `stray argument "extra"`},
	} {
		var out, errb bytes.Buffer
		if code := run(c.args, &out, &errb); code != 2 || !strings.Contains(errb.String(), c.want) {
			t.Errorf("%q: exit %d, stderr %q; want 2 and %q", c.args, code, errb.String(), c.want)
		}
	}
}
