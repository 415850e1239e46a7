// Command hotplug-actuator runs on the host: it receives each VM's agent
// reports, decides how many vCPUs the VM needs and hot-plugs or unplugs
// them through the hypervisor, logging every scaling event.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/hotplugheaven/hotplug/internal/cmdline"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const defaultConfig = "/etc/hotplug-actuator/actuator.toml"

const usage = `hotplug-actuator — Hot-Plug Heaven host actuator

Usage:
  hotplug-actuator run    [--config FILE]       run the actuator (the default command)
  hotplug-actuator status [--json]              table of every VM (through the API)
  hotplug-actuator explain VM [--json]          one VM, and which rule fired on which samples
  hotplug-actuator events [--vm NAME] [--since TIME] [--until TIME] [--follow] [--json]
                                                scaling events (through the API; --log FILE reads the file offline)
  hotplug-actuator pause VM | resume VM         stop or restart scaling of a VM
  hotplug-actuator set-vcpus VM N               resize a VM now, within its policy
  hotplug-actuator set-memory VM SIZE           resize a VM's memory now (e.g. 2GiB), within its device
  hotplug-actuator check  [--config FILE]       validate the configuration and exit
  hotplug-actuator simulate [flags] TRACE...    replay CPU demand traces through the engine's policies
                                                (PlanetLab, Bitbrains, timestamp,demand_cpus CSV; --help)
  hotplug-actuator --version

The configuration (TOML, default %s) lists the VMs: for each, its QMP
socket, the channel its agent reports on, and its scaling policy. Every key
is documented in the packaged example configuration and the README.

The commands that talk to a running actuator use its API socket (api.socket
of the configuration, default /run/hotplug-actuator/api.sock; --socket PATH),
or --url URL --token-file FILE over TCP. The API is documented in docs/api.md.
`

// commands are the subcommands run dispatches to.
var commands = map[string]bool{"run": true, "check": true, "events": true, "status": true, "explain": true,
	"pause": true, "resume": true, "set-vcpus": true, "set-memory": true, "simulate": true, "version": true, "help": true}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	} else if len(args) > 0 && cmdline.WantsHelp(args[:1]) {
		cmd, args = "help", nil // hotplug-actuator --help: the commands, not run's flags
	}
	switch cmd {
	case "run":
		return cmdRun(args, stdout, stderr)
	case "check":
		return cmdCheck(args, stdout, stderr)
	case "events":
		return cmdEvents(args, stdout, stderr)
	case "status":
		return cmdStatus(args, stdout, stderr)
	case "explain":
		return cmdExplain(args, stdout, stderr)
	case "pause":
		return cmdPause(args, stdout, stderr)
	case "resume":
		return cmdResume(args, stdout, stderr)
	case "set-vcpus":
		return cmdSetVCPUs(args, stdout, stderr)
	case "set-memory":
		return cmdSetMemory(args, stdout, stderr)
	case "simulate":
		return cmdSimulate(args, stdout, stderr)
	case "version":
		if len(args) > 0 && !cmdline.WantsHelp(args) {
			fmtErr(stderr, "hotplug-actuator version", "unexpected argument %q", args[0])
			return 2
		}
		fmt.Fprintln(stdout, "hotplug-actuator", version)
		return 0
	case "help":
		switch {
		case len(args) == 0:
			fmt.Fprintf(stdout, usage, defaultConfig)
			return 0
		case len(args) > 1:
			fmtErr(stderr, "hotplug-actuator help", "takes one command, got %q", args)
			return 2
		case args[0] == "help" || args[0] == "version":
			fmt.Fprintf(stdout, usage, defaultConfig)
			return 0
		}
		if !commands[args[0]] {
			fmtErr(stderr, "hotplug-actuator help", "unknown command %q (commands: run, check, status, explain, events, pause, resume, set-vcpus, set-memory, simulate, version)", args[0])
			return 2
		}
		return run([]string{args[0], "--help"}, stdout, stderr) // that command's usage
	}
	fmt.Fprintf(stderr, "hotplug-actuator: unknown command %q\n\n", cmd)
	fmt.Fprintf(stderr, usage, defaultConfig)
	return 2
}
