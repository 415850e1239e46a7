package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/hotplugheaven/hotplug/host/api"
	"github.com/hotplugheaven/hotplug/host/eventlog"
)

func cmdEvents(args []string, stdout, stderr io.Writer) int {
	f := newClientFlags("events", stdout, stderr)
	logPath := f.fs.String("log", "", "read this event log file directly, without the actuator (offline)")
	vm := f.fs.String("vm", "", "only this VM")
	since := f.fs.String("since", "", "only events at or after this time (RFC 3339, or a duration like 1h meaning that long ago)")
	until := f.fs.String("until", "", "only events before this time (RFC 3339, or a duration meaning that long ago)")
	follow := f.fs.Bool("follow", false, "keep printing new events as they are committed")
	pos, ok := f.parse(args)
	if !ok {
		return f.exit
	}
	if len(pos) > 0 {
		return f.usage("takes no arguments, got %q (for one VM: --vm %s)", pos[0], pos[0])
	}
	filter := eventlog.Filter{VM: *vm}
	for _, t := range []struct {
		flag, v string
		dst     *time.Time
	}{{"--since", *since, &filter.Since}, {"--until", *until, &filter.Until}} {
		if t.v == "" {
			continue
		}
		if d, err := time.ParseDuration(t.v); err == nil {
			*t.dst = time.Now().Add(-d)
		} else if at, err := time.Parse(time.RFC3339, t.v); err == nil {
			*t.dst = at
		} else {
			return f.usage("%s: want RFC 3339 time or a duration, got %q", t.flag, t.v)
		}
	}
	print := func(ev eventlog.Event) {
		if *f.json {
			b, _ := json.Marshal(ev)
			fmt.Fprintf(stdout, "%s\n", b)
			return
		}
		fmt.Fprintln(stdout, formatEvent(ev))
	}
	if *logPath != "" {
		return eventsFromFile(*logPath, filter, *follow, print, stderr)
	}
	c, err := f.client()
	if err != nil {
		return f.fail(err)
	}
	ctx, cancel := interruptible()
	defer cancel()
	if err := eventsFromAPI(ctx, c, filter, *follow, print); err != nil {
		if errors.Is(err, api.ErrUnreachable) {
			return f.fail(fmt.Errorf("%w; to read the event log file without the actuator, use --log FILE", err))
		}
		return f.fail(err)
	}
	return 0
}

// eventsFromAPI prints the events the API has, page by page, then with
// follow the new ones from the stream. The stream is opened first, so an
// event committed while the pages are read is not lost; one already
// printed is not printed twice.
func eventsFromAPI(ctx context.Context, c *api.Client, filter eventlog.Filter, follow bool, print func(eventlog.Event)) error {
	var live chan eventlog.Event
	streamErr := make(chan error, 1)
	if follow {
		live = make(chan eventlog.Event, 1024)
		connected := make(chan struct{})
		sctx, stop := context.WithCancel(ctx)
		defer stop()
		go func() {
			streamErr <- c.Stream(sctx, filter.VM, []string{api.TypeEvent}, func() { close(connected) },
				func(typ string, data []byte) error {
					var m api.EventMessage
					if typ != api.TypeEvent || json.Unmarshal(data, &m) != nil || !m.Committed {
						return nil
					}
					select {
					case live <- m.Event:
						return nil
					default:
						return errors.New("events arrive faster than they can be printed; some were missed")
					}
				})
		}()
		select {
		case <-connected:
		case err := <-streamErr:
			return err
		}
	}
	q := api.EventQuery{Filter: filter, Limit: api.MaxEventsLimit}
	var last uint64
	for {
		page, err := c.Events(ctx, q)
		if err != nil {
			return err
		}
		for _, ev := range page.Events {
			print(ev)
			last = ev.Seq
		}
		if page.NextCursor == "" {
			break
		}
		q.After = last
	}
	if !follow {
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-streamErr:
			return err
		case ev := <-live:
			if ev.Seq > last && (filter.Until.IsZero() || ev.Time.Before(filter.Until)) {
				print(ev)
				last = ev.Seq
			}
		}
	}
}

// eventsFromFile reads the event log file itself: for when the actuator
// is not running, or on another machine with a copy of the file.
func eventsFromFile(path string, filter eventlog.Filter, follow bool, print func(eventlog.Event), stderr io.Writer) int {
	var skipped int
	var err error
	if follow {
		ctx, stop := interruptible()
		defer stop()
		skipped, err = eventlog.Follow(ctx, path, filter, 500*time.Millisecond, print)
	} else {
		var evs []eventlog.Event
		evs, skipped, err = eventlog.ReadFile(path, filter)
		for _, ev := range evs {
			print(ev)
		}
	}
	if skipped > 0 {
		fmt.Fprintf(stderr, "hotplug-actuator events: %d line(s) in %s are not events and were skipped\n", skipped, path)
	}
	if err != nil {
		fmt.Fprintf(stderr, "hotplug-actuator events: %v\n", err)
		return 1
	}
	return 0
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
