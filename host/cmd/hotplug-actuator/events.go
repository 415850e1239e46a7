package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hotplugheaven/hotplug/host/config"
	"github.com/hotplugheaven/hotplug/host/eventlog"
)

func cmdEvents(args []string, stdout, stderr io.Writer) int {
	fs, cfgPath, _ := flags("events", stderr)
	logPath := fs.String("log", "", "event log file (default: event_log of the configuration)")
	vm := fs.String("vm", "", "only this VM")
	since := fs.String("since", "", "only events at or after this time (RFC 3339, or a duration like 1h meaning that long ago)")
	asJSON := fs.Bool("json", false, "print JSON lines")
	follow := fs.Bool("follow", false, "keep printing new events as they are committed")
	if fs.Parse(args) != nil {
		return 2
	}
	path := *logPath
	if path == "" {
		cfg, err := config.Load(*cfgPath)
		if err != nil {
			fmt.Fprintf(stderr, "hotplug-actuator events: %v (or pass --log FILE)\n", err)
			return 2
		}
		path = cfg.EventLog
	}
	filter := eventlog.Filter{VM: *vm}
	if *since != "" {
		if d, err := time.ParseDuration(*since); err == nil {
			filter.Since = time.Now().Add(-d)
		} else if t, err := time.Parse(time.RFC3339, *since); err == nil {
			filter.Since = t
		} else {
			fmt.Fprintf(stderr, "hotplug-actuator events: --since: want RFC 3339 time or a duration, got %q\n", *since)
			return 2
		}
	}
	f, err := os.Open(path)
	if err != nil {
		fmt.Fprintf(stderr, "hotplug-actuator events: %v\n", err)
		return 1
	}
	defer f.Close()
	print := func(evs []eventlog.Event) {
		for _, ev := range evs {
			if *asJSON {
				b, _ := json.Marshal(ev)
				fmt.Fprintf(stdout, "%s\n", b)
				continue
			}
			fmt.Fprintln(stdout, formatEvent(ev))
		}
	}
	// Read up to the end of the last whole line; the rest may be an event
	// being written right now.
	data, err := io.ReadAll(f)
	if err != nil {
		fmt.Fprintf(stderr, "hotplug-actuator events: %s: %v\n", path, err)
		return 1
	}
	whole := bytes.LastIndexByte(data, '\n') + 1
	evs, skipped, err := eventlog.Read(bytes.NewReader(data[:whole]), filter)
	if err != nil {
		fmt.Fprintf(stderr, "hotplug-actuator events: %s: %v\n", path, err)
		return 1
	}
	if skipped > 0 {
		fmt.Fprintf(stderr, "hotplug-actuator events: %d line(s) in %s are not events and were skipped\n", skipped, path)
	}
	print(evs)
	if !*follow {
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	offset := int64(whole)
	buf := make([]byte, 64<<10)
	var pending []byte
	for {
		select {
		case <-ctx.Done():
			return 0
		case <-time.After(500 * time.Millisecond):
		}
		for {
			n, err := f.ReadAt(buf, offset)
			offset += int64(n)
			pending = append(pending, buf[:n]...)
			if err != nil || n == 0 {
				break
			}
		}
		if i := bytes.LastIndexByte(pending, '\n'); i >= 0 {
			evs, _, _ := eventlog.Read(bytes.NewReader(pending[:i+1]), filter)
			print(evs)
			pending = append(pending[:0], pending[i+1:]...)
		}
	}
}

// formatEvent renders one event as a line for people.
func formatEvent(ev eventlog.Event) string {
	var steps []string
	for _, s := range ev.Steps {
		mark := "ok"
		if !s.OK {
			mark = "FAILED: " + s.Error
		}
		steps = append(steps, fmt.Sprintf("%s %.0fms %s", s.Name, s.DurationMS, mark))
	}
	return fmt.Sprintf("%s  %-12s %-10s %d→%d (now %d)  %-11s [%s] %s\n    steps: %s",
		ev.Time.Local().Format("2006-01-02 15:04:05"), ev.VM, ev.Kind, ev.From, ev.To, ev.Result,
		ev.Outcome, ev.Rule, ev.Reason, strings.Join(steps, "; "))
}
