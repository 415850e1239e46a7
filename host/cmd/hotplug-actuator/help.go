package main

import (
	"flag"
	"fmt"
	"io"
)

// wantsHelp reports whether args ask for help (-h, -help or --help before
// any "--"): usage goes to stdout and the command exits 0, as a person
// asking for it expects, not to stderr as after a mistake.
func wantsHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help", "-h=true", "--help=true":
			return true
		}
	}
	return false
}

// showUsage prints fs's usage on w.
func showUsage(fs *flag.FlagSet, w io.Writer) {
	out := fs.Output()
	fs.SetOutput(w)
	fs.Usage()
	fs.SetOutput(out)
}

// parseFlags parses args with fs. It returns ok = false when the command
// is over, with its exit status: 0 after --help (usage on stdout), 2 after
// a bad flag (the flag package said why on stderr) or an argument the
// command does not take (named).
func parseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (code int, ok bool) {
	if wantsHelp(args) {
		showUsage(fs, stdout)
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
