package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hotplugheaven/hotplug/host/api"
	"github.com/hotplugheaven/hotplug/host/memory"
)

// cmdStatus prints a table of every VM.
func cmdStatus(args []string, stdout, stderr io.Writer) int {
	f := newClientFlags("status", stdout, stderr)
	pos, ok := f.parse(args)
	if !ok {
		return f.exit
	}
	if len(pos) > 0 {
		return f.usage("takes no arguments, got %q (for one VM: explain VM)", pos[0])
	}
	c, err := f.client()
	if err != nil {
		return f.fail(err)
	}
	ctx, cancel := interruptible()
	defer cancel()
	list, err := c.VMs(ctx)
	if err != nil {
		return f.fail(err)
	}
	if *f.json {
		printJSON(stdout, list)
		return 0
	}
	printStatus(stdout, list)
	return 0
}

func printStatus(w io.Writer, list api.VMList) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VM\tMODE\tVCPUS\tUTIL\tRUNQ P95\tMEMORY\tAGENT\tSTATE\tLAST DECISION")
	for _, v := range list.VMs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Name, v.Mode, vcpus(v), util(v), runq(v),
			mem(v), agent(v), state(v), decision(v))
	}
	tw.Flush()
	if list.Host.VCPUBudget > 0 {
		fmt.Fprintf(w, "host: %d of %d vCPUs in use\n", list.Host.VCPUs, list.Host.VCPUBudget)
	} else {
		fmt.Fprintf(w, "host: %d vCPUs in use (no budget)\n", list.Host.VCPUs)
	}
}

// mem is the VM's memory and its target, "2GiB→2560MiB"; "-" without a
// memory device.
func mem(v api.VM) string {
	m := v.Memory
	if m == nil || m.Device == "" {
		return "-"
	}
	out := memory.Size(m.Total).String()
	if m.Mode != memory.ModeOff && m.Target > 0 && m.Target != m.Total {
		out += "→" + memory.Size(m.Target).String()
	}
	return out
}

// vcpus is "online/plugged→target".
func vcpus(v api.VM) string {
	t := v.Target
	if t == 0 {
		t = v.Current
	}
	return fmt.Sprintf("%d/%d→%d", v.Online, v.Current, t)
}

func util(v api.VM) string {
	if v.Signals.At.IsZero() {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*v.Signals.Utilisation)
}

func runq(v api.VM) string {
	if v.Signals.RunQSource == "" {
		return "-"
	}
	return ms(v.Signals.RunQP95)
}

func ms(s float64) string {
	if s < 0.01 {
		return fmt.Sprintf("%.2fms", 1000*s)
	}
	return fmt.Sprintf("%.1fms", 1000*s)
}

func agent(v api.VM) string {
	s := "down"
	if v.Connected {
		s = "up"
	}
	if !v.Reachable {
		s += ",hypervisor down"
	}
	return s
}

func state(v api.VM) string {
	var s []string
	if v.Paused {
		s = append(s, "paused")
	}
	if v.Hotspot {
		s = append(s, "hotspot")
	}
	if v.Degraded != "" {
		s = append(s, "degraded")
	}
	if len(s) == 0 {
		return "scaling"
	}
	return strings.Join(s, ",")
}

func decision(v api.VM) string {
	d := v.LastDecision
	if d.Rule == "" {
		return "-"
	}
	r := d.Reason
	if len(r) > 70 {
		r = r[:67] + "..."
	}
	return fmt.Sprintf("%s (%s): %s", d.Action, d.Rule, r)
}

// cmdExplain prints one VM and why its last decision was taken.
func cmdExplain(args []string, stdout, stderr io.Writer) int {
	f := newClientFlags("explain", stdout, stderr)
	pos, ok := f.parse(args)
	if !ok {
		return f.exit
	}
	if len(pos) != 1 {
		return f.usage("usage: explain VM [--json]")
	}
	c, err := f.client()
	if err != nil {
		return f.fail(err)
	}
	ctx, cancel := interruptible()
	defer cancel()
	v, err := c.VM(ctx, pos[0])
	if err != nil {
		return f.fail(err)
	}
	if *f.json {
		printJSON(stdout, v)
		return 0
	}
	printExplain(stdout, v, time.Now())
	return 0
}

func printExplain(w io.Writer, v api.VM, now time.Time) {
	p := v.Policy
	fmt.Fprintf(w, "%s: %d vCPUs plugged, %d online, target %d (policy %d–%d, %s; %d hot-plug slots)\n",
		v.Name, v.Current, v.Online, v.Target, p.MinVCPUs, p.MaxVCPUs, v.Mode, v.MaxSlots)
	fmt.Fprintf(w, "state: %s; agent %s\n", state(v), agent(v))
	if v.Degraded != "" {
		fmt.Fprintf(w, "last action failed: %s\n", v.Degraded)
	}
	if m := v.Memory; m != nil {
		fmt.Fprintf(w, "memory: %s (%s, at most %s), sizing %s", memory.Size(m.Total), m.Device, memory.Size(m.Max), m.Mode)
		if m.LastRule != "" {
			fmt.Fprintf(w, "; last decision %s to %s by rule %s: %s", m.LastAction, memory.Size(m.Target), m.LastRule, m.LastReason)
		}
		fmt.Fprintln(w)
		if m.Degraded != "" {
			fmt.Fprintf(w, "last memory resize fell short: %s\n", m.Degraded)
		}
	}
	x := v.Explanation
	if x.Rule == "" {
		fmt.Fprintln(w, "no decision yet: the VM has sent no report since the actuator started")
		return
	}
	fmt.Fprintf(w, "\nlast decision %s (%s ago): %s %d → %d by rule %s\n", x.At.Local().Format("15:04:05"),
		now.Sub(x.At).Round(time.Second), x.Action, x.From, x.To, x.Rule)
	fmt.Fprintf(w, "  why: %s\n", x.Reason)
	if len(x.Samples) > 0 {
		fmt.Fprintf(w, "  last %d samples, oldest first (upper threshold %.0f%%; %d above, %d needed):\n",
			len(x.Samples), 100*x.Upper, x.Above, x.K)
		for _, s := range x.Samples {
			mark := ""
			if s.Above {
				mark = "  above"
			}
			fmt.Fprintf(w, "    %4s  %4.0f%%%s\n", strconv.Itoa(s.Age), 100*s.Utilisation, mark)
		}
		rel := "not above"
		if x.ForecastAbove {
			rel = "above"
		}
		fmt.Fprintf(w, "  AR(1) forecast %.0f%%, %s the threshold\n", 100*x.Forecast, rel)
	}
	if x.PeakDemand > 0 {
		fmt.Fprintf(w, "  p%.0f demand over %d samples: %.2f CPUs\n", 100*x.Percentile, x.WindowSamples, x.PeakDemand)
	}
	s := v.Signals
	if s.At.IsZero() {
		return
	}
	fmt.Fprintf(w, "\nlatest report %s: utilisation %.0f%%, demand %.2f CPUs (%.2f busy + %.2f waiting), load1 %.2f",
		s.At.Local().Format("15:04:05"), 100*s.Utilisation, s.Demand, s.Busy, s.Waiting, s.Load1)
	if s.RunQSource != "" {
		fmt.Fprintf(w, ", run-queue p50/p95/p99 %s/%s/%s (%s)", ms(s.RunQP50), ms(s.RunQP95), ms(s.RunQP99), s.RunQSource)
	}
	if s.Steal > 0.005 {
		fmt.Fprintf(w, ", steal %.0f%%", 100*s.Steal)
	}
	fmt.Fprintln(w)
	if s.MemTotal > 0 {
		fmt.Fprintf(w, "memory %.0f MiB available of %.0f MiB, swap in/out %.0f/%.0f pages/s\n",
			float64(s.MemAvailable)/(1<<20), float64(s.MemTotal)/(1<<20), s.SwapIn, s.SwapOut)
	}
	for _, a := range s.Apps {
		sla := "no SLA"
		switch {
		case a.SLATarget > 0:
			sla = fmt.Sprintf("SLA p%.0f ≤ %s", 100*a.SLAPct, ms(a.SLATarget))
		case a.SLAMean > 0:
			sla = fmt.Sprintf("SLA mean ≤ %s", ms(a.SLAMean))
		}
		fmt.Fprintf(w, "  app %s: %.1f req/s, p95 response %s, %s, drop rate %.1f%%\n", a.Name, a.Rate, ms(a.RespP95), sla, 100*a.DropRate)
	}
}
