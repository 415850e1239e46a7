// Package applog is the agent's gray-box source: it tails the access logs
// of the applications configured in apps.d/*.toml, parses each line, and
// adds per-application request statistics (arrivals, drops, inter-arrival
// and service time moments, response-time percentiles, the SLA) to every
// Report as proto.AppStats.
//
// Reading happens in goroutines owned by Apps.Run; Fill, called from the
// agent's sampling loop, only takes a snapshot under a short lock and never
// waits for I/O. Applications' logs are untrusted input: nothing here may
// panic on them or grow without bound, and what cannot be parsed is
// counted, not guessed. The package reports measurements; it does not
// decide anything about vCPUs.
package applog

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotplugheaven/hotplug/guest/applog/parse"
	"github.com/hotplugheaven/hotplug/guest/applog/stats"
	"github.com/hotplugheaven/hotplug/guest/applog/tail"
	"github.com/hotplugheaven/hotplug/guest/cgroup"
	"github.com/hotplugheaven/hotplug/guest/collector"
	"github.com/hotplugheaven/hotplug/proto"
)

// DefaultStateDir keeps the tailers' positions.
const DefaultStateDir = "/var/lib/hotplug-agent"

// Options for Apps; zero fields take defaults.
type Options struct {
	// StateDir holds one position file per application; empty: positions
	// are not kept.
	StateDir string
	// Poll is the tailers' polling interval (default 250 ms).
	Poll time.Duration
	// RotateGrace: see tail.Options (default 5 s).
	RotateGrace time.Duration
	// NoNotify turns off fsnotify wake-ups (polling alone is correct).
	NoNotify bool
	// CgroupRoot is the cgroup v2 mount the applications' units are read
	// from (default /sys/fs/cgroup).
	CgroupRoot string
	Logger     hclog.Logger
}

// Apps tails every configured application's log. It is one of the agent's
// collector.Sources.
type Apps struct {
	apps []*app
	log  hclog.Logger
}

var _ collector.Source = (*Apps)(nil)

type app struct {
	cfg    App
	log    hclog.Logger
	tailer *tail.Tailer

	mu     sync.Mutex
	win    *stats.Window
	warned [parse.NumReasons]bool

	// CPU time of the units, read by Fill; cpuBase is the previous total,
	// valid when haveBase.
	cgroups  cgroup.FS
	cpuBase  time.Duration
	haveBase bool
	cpuWarn  bool
}

// New prepares the tailers (reading their saved positions); nothing is
// read from the logs until Run.
func New(cfgs []App, o Options) (*Apps, error) {
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if len(cfgs) > proto.MaxApps {
		return nil, fmt.Errorf("%d applications, at most %d fit in a report", len(cfgs), proto.MaxApps)
	}
	a := &Apps{log: o.Logger}
	for _, c := range cfgs {
		ap := &app{cfg: c, log: o.Logger.Named(c.Name), win: stats.New(stats.Options{MaxGapBins: 60}), cgroups: cgroup.NewFS(o.CgroupRoot)}
		ap.cpuDelta() // the baseline of the first interval
		to := tail.Options{Pattern: c.Path, MaxLineBytes: c.MaxLineBytes, Poll: o.Poll, RotateGrace: o.RotateGrace,
			Notify: !o.NoNotify, FromStart: c.ReadFromStart, Logger: ap.log}
		if o.StateDir != "" {
			to.StateFile = filepath.Join(o.StateDir, "logpos-"+c.Name+".json")
		}
		t, err := tail.New(to, ap)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.File, err)
		}
		ap.tailer = t
		a.apps = append(a.apps, ap)
	}
	return a, nil
}

// Name implements collector.Source.
func (a *Apps) Name() string { return "applog" }

// Path implements collector.Source: the logs' patterns.
func (a *Apps) Path() string {
	paths := make([]string, len(a.apps))
	for i, ap := range a.apps {
		paths[i] = ap.cfg.Path
	}
	return strings.Join(paths, ",")
}

// Read implements collector.Source. The logs are read as they grow, by
// Run; Fill takes the interval's requests.
func (a *Apps) Read() error { return nil }

// Len is the number of applications configured.
func (a *Apps) Len() int { return len(a.apps) }

// Run tails every log until ctx ends, then saves the positions.
func (a *Apps) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, len(a.apps))
	for i, ap := range a.apps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ap.log.Info("tailing", "path", ap.cfg.Path, "format", ap.cfg.Parse.Format)
			errs[i] = ap.tailer.Run(ctx)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Fill implements collector.Source: it appends one AppStats per application for
// the requests read since the previous Fill.
func (a *Apps) Fill(r *proto.Report) error {
	ivl := time.Duration(r.IntervalNanos).Seconds()
	for _, ap := range a.apps {
		r.Apps = append(r.Apps, ap.snapshot(ivl))
	}
	return nil
}

// snapshot turns the interval's window into AppStats and starts the next.
func (ap *app) snapshot(interval float64) proto.AppStats {
	ap.mu.Lock()
	s := ap.win.Summary(false)
	ap.win.Reset()
	ap.mu.Unlock()
	as := ToAppStats(ap.cfg, s, interval)
	if cpu, ok := ap.cpuDelta(); ok {
		as.CPUSeconds, as.CPUSource = min(cpu.Seconds(), 86400*proto.MaxCPUs), proto.CPUSourceCgroup
	}
	return as
}

// cpuDelta is the CPU time the application's units used since the last
// call; ok is false without units, on the first call, when a unit cannot
// be read (said once) or when a counter went back (a unit restarted). The
// files are cgroupfs, answered by the kernel without blocking, so Fill may
// read them.
func (ap *app) cpuDelta() (time.Duration, bool) {
	if len(ap.cfg.Units) == 0 {
		return 0, false
	}
	var total time.Duration
	for _, u := range ap.cfg.Units {
		v, err := ap.cgroups.UnitCPU(u)
		if err != nil {
			if !ap.cpuWarn {
				ap.cpuWarn = true
				ap.log.Warn("cannot read the CPU time of a unit; sharing the VM's busy time instead (said once)", "unit", u, "error", err)
			}
			ap.haveBase = false
			return 0, false
		}
		total += v
	}
	prev, had := ap.cpuBase, ap.haveBase
	ap.cpuBase, ap.haveBase = total, true
	if !had || total < prev {
		return 0, false
	}
	return total - prev, true
}

// ToAppStats fills the wire form. The arrival rate is arrivals over the
// sampling interval, or over the span of the log's own timestamps when
// that is more than twice as long (a backlog read at once).
func ToAppStats(cfg App, s stats.Summary, interval float64) proto.AppStats {
	as := proto.AppStats{Name: cfg.Name, Arrivals: s.Arrivals, Drops: s.Drops,
		InterArrivalMean: s.InterArrivalMean, InterArrivalVar: s.InterArrivalVar, InterArrivalFromCounts: s.FromCounts,
		ServiceMean: s.ServiceMean, ServiceVar: s.ServiceVar, RespP50: s.RespP50, RespP95: s.RespP95, RespP99: s.RespP99,
		SLAMean: cfg.SLAMean, SLAPercentile: cfg.SLAPercentile, SLATarget: cfg.SLATarget}
	span := interval
	if s.SpanSeconds > 2*interval {
		span = s.SpanSeconds
	}
	if span > 0 {
		as.ArrivalRate = min(float64(s.Arrivals)/span, 1e9)
	}
	return as
}

// Open implements tail.Handler: each file gets its own parser. A W3C file
// followed from the middle first has its directives read, so that its
// lines are parsed with the right #Fields: header.
func (ap *app) Open(f *tail.File) {
	p, err := parse.New(ap.cfg.Parse)
	if err != nil { // the config was checked by LoadFile
		ap.log.Error("parser", "error", err)
		return
	}
	f.State = p
	if ap.cfg.Parse.Format == "w3c" && f.Offset > 0 {
		replayDirectives(io.NewSectionReader(f, 0, f.Offset), p, ap.cfg.MaxLineBytes)
	}
}

// replayDirectives feeds the '#' lines of r to p.
func replayDirectives(r io.Reader, p parse.Parser, maxLine int) {
	br := bufio.NewReaderSize(r, 64<<10)
	var rec parse.Record
	_ = Lines(br, maxLine, func(line []byte, cut bool) {
		if !cut && len(line) > 0 && line[0] == '#' {
			p.Parse(line, &rec)
		}
	})
}

// Close implements tail.Handler.
func (ap *app) Close(f *tail.File) {}

// Line implements tail.Handler.
func (ap *app) Line(f *tail.File, line []byte, cut bool) {
	p, _ := f.State.(parse.Parser)
	if p == nil {
		return
	}
	var rec parse.Record
	reason := parse.TooLong
	if !cut {
		reason = p.Parse(line, &rec)
	}
	ap.mu.Lock()
	switch {
	case reason == parse.OK:
		ap.win.Add(&rec, rec.Status >= 0 && rec.Status < len(ap.cfg.Drop) && ap.cfg.Drop[rec.Status])
	case reason.Malformed():
		ap.win.Malformed(reason)
	}
	first := reason.Malformed() && !ap.warned[reason]
	if first {
		ap.warned[reason] = true
	}
	ap.mu.Unlock()
	if first {
		ap.log.Warn("skipping malformed log lines (counted per interval; said once per reason)",
			"file", f.Path, "offset", f.Offset, "reason", reason.String(), "format", ap.cfg.Parse.Format)
	}
}

// Lines calls fn for every line of r, at most maxLine bytes each: a longer
// line is delivered cut (cut = true) and the rest of it skipped. A last
// line without "\n" is delivered too. Memory stays bounded by the reader's
// buffer and maxLine.
func Lines(r *bufio.Reader, maxLine int, fn func(line []byte, cut bool)) error {
	var acc []byte
	skipping := false
	for {
		chunk, err := r.ReadSlice('\n')
		complete := err == nil
		if complete {
			chunk = chunk[:len(chunk)-1]
		}
		switch {
		case skipping:
		case len(acc)+len(chunk) > maxLine:
			acc = append(acc, chunk[:maxLine-len(acc)]...)
			fn(acc, true)
			acc = acc[:0]
			skipping = true
		case complete && len(acc) == 0:
			fn(trimCR(chunk), false)
		default:
			acc = append(acc, chunk...)
			if complete || (errors.Is(err, io.EOF) && len(acc) > 0) {
				fn(trimCR(acc), false)
				acc = acc[:0]
			}
		}
		if complete {
			skipping = false
			continue
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
}

func trimCR(b []byte) []byte {
	if len(b) > 0 && b[len(b)-1] == '\r' {
		return b[:len(b)-1]
	}
	return b
}

// Names are the applications' names, in configuration order: what the
// agent announces in its Hello.
func (a *Apps) Names() []string {
	out := make([]string, len(a.apps))
	for i, x := range a.apps {
		out[i] = x.cfg.Name
	}
	return out
}
