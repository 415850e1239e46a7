package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotplugheaven/hotplug/guest/applog"
	"github.com/hotplugheaven/hotplug/guest/applog/parse"
	"github.com/hotplugheaven/hotplug/guest/applog/stats"
	"github.com/hotplugheaven/hotplug/internal/cmdline"
)

// loadAppLogs reads apps_dir and prepares the gray-box source. With no
// application configured it returns an Apps that adds nothing.
func loadAppLogs(appsDir, stateDir string, logger hclog.Logger) (*applog.Apps, error) {
	cfgs, err := applog.LoadDir(appsDir)
	if err != nil {
		return nil, fmt.Errorf("apps_dir: %w", err)
	}
	if len(cfgs) > 0 {
		logger.Info("gray-box mode: tailing application logs", "applications", len(cfgs), "apps_dir", appsDir)
	}
	return applog.New(cfgs, applog.Options{StateDir: stateDir, Logger: logger.Named("applog")})
}

const logstatUsage = `Usage: hotplug-agent logstat --format FORMAT [--app FILE.toml] FILE...

Parses access logs once and prints their request statistics as JSON:
lines, parsed, malformed (by reason), requests, drops, service time and
inter-arrival time (mean, variance), response-time p50/p95/p99, first and
last timestamp. Times are seconds. Give files in chronological order.

--app takes format and options (fields, regex, units, drop statuses) from
an application config as in apps.d; --format may then be left out.
Formats: %s

Flags:
`

type logstatOut struct {
	Format       string            `json:"format"`
	Files        []string          `json:"files"`
	Lines        uint64            `json:"lines"`
	Parsed       uint64            `json:"parsed"`
	Meta         uint64            `json:"meta"`
	Malformed    map[string]uint64 `json:"malformed"`
	Requests     uint64            `json:"requests"`
	Drops        uint64            `json:"drops"`
	ServiceTime  *moments          `json:"service_time"`
	InterArrival *interArrival     `json:"inter_arrival"`
	ResponseTime *percentiles      `json:"response_time"`
	First        string            `json:"first,omitempty"`
	Last         string            `json:"last,omitempty"`
	SpanSeconds  float64           `json:"span_seconds"`
	Note         string            `json:"note,omitempty"`
}

type moments struct {
	N        uint64  `json:"n"`
	Mean     float64 `json:"mean"`
	Variance float64 `json:"variance"`
}

type interArrival struct {
	moments
	// Method: "timestamps" (sub-second stamps), "counts" (1-s bins, see
	// guest/applog/README.md) or "poisson-assumed" (too few bins).
	Method string `json:"method"`
}

type percentiles struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
}

// cmdLogstat parses access logs once and prints their statistics.
func cmdLogstat(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("logstat", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), logstatUsage, strings.Join(parse.Formats(), ", "))
		fs.PrintDefaults()
	}
	format := fs.String("format", "", "log format")
	appFile := fs.String("app", "", "application config (apps.d/*.toml) for format options")
	if cmdline.WantsHelp(args) {
		cmdline.ShowUsage(fs, stdout)
		return 0
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "hotplug-agent logstat: no log file given")
		fs.Usage()
		return 2
	}
	var cfg applog.App
	if *appFile != "" {
		var err error
		if cfg, err = applog.LoadFile(*appFile); err != nil {
			fmt.Fprintf(stderr, "hotplug-agent logstat: %v\n", err)
			return 2
		}
		if *format != "" && *format != cfg.Parse.Format {
			fmt.Fprintf(stderr, "hotplug-agent logstat: --format %s disagrees with format = %q in %s\n", *format, cfg.Parse.Format, *appFile)
			return 2
		}
	} else {
		if *format == "" {
			fmt.Fprintf(stderr, "hotplug-agent logstat: --format is required (one of %s) unless --app is given\n", strings.Join(parse.Formats(), ", "))
			return 2
		}
		// Defaults of an apps.d file: 5xx and 429 are drops.
		cfg.Parse.Format = *format
		for s := 500; s < 600; s++ {
			cfg.Drop[s] = true
		}
		cfg.Drop[429] = true
		cfg.MaxLineBytes = 64 << 10
	}
	if _, err := parse.New(cfg.Parse); err != nil {
		fmt.Fprintf(stderr, "hotplug-agent logstat: %v\n", err)
		return 2
	}
	out, err := logstat(cfg, fs.Args())
	if err != nil {
		fmt.Fprintf(stderr, "hotplug-agent logstat: %v\n", err)
		return 1
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fmt.Fprintf(stderr, "hotplug-agent logstat: %v\n", err)
		return 1
	}
	return 0
}

func logstat(cfg applog.App, files []string) (*logstatOut, error) {
	w := stats.New(stats.Options{MaxTimes: 1 << 22})
	out := &logstatOut{Format: cfg.Parse.Format, Files: files, Malformed: map[string]uint64{}}
	for _, name := range files {
		p, _ := parse.New(cfg.Parse) // checked by the caller
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		var rec parse.Record
		err = applog.Lines(bufio.NewReaderSize(f, 64<<10), cfg.MaxLineBytes, func(line []byte, cut bool) {
			out.Lines++
			r := parse.TooLong
			if !cut {
				r = p.Parse(line, &rec)
			}
			switch {
			case r == parse.OK:
				out.Parsed++
				w.Add(&rec, rec.Status >= 0 && rec.Status < len(cfg.Drop) && cfg.Drop[rec.Status])
			case r == parse.Meta:
				out.Parsed++
				out.Meta++
			default:
				w.Malformed(r)
			}
		})
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	s := w.Summary(true)
	for r, n := range s.MalformedBy {
		if n > 0 {
			out.Malformed[parse.Reason(r).String()] = n
		}
	}
	out.Requests, out.Drops = s.Arrivals, s.Drops
	if s.ServiceN > 0 {
		out.ServiceTime = &moments{s.ServiceN, s.ServiceMean, s.ServiceVar}
		out.ResponseTime = &percentiles{s.RespP50, s.RespP95, s.RespP99}
	} else if s.Arrivals > 0 {
		out.Note = "no duration field in this log: arrivals only, no service or response time"
	}
	if s.Arrivals > 0 {
		ia := &interArrival{moments: moments{s.InterArrivalN, s.InterArrivalMean, s.InterArrivalVar}, Method: "timestamps"}
		switch {
		case s.AssumedPoisson:
			ia.Method = "poisson-assumed"
		case s.FromCounts:
			ia.Method = "counts"
		}
		out.InterArrival = ia
		out.First = time.Unix(0, s.First).UTC().Format(time.RFC3339Nano)
		out.Last = time.Unix(0, s.Last).UTC().Format(time.RFC3339Nano)
		out.SpanSeconds = s.SpanSeconds
	}
	return out, nil
}
