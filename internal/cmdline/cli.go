// Package cmdline holds what both binaries' command lines share: how a person
// asks for help, and where the answer goes.
package cmdline

import (
	"flag"
	"io"
)

// WantsHelp reports whether args ask for help (-h, -help or --help before
// any "--"). The usage then goes to stdout and the command exits 0, as a
// person asking for it expects, not to stderr as after a mistake.
func WantsHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help", "-h=true", "-help=true", "--help=true":
			return true
		}
	}
	return false
}

// ShowUsage prints fs's usage on w; fs's own output is left as it was.
func ShowUsage(fs *flag.FlagSet, w io.Writer) {
	out := fs.Output()
	fs.SetOutput(w)
	fs.Usage()
	fs.SetOutput(out)
}
