package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"

	"github.com/hotplugheaven/hotplug/host/sim"
	"github.com/hotplugheaven/hotplug/internal/cmdline"
)

const simulateUsage = `hotplug-actuator simulate — replay CPU demand traces through the engine

Usage:
  hotplug-actuator simulate [flags] PATH...

Each PATH is a trace file or a folder of them: PlanetLab CoMon (one CPU %%
per line every 300 s), Bitbrains GWA-T-12 CSV, or plain CSV
"timestamp,demand_cpus". Every VM runs through every policy with the same
engine the actuator runs; bad files are reported and skipped.

Policies: %s.
A --policy-file (TOML) changes their keys or adds policies:
  [predictive]
  min_gain = 0.02
  [predictive-slow]
  mode = "predictive"
  forecast_half_life = "12h"

With --sweep, each dynamic policy runs over its mode's main knob instead
(threshold: upper/remove_below, sandpiper: target, vpa:
vpa_percentile/vpa_margin, predictive: min_gain; values chosen on the
development day) and the output is its frontier — vCPU-hours ÷ the
oracle's against overload time — and every policy's vCPU-hours at matched
overload times, beside hindsight bounds. Each PATH is reported on its own
and, when there are several, all together.

Flags:
`

func cmdSimulate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("hotplug-actuator simulate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var names []string
	for _, p := range sim.DefaultPolicies() {
		names = append(names, p.Name)
	}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), simulateUsage, strings.Join(names, ", "))
		fs.PrintDefaults()
	}
	input := fs.String("input", "auto", "trace format: auto, planetlab, bitbrains or csv")
	requested := fs.Int("requested", 8, "vCPUs a VM asked for (PlanetLab demand = CPU % × this; also for plain CSV)")
	policies := fs.String("policies", "", "comma-separated policies to run (default: all)")
	policyFile := fs.String("policy-file", "", "TOML file changing policies' keys or adding policies")
	plug := fs.Duration("plug-time", sim.DefaultActuation.PlugTime, "time to add one vCPU (the old allocation holds meanwhile)")
	unplug := fs.Duration("unplug-time", sim.DefaultActuation.UnplugTime, "time to remove one vCPU")
	initial := fs.Int("initial", 0, "vCPUs each VM starts with (0: its requested size)")
	format := fs.String("format", "table", "output: table, json or csv")
	plotFile := fs.String("plot", "", "draw the trade-off and one VM's timeline into this .svg or .png file")
	plotVM := fs.String("plot-vm", "", "VM for the timeline (default: the first whose peak reaches half its size)")
	decisions := fs.String("decisions", "", "print this VM's decision sequence under every policy as JSON lines, instead of the summary")
	workers := fs.Int("workers", 0, "VMs replayed in parallel (default: one per CPU)")
	sweep := fs.Bool("sweep", false, "run each policy over its knob and report frontiers at matched overload (see above)")
	sweepGrid := fs.Bool("sweep-grid", false, "with --sweep: the whole grid of the two-knob modes, not the path chosen on the development day")
	if cmdline.WantsHelp(args) {
		cmdline.ShowUsage(fs, stdout)
		return 0
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "hotplug-actuator simulate: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() == 0 {
		return fail("no trace files or folders given (see --help)")
	}
	if !slices.Contains([]string{"table", "json", "csv"}, *format) {
		return fail("--format: want table, json or csv, got %q", *format)
	}
	if ext := strings.ToLower(filepath.Ext(*plotFile)); *plotFile != "" && ext != ".svg" && ext != ".png" {
		return fail("--plot: want a .svg or .png file name, got %q", *plotFile)
	}
	if *requested < 1 || *requested > 1024 {
		return fail("--requested: want 1 to 1024 vCPUs, got %d", *requested)
	}
	pols := sim.DefaultPolicies()
	if *policyFile != "" {
		f, err := os.Open(*policyFile)
		if err != nil {
			return fail("%v", err)
		}
		pols, err = sim.ParsePolicies(f, pols)
		f.Close()
		if err != nil {
			return fail("%s: %v", *policyFile, err)
		}
	}
	if *policies != "" {
		var chosen []sim.Policy
		for _, n := range strings.Split(*policies, ",") {
			i := slices.IndexFunc(pols, func(p sim.Policy) bool { return p.Name == strings.TrimSpace(n) })
			if i < 0 {
				var known []string
				for _, p := range pols {
					known = append(known, p.Name)
				}
				return fail("--policies: unknown policy %q (known: %s)", n, strings.Join(known, ", "))
			}
			chosen = append(chosen, pols[i])
		}
		pols = chosen
	}
	if os.Getenv("GOGC") == "" {
		// A batch run whose live heap is small (a trace per worker) but
		// whose engines allocate per decision: fewer collections for a
		// somewhat larger heap make it about a third faster.
		debug.SetGCPercent(400)
	}
	act := sim.Actuation{PlugTime: *plug, UnplugTime: *unplug, Initial: *initial}
	traces := sim.Read(fs.Args(), sim.ReadOptions{Format: sim.Format(*input), Requested: *requested})
	skip := func(err error) { fmt.Fprintf(stderr, "hotplug-actuator simulate: skipped: %v\n", err) }

	if *sweepGrid && !*sweep {
		return fail("--sweep-grid needs --sweep")
	}
	if *sweep {
		if *decisions != "" || *plotVM != "" {
			return fail("--sweep: --decisions and --plot-vm do not apply")
		}
		return runSweep(fs.Args(), sim.ReadOptions{Format: sim.Format(*input), Requested: *requested},
			sim.SweepConfig{Policies: pols, Actuation: act, Grid: *sweepGrid, Workers: *workers}, *format, *plotFile, stdout, stderr)
	}

	if *decisions != "" {
		return printDecisions(traces, *decisions, pols, act, stdout, stderr)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := sim.Simulate(ctx, traces, sim.Config{Policies: pols, Actuation: act, Workers: *workers, TimelineVM: *plotVM}, skip)
	if err != nil {
		fmt.Fprintf(stderr, "hotplug-actuator simulate: %v\n", err)
		return 1
	}
	if rep.VMs == 0 {
		fmt.Fprintf(stderr, "hotplug-actuator simulate: no VM could be simulated (%d skipped)\n", rep.Skipped)
		return 1
	}
	switch *format {
	case "json":
		err = sim.WriteJSON(stdout, rep)
	case "csv":
		err = sim.WriteCSV(stdout, rep)
	default:
		err = sim.WriteTable(stdout, rep)
	}
	if err != nil {
		fmt.Fprintf(stderr, "hotplug-actuator simulate: %v\n", err)
		return 1
	}
	if *plotFile != "" {
		if *plotVM != "" && rep.Timeline == nil {
			fmt.Fprintf(stderr, "hotplug-actuator simulate: --plot-vm: no VM named %q among the traces\n", *plotVM)
		}
		if err := sim.Plot(rep, *plotFile); err != nil {
			fmt.Fprintf(stderr, "hotplug-actuator simulate: %v\n", err)
			return 1
		}
	}
	if rep.Skipped > 0 {
		fmt.Fprintf(stderr, "hotplug-actuator simulate: %d VM(s) simulated, %d skipped\n", rep.VMs, rep.Skipped)
	}
	return 0
}

// runSweep sweeps each path on its own and all of them together.
func runSweep(paths []string, opt sim.ReadOptions, cfg sim.SweepConfig, format, plotFile string, stdout, stderr io.Writer) int {
	var inputs []sim.SweepInput
	for _, p := range paths {
		inputs = append(inputs, sim.SweepInput{Name: filepath.Base(filepath.Clean(p)), Traces: sim.Read([]string{p}, opt)})
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	skip := func(err error) { fmt.Fprintf(stderr, "hotplug-actuator simulate: skipped: %v\n", err) }
	rep, err := sim.Sweep(ctx, inputs, cfg, skip)
	if err != nil {
		fmt.Fprintf(stderr, "hotplug-actuator simulate: %v\n", err)
		return 1
	}
	if rep.Total().VMs == 0 {
		fmt.Fprintf(stderr, "hotplug-actuator simulate: no VM could be simulated (%d skipped)\n", rep.Skipped)
		return 1
	}
	switch format {
	case "json":
		err = sim.WriteSweepJSON(stdout, rep)
	case "csv":
		err = sim.WriteSweepCSV(stdout, rep)
	default:
		err = sim.WriteSweepTable(stdout, rep)
	}
	if err == nil && plotFile != "" {
		err = sim.PlotSweep(rep, plotFile)
	}
	if err != nil {
		fmt.Fprintf(stderr, "hotplug-actuator simulate: %v\n", err)
		return 1
	}
	if rep.Skipped > 0 {
		fmt.Fprintf(stderr, "hotplug-actuator simulate: %d VM(s) swept, %d skipped\n", rep.Total().VMs, rep.Skipped)
	}
	return 0
}

// printDecisions writes one JSON line per policy and sample of the named
// VM: what the engine decided, to compare with the live actuator's event
// log on the same load.
func printDecisions(traces func(func(*sim.Trace, error) bool), vm string, pols []sim.Policy, act sim.Actuation, stdout, stderr io.Writer) int {
	enc := json.NewEncoder(stdout)
	for t, err := range traces {
		if err != nil || t.Name != vm {
			continue
		}
		for _, p := range pols {
			steps, err := sim.Decisions(t, p, act)
			if err != nil {
				fmt.Fprintf(stderr, "hotplug-actuator simulate: %v\n", err)
				return 1
			}
			for _, s := range steps {
				enc.Encode(struct {
					Policy string `json:"policy"`
					sim.Step
				}{p.Name, s})
			}
		}
		return 0
	}
	fmt.Fprintf(stderr, "hotplug-actuator simulate: --decisions: no readable VM named %q among the traces\n", vm)
	return 1
}
