package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/hotplugheaven/hotplug/guest/agent"
	"github.com/hotplugheaven/hotplug/internal/cmdline"
)

// cmdStatus prints what the running agent sees, from the status file it
// rewrites every sample: useful inside a guest when the host is
// unreachable, since it needs neither the actuator nor the agent's
// privileges.
func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("hotplug-agent status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", defaultConfig, "config file, for status_file (a missing default file is not an error)")
	file := fs.String("file", "", "status file (default: status_file of the config, else "+agent.DefaultStatusFile+")")
	asJSON := fs.Bool("json", false, "print the status file as JSON")
	if cmdline.WantsHelp(args) {
		cmdline.ShowUsage(fs, stdout)
		return 0
	}
	if fs.Parse(args) != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "hotplug-agent status: takes no arguments, got %q\n", fs.Arg(0))
		return 2
	}
	path := *file
	if path == "" {
		cfg := defaults()
		if b, err := os.ReadFile(*configPath); err == nil {
			if _, err := toml.Decode(string(b), &cfg); err != nil {
				fmt.Fprintf(stderr, "hotplug-agent status: config %s: %v (or pass --file)\n", *configPath, oneLine(err.Error()))
				return 2
			}
		} else if !errors.Is(err, os.ErrNotExist) || *configPath != defaultConfig {
			fmt.Fprintf(stderr, "hotplug-agent status: config: %v\n", err)
			return 2
		}
		path = cfg.StatusFile
		if path == "" {
			fmt.Fprintln(stderr, "hotplug-agent status: status_file is empty in the config: the agent writes no status")
			return 1
		}
	}
	f, err := agent.ReadStatusFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(stderr, "hotplug-agent status: no status file at %s: is hotplug-agent running? (it writes the file every sample)\n", path)
		} else {
			fmt.Fprintf(stderr, "hotplug-agent status: %s\n", oneLine(err.Error()))
		}
		return 1
	}
	now := time.Now()
	if *asJSON {
		b, _ := json.MarshalIndent(f, "", "  ")
		fmt.Fprintf(stdout, "%s\n", b)
	} else {
		printAgentStatus(stdout, f, now)
	}
	if f.Stale(now) {
		fmt.Fprintf(stderr, "hotplug-agent status: written %s ago, though the agent rewrites it every %gs: it looks stopped (pid %d)\n",
			age(now, f.WrittenAt), f.IntervalSeconds, f.PID)
		return 1
	}
	return 0
}

func printAgentStatus(w io.Writer, f agent.StatusFile, now time.Time) {
	fmt.Fprintf(w, "hotplug-agent %s (pid %d), status written %s ago, sampling every %gs\n",
		f.AgentVersion, f.PID, age(now, f.WrittenAt), f.IntervalSeconds)
	if f.Connected {
		fmt.Fprintf(w, "actuator: connected over %s\n", f.Transport)
	} else {
		fmt.Fprintf(w, "actuator: NOT connected over %s", f.Transport)
		if f.LastError != "" {
			fmt.Fprintf(w, "; last error: %s", f.LastError)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "reports: %d sent, %d dropped, %d waiting to be sent\n", f.ReportsSent, f.ReportsDropped, f.ReportsQueued)
	if f.Connected && f.LastError != "" {
		fmt.Fprintf(w, "last error: %s\n", f.LastError)
	}
	fmt.Fprintln(w, "sources:")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, s := range f.Sources {
		state := "in use"
		if !s.InUse {
			state = "NOT USED"
		}
		if s.Error != "" {
			state += ": " + s.Error
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", s.Name, s.Path, state)
	}
	tw.Flush()
	if len(f.Extras) > 0 {
		fmt.Fprintf(w, "extra measurements: %s\n", strings.Join(f.Extras, ", "))
	}
	r := f.LastReport
	if r == nil {
		fmt.Fprintln(w, "no report sampled yet")
		return
	}
	fmt.Fprintf(w, "last report #%d, %s ago: CPUs online %s (present %s), busy %.2f CPUs, waiting %.2f tasks, load1 %.2f",
		r.Seq, age(now, r.At), r.Online, r.Present, r.BusyCPUs, r.WaitingTasks, r.Load1)
	if r.PSISomeAvg10 > 0 {
		fmt.Fprintf(w, ", PSI some %.1f%%", r.PSISomeAvg10)
	}
	if r.RunQSource != "" {
		fmt.Fprintf(w, ", run-queue p95 %.2fms (%s)", 1000*r.RunQP95Seconds, r.RunQSource)
	}
	fmt.Fprintf(w, ", %d MiB available", r.MemAvailableBytes>>20)
	if len(r.Apps) > 0 {
		fmt.Fprintf(w, ", apps %s", strings.Join(r.Apps, ", "))
	}
	fmt.Fprintln(w)
}

func age(now, t time.Time) string {
	d := now.Sub(t)
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
