package applog

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/guest/applog/parse"
	"github.com/hotplugheaven/hotplug/guest/applog/stats"
	"github.com/hotplugheaven/hotplug/proto"
)

func report(ivl time.Duration) *proto.Report {
	return &proto.Report{Seq: 1, IntervalNanos: int64(ivl), MonotonicNanos: 1, WallUnixNanos: 1}
}

func nginxLine(sec int, status int, d float64) string {
	t := time.Unix(1700000000+int64(sec), 0).UTC().Format("02/Jan/2006:15:04:05 -0700")
	return fmt.Sprintf(`10.0.0.1 - - [%s] "GET /x HTTP/1.1" %d 10 "-" "bench" %.3f`+"\n", t, status, d)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestAppsEndToEnd: config file → tailer → parser → stats → AppStats that
// pass Report.Validate; positions survive a restart.
func TestAppsEndToEnd(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "access.log")
	os.WriteFile(log, nil, 0o644)
	conf := writeConf(t, dir, "web.toml", fmt.Sprintf("path = %q\nformat = \"nginx\"\n[sla]\npercentile = \"p99\"\ntarget = \"500ms\"\n", log))
	cfg, err := LoadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	run := func() (*Apps, context.CancelFunc, chan error) {
		a, err := New([]App{cfg}, Options{StateDir: state, Poll: 5 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		return a, cancel, done
	}
	a, cancel, done := run()
	time.Sleep(30 * time.Millisecond) // let it find the (empty) file
	f, _ := os.OpenFile(log, os.O_APPEND|os.O_WRONLY, 0)
	var b strings.Builder
	for sec := 0; sec < 10; sec++ {
		for k := 0; k < 20; k++ {
			st := 200
			if k == 0 {
				st = 503
			}
			b.WriteString(nginxLine(sec, st, 0.010+0.001*float64(k)))
		}
	}
	b.WriteString("garbage\n")
	f.WriteString(b.String())
	// The tailer may read the batch over several samples (on a loaded
	// machine it does): counts add up over them, means are weighted.
	var got proto.AppStats // the sample with the most arrivals
	var total, drops uint64
	var svcSum float64
	waitFor(t, "200 requests", func() bool {
		r := report(5 * time.Second)
		a.Fill(r)
		if len(r.Apps) != 1 {
			t.Fatalf("%d apps", len(r.Apps))
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("AppStats fail validation: %v\n%+v", err, r.Apps[0])
		}
		x := r.Apps[0]
		if x.Arrivals > got.Arrivals {
			got = x
		}
		total += x.Arrivals
		drops += x.Drops
		svcSum += x.ServiceMean * float64(x.Arrivals)
		return total == 200
	})
	if drops != 10 || got.SLAPercentile != 0.99 || got.SLATarget != 0.5 {
		t.Errorf("drops %d; stats: %+v", drops, got)
	}
	if !got.InterArrivalFromCounts || got.InterArrivalMean < 0.049 || got.InterArrivalMean > 0.051 {
		t.Errorf("inter-arrival: %+v", got)
	}
	if mean := svcSum / float64(total); got.RespP50 < 0.019 || got.RespP50 > 0.021 || mean < 0.0199 || mean > 0.0201 {
		t.Errorf("service: mean %.5f over all samples; %+v", mean, got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Written while the agent is down, read exactly once after the restart.
	f.WriteString(nginxLine(20, 200, 0.1) + nginxLine(21, 200, 0.1))
	f.Close()
	a, cancel, done = run()
	defer func() { cancel(); <-done }()
	total = 0
	waitFor(t, "2 more requests", func() bool {
		r := report(5 * time.Second)
		a.Fill(r)
		total += r.Apps[0].Arrivals
		return total >= 2
	})
	time.Sleep(50 * time.Millisecond)
	r := report(5 * time.Second)
	a.Fill(r)
	if total+r.Apps[0].Arrivals != 2 {
		t.Fatalf("after restart: %d requests, want 2", total+r.Apps[0].Arrivals)
	}
}

// TestEveryAppStatsValidates runs every fixture through the interval path
// and checks each AppStats against the wire contract.
func TestEveryAppStatsValidates(t *testing.T) {
	fixtures := map[string]string{
		"beats_nginx_ingress_controller.log": "ingress_nginx",
		"lnav_logfile_access_log.0":          "combined",
		"lnav_logfile_haproxy.0":             "haproxy",
		"lnav_logfile_w3c_big.0":             "w3c",
		"lnav_logfile_w3c.1":                 "w3c",
		"lnav_logfile_w3c.3":                 "w3c",
		"lnav_logfile_w3c.6":                 "w3c",
		"nasa_Aug95_head300.log":             "clf",
	}
	for file, format := range fixtures {
		cfg := App{Name: "fx", Parse: parse.Options{Format: format}, MaxLineBytes: 1 << 16}
		cfg.Drop[503] = true
		for _, chunk := range []int{1, 7, 1000} { // lines per interval
			f, err := os.Open(filepath.Join("parse", "testdata", file))
			if err != nil {
				t.Fatal(err)
			}
			p, _ := parse.New(cfg.Parse)
			w := stats.New(stats.Options{MaxGapBins: 60})
			n := 0
			check := func() {
				s := w.Summary(false)
				r := report(time.Second)
				r.Apps = []proto.AppStats{ToAppStats(cfg, s, 1)}
				w.Reset()
				if err := r.Validate(); err != nil {
					t.Fatalf("%s: %v\n%+v", file, err, r.Apps[0])
				}
			}
			Lines(bufio.NewReader(f), cfg.MaxLineBytes, func(line []byte, cut bool) {
				var rec parse.Record
				if r := p.Parse(line, &rec); r == parse.OK {
					w.Add(&rec, cfg.Drop[rec.Status])
				} else if r.Malformed() {
					w.Malformed(r)
				}
				if n++; n%chunk == 0 {
					check()
				}
			})
			check()
			f.Close()
		}
	}
}

func TestLinesBounded(t *testing.T) {
	in := "short\r\n" + strings.Repeat("x", 300) + "\nafter\nlast no newline"
	var got []string
	cuts := 0
	Lines(bufio.NewReaderSize(strings.NewReader(in), 16), 100, func(l []byte, cut bool) {
		if cut {
			cuts++
		}
		got = append(got, string(l))
	})
	want := []string{"short", strings.Repeat("x", 100), "after", "last no newline"}
	if strings.Join(got, "|") != strings.Join(want, "|") || cuts != 1 {
		t.Fatalf("got %q (%d cut)", got, cuts)
	}
}

func TestW3CHeaderFoundWhenResumingMidFile(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "u_ex.log")
	hdr := "#Software: IIS\n#Fields: date time sc-status time-taken\n"
	os.WriteFile(log, []byte(hdr+"2015-01-13 00:00:01 200 5\n"), 0o644)
	cfg := App{Name: "iis", Path: log, Parse: parse.Options{Format: "w3c"}, MaxLineBytes: 1 << 16}
	cfg.Drop[503] = true
	a, err := New([]App{cfg}, Options{}) // no state: starts at the end
	if err != nil {
		t.Fatal(err)
	}
	a.apps[0].tailer.Poll()
	f, _ := os.OpenFile(log, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("2015-01-13 00:00:02 503 7\n")
	f.Close()
	a.apps[0].tailer.Poll()
	r := report(time.Second)
	a.Fill(r)
	if s := r.Apps[0]; s.Arrivals != 1 || s.Drops != 1 {
		t.Fatalf("%+v", s)
	}
}

// TestAppsCPUFromUnits: the CPU time of the units an apps.d file names is
// the delta of their cgroups' usage_usec between reports; a unit that
// cannot be read, or a counter that went back (restart), leaves the
// interval without a CPU measurement rather than a wrong one.
func TestAppsCPUFromUnits(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "cgroup")
	setUsage := func(unit string, usec int) {
		d := filepath.Join(root, "system.slice", unit)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "cpu.stat"), []byte(fmt.Sprintf("usage_usec %d\nuser_usec 0\nsystem_usec 0\n", usec)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	setUsage("nginx.service", 1_000_000)
	setUsage("php8.2-fpm.service", 5_000_000)
	log := filepath.Join(dir, "access.log")
	os.WriteFile(log, nil, 0o644)
	conf := writeConf(t, dir, "web.toml", fmt.Sprintf("path = %q\nformat = \"nginx\"\nunits = [\"nginx.service\", \"php8.2-fpm.service\"]\n[sla]\nmean = \"100ms\"\n", log))
	cfg, err := LoadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	a, err := New([]App{cfg}, Options{CgroupRoot: root, NoNotify: true})
	if err != nil {
		t.Fatal(err)
	}
	fill := func() proto.AppStats {
		r := report(2 * time.Second)
		if err := a.Fill(r); err != nil {
			t.Fatal(err)
		}
		if err := r.Validate(); err != nil {
			t.Fatal(err)
		}
		return r.Apps[0]
	}
	setUsage("nginx.service", 1_200_000)
	setUsage("php8.2-fpm.service", 5_600_000)
	if got := fill(); got.CPUSource != proto.CPUSourceCgroup || got.CPUSeconds < 0.8-1e-9 || got.CPUSeconds > 0.8+1e-9 {
		t.Fatalf("first interval: %v s from %q, want 0.8 s from cgroup", got.CPUSeconds, got.CPUSource)
	}
	setUsage("php8.2-fpm.service", 100) // restarted
	if got := fill(); got.CPUSource != "" || got.CPUSeconds != 0 {
		t.Fatalf("after a restart: %v s from %q, want no measurement", got.CPUSeconds, got.CPUSource)
	}
	setUsage("php8.2-fpm.service", 300_100)
	if got := fill(); got.CPUSource != proto.CPUSourceCgroup || got.CPUSeconds < 0.3-1e-9 || got.CPUSeconds > 0.3+1e-9 {
		t.Fatalf("after the restart: %v s from %q, want 0.3 s", got.CPUSeconds, got.CPUSource)
	}
	os.RemoveAll(filepath.Join(root, "system.slice", "nginx.service"))
	if got := fill(); got.CPUSource != "" {
		t.Fatalf("unit gone: %v s from %q, want no measurement", got.CPUSeconds, got.CPUSource)
	}
	if _, err := LoadFile(writeConf(t, dir, "bad.toml", fmt.Sprintf("path = %q\nformat = \"nginx\"\nunits = [\"../etc\"]\n", log))); err == nil ||
		!strings.Contains(err.Error(), "units[0]") {
		t.Fatalf("bad unit name: %v", err)
	}
}
