// Command hotplug-demo shows Hot-Plug Heaven working on this machine: it
// boots a real QEMU guest (TCG) with hotplug-agent inside, runs
// hotplug-actuator against it, loads the guest (idle → busy → idle) and
// prints, every second, the guest's online vCPUs, QEMU's count and the
// guest's utilisation, plus each scaling event with its reason as the
// actuator commits it. Ctrl-C stops everything and leaves no QEMU behind.
//
// Run it with `make demo`, which installs what it needs first.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hotplugheaven/hotplug/host/eventlog"
	"github.com/hotplugheaven/hotplug/integration/stack"
)

func main() {
	idle := flag.Duration("idle", 15*time.Second, "idle time before the load starts")
	busy := flag.Duration("busy", 45*time.Second, "how long the guest is loaded")
	burners := flag.Int("burners", 2, "CPU-burning processes started in the guest")
	keep := flag.Bool("keep", false, "keep the work directory (logs, event log) after exit")
	dashboard := flag.Bool("dashboard", true, "serve the live dashboard on a loopback TCP port and print its URL")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	code := run(ctx, *idle, *busy, *burners, *keep, *dashboard)
	os.Exit(code)
}

func run(ctx context.Context, idle, busy time.Duration, burners int, keep, dashboard bool) int {
	dir, err := os.MkdirTemp("", "hotplug-demo-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	if !keep {
		defer os.RemoveAll(dir)
	}
	fmt.Printf("Hot-Plug Heaven demo — work directory %s\n", dir)
	fmt.Println("Building the agent and actuator, booting a QEMU guest (1 vCPU, 4 hot-plug slots)…")
	s, err := stack.Start(ctx, stack.Options{Dir: dir, Dashboard: dashboard, Logf: func(f string, a ...any) { fmt.Printf("  "+f+"\n", a...) }})
	if err != nil {
		if ctx.Err() != nil {
			fmt.Println("\ninterrupted")
			return 130
		}
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	defer s.Stop() // kills the actuator and QEMU, also on Ctrl-C

	fmt.Printf("  actuator log: %s\n  event log:    %s\n\n", filepath.Join(dir, "actuator.log"), s.EventLog)
	if u := s.DashboardURL(); u != "" {
		// The token is in the fragment: the browser keeps it, the server
		// never sees it, and the page drops it from the address bar.
		fmt.Printf("Live dashboard (already authorised; open it in a browser on this machine,\nor forward the port first: ssh -L %s:%s HOST):\n\n  %s\n\n",
			strings.TrimPrefix(s.APIBase, "http://127.0.0.1:"), strings.TrimPrefix(s.APIBase, "http://"), u)
	}
	fmt.Printf("Schedule: idle %v, then %d CPU burners for %v, then idle until the guest is back to 1 vCPU.\n\n", idle, burners, busy)

	d := &display{s: s, start: time.Now()}
	phase := "idle"
	loadOn := d.start.Add(idle)
	loadOff := loadOn.Add(busy)
	deadline := loadOff.Add(3 * time.Minute)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			fmt.Println("\ninterrupted: stopping the actuator and the guest")
			return 130
		case err := <-s.ActuatorExited():
			fmt.Fprintf(os.Stderr, "demo: the actuator exited unexpectedly: %v (see %s)\n", err, filepath.Join(dir, "actuator.log"))
			return 1
		case <-tick.C:
		}
		now := time.Now()
		switch {
		case phase == "idle" && now.After(loadOn):
			if err := s.StartLoad(ctx, burners); err != nil {
				fmt.Fprintln(os.Stderr, "demo: starting load:", err)
				return 1
			}
			phase = "busy"
			d.loadStart = now
			fmt.Printf("%s ▶ started %d CPU burners in the guest\n", d.stamp(now), burners)
		case phase == "busy" && now.After(loadOff):
			if err := s.StopLoad(ctx); err != nil {
				fmt.Fprintln(os.Stderr, "demo: stopping load:", err)
				return 1
			}
			phase = "cooling"
			d.loadStop = now
			fmt.Printf("%s ■ stopped the load\n", d.stamp(now))
		}
		online, err := d.sample(ctx, phase)
		if err != nil {
			if ctx.Err() != nil {
				continue
			}
			fmt.Fprintln(os.Stderr, "demo:", err)
			return 1
		}
		if phase == "cooling" && online == 1 && d.downs > 0 {
			d.summary()
			return 0
		}
		if now.After(deadline) {
			fmt.Println("the guest did not return to 1 vCPU within 3 minutes of the load stopping; see the logs above")
			d.summary()
			return 1
		}
	}
}

type display struct {
	s                   *stack.Stack
	start               time.Time
	loadStart, loadStop time.Time
	prevBusy, prevTotal uint64
	seen                uint64
	vcpuSeconds         float64
	maxOnline           int
	ups, downs          int
	firstUp, firstDown  eventlog.Event
}

func (d *display) stamp(t time.Time) string {
	return fmt.Sprintf("[%4.0fs]", t.Sub(d.start).Seconds())
}

// sample prints one status line and any new events; it returns the guest's
// online vCPU count.
func (d *display) sample(ctx context.Context, phase string) (int, error) {
	set, err := d.s.GuestOnline(ctx)
	if err != nil {
		return 0, err
	}
	plugged, err := d.s.QEMUPlugged(ctx)
	if err != nil {
		return 0, err
	}
	busy, total, err := d.s.GuestBusy(ctx)
	if err != nil {
		return 0, err
	}
	util := 0.0
	if d.prevTotal > 0 && total > d.prevTotal {
		util = float64(busy-d.prevBusy) / float64(total-d.prevTotal)
	}
	d.prevBusy, d.prevTotal = busy, total
	online := set.Len()
	d.vcpuSeconds += float64(online)
	d.maxOnline = max(d.maxOnline, online)
	fmt.Printf("%s %-7s guest vCPUs online %-2d (%-5s)  QEMU vCPUs %-2d  utilisation %s %3.0f%%\n",
		d.stamp(time.Now()), phase, online, set.String(), plugged, bar(util, 20), 100*util)

	evs, err := d.s.Events()
	if err != nil {
		return online, err
	}
	for _, ev := range evs {
		if ev.Seq <= d.seen {
			continue
		}
		d.seen = ev.Seq
		arrow := "↑"
		switch ev.Kind {
		case "scale_up":
			d.ups++
			if d.ups == 1 {
				d.firstUp = ev
			}
		case "scale_down":
			arrow = "↓"
			d.downs++
			if d.downs == 1 {
				d.firstDown = ev
			}
		default:
			arrow = "•"
		}
		var steps []string
		for _, st := range ev.Steps {
			steps = append(steps, fmt.Sprintf("%s %.0f ms", st.Name, st.DurationMS))
		}
		fmt.Printf("%s %s %s %d → %d vCPUs (%s, rule %s)\n         why: %s\n         steps: %s\n",
			d.stamp(ev.Time), arrow, ev.Kind, ev.From, ev.Result, ev.Outcome, ev.Rule, ev.Reason, strings.Join(steps, ", "))
	}
	return online, nil
}

func (d *display) summary() {
	elapsed := time.Since(d.start).Seconds()
	fmt.Println("\nSummary")
	fmt.Printf("  scaling events: %d up, %d down; most vCPUs online: %d\n", d.ups, d.downs, d.maxOnline)
	if d.ups > 0 && !d.loadStart.IsZero() {
		fmt.Printf("  load start → first plug decision: %.1f s\n", d.firstUp.Time.Sub(d.loadStart).Seconds())
	}
	if d.downs > 0 && !d.loadStop.IsZero() {
		fmt.Printf("  load stop → first unplug decision: %.1f s\n", d.firstDown.Time.Sub(d.loadStop).Seconds())
	}
	fmt.Printf("  vCPU-seconds used: %.0f over %.0f s, against %.0f for a static 4-vCPU guest (%.0f%% saved)\n",
		d.vcpuSeconds, elapsed, 4*elapsed, 100*(1-d.vcpuSeconds/(4*elapsed)))
	fmt.Println("  (every event above is in the event log; `hotplug-actuator events --log FILE` prints it)")
}

func bar(f float64, width int) string {
	f = max(0, min(1, f))
	n := int(f*float64(width) + 0.5)
	return strings.Repeat("█", n) + strings.Repeat("░", width-n)
}
