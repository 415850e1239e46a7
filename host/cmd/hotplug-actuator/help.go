package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/hotplugheaven/hotplug/internal/cmdline"
)

// parseFlags parses args with fs. It returns ok = false when the command
// is over, with its exit status: 0 after --help (usage on stdout), 2 after
// a bad flag (the flag package said why on stderr) or an argument the
// command does not take (named).
func parseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (code int, ok bool) {
	if cmdline.WantsHelp(args) {
		cmdline.ShowUsage(fs, stdout)
		return 0, false
	}
	if fs.Parse(args) != nil {
		return 2, false
	}
	if fs.NArg() > 0 {
		fmtErr(stderr, fs.Name(), "unexpected argument %q (it takes only flags; --help lists them)", fs.Arg(0))
		return 2, false
	}
	return 0, true
}

func fmtErr(w io.Writer, cmd, format string, a ...any) {
	fmt.Fprintf(w, "%s: %s\n", cmd, fmt.Sprintf(format, a...))
}
