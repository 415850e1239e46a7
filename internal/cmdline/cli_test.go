package cmdline

import (
	"bytes"
	"flag"
	"testing"
)

func TestWantsHelp(t *testing.T) {
	for _, c := range []struct {
		args []string
		want bool
	}{
		{nil, false}, {[]string{"-h"}, true}, {[]string{"--config", "x", "--help"}, true},
		{[]string{"-help"}, true}, {[]string{"--", "-h"}, false}, {[]string{"-hx"}, false}, {[]string{"help"}, false},
	} {
		if got := WantsHelp(c.args); got != c.want {
			t.Errorf("WantsHelp(%q) = %v, want %v", c.args, got, c.want)
		}
	}
}

func TestShowUsageLeavesOutputAlone(t *testing.T) {
	var errb, out bytes.Buffer
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(&errb)
	fs.String("config", "", "the file")
	ShowUsage(fs, &out)
	if !bytes.Contains(out.Bytes(), []byte("-config")) || errb.Len() != 0 || fs.Output() != &errb {
		t.Fatalf("usage %q on w, %q on the flag set's output", out.String(), errb.String())
	}
}
