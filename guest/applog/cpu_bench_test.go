package applog

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/guest/applog/parse"
	"github.com/hotplugheaven/hotplug/proto"
)

const writerEnv = "HOTPLUG_APPLOG_BENCH_WRITER"

// TestMain turns the test binary into the log writer of
// BenchmarkTail10kLinesPerSecond when asked to, so that the writer's CPU
// is not counted in the benchmark's getrusage(RUSAGE_SELF).
func TestMain(m *testing.M) {
	if spec := os.Getenv(writerEnv); spec != "" {
		os.Exit(writeLog(spec))
	}
	os.Exit(m.Run())
}

// writeLog appends nginx lines at rate lines/s for secs seconds, in
// batches every 10 ms, stamped with the current time. spec: path,rate,secs.
func writeLog(spec string) int {
	parts := strings.Split(spec, ",")
	rate, _ := strconv.Atoi(parts[1])
	secs, _ := strconv.Atoi(parts[2])
	f, err := os.OpenFile(parts[0], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer f.Close()
	per := rate / 100
	start := time.Now()
	var buf []byte
	for tick := 0; tick < secs*100; tick++ {
		time.Sleep(time.Until(start.Add(time.Duration(tick) * 10 * time.Millisecond)))
		now := time.Now().UTC().Format("02/Jan/2006:15:04:05 -0700")
		buf = buf[:0]
		for i := 0; i < per; i++ {
			buf = fmt.Appendf(buf, `10.1.2.3 - - [%s] "GET /api/items/%d HTTP/1.1" %d 512 "-" "Mozilla/5.0 (X11; Linux x86_64)" 0.0%02d`+"\n",
				now, i, 200+303*(i%50/49), i%100)
		}
		if _, err := f.Write(buf); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return 0
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// BenchmarkTail10kLinesPerSecond measures the agent side of gray-box mode
// (tailer, parser, statistics, one Fill a second) while another process
// appends 10,000 nginx lines a second. Each iteration is one second; run
// with -benchtime=10x. It reports CPU seconds per wall second from
// getrusage, and the lines/s actually read.
func BenchmarkTail10kLinesPerSecond(b *testing.B) {
	const rate = 10000
	dir := b.TempDir()
	log := filepath.Join(dir, "access.log")
	os.WriteFile(log, nil, 0o644)
	cfg := App{Name: "bench", Path: log, Parse: parse.Options{Format: "nginx"}, MaxLineBytes: 64 << 10}
	cfg.Drop[503] = true
	a, err := New([]App{cfg}, Options{StateDir: dir})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	time.Sleep(500 * time.Millisecond) // the tailer has found the file

	secs := b.N
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%d,%d", writerEnv, log, rate, secs))
	cmd.Stderr = os.Stderr
	cpu0, t0 := cpuSeconds(), time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var total, drops uint64
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	fill := func() {
		r := &proto.Report{Seq: 1, IntervalNanos: int64(time.Second), MonotonicNanos: 1, WallUnixNanos: 1}
		a.Fill(r)
		if err := r.Validate(); err != nil {
			b.Fatal(err)
		}
		total += r.Apps[0].Arrivals
		drops += r.Apps[0].Drops
	}
	want := uint64(rate * secs)
	writing := true
	for writing || total < want {
		select {
		case err := <-exited:
			if err != nil {
				b.Fatal("writer:", err)
			}
			writing = false
			exited = nil
		case <-tick.C:
			fill()
		case <-time.After(10 * time.Second):
			b.Fatalf("read %d of %d lines", total, want)
		}
	}
	wall := time.Since(t0).Seconds()
	cpu := cpuSeconds() - cpu0
	b.ReportMetric(cpu/wall, "cpu-s/wall-s")
	b.ReportMetric(float64(total)/wall, "lines/s")
	b.ReportMetric(1e6*cpu/float64(total), "cpu-µs/line")
	if total != want {
		b.Fatalf("read %d lines, wrote %d", total, want)
	}
}
