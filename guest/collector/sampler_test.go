package collector

import (
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/proto"
)

// primed returns a Sampler on a copy of testdata/<name> whose first sample
// has been taken, with the clock moved on by ivl.
func primed(t testing.TB, name string, ivl time.Duration) (*Sampler, string, *fakeClock) {
	t.Helper()
	root := fixture(t, name)
	clk := newFakeClock()
	s, err := New(optionsFor(root, clk))
	if err != nil {
		t.Fatal(err)
	}
	if r, err := s.Sample(); !errors.Is(err, ErrNoBaseline) || r != nil {
		t.Fatalf("first Sample = %v, %v; want nil, ErrNoBaseline", r, err)
	}
	clk.advance(ivl)
	return s, root, clk
}

func mustSample(t testing.TB, s *Sampler) *proto.Report {
	t.Helper()
	r, err := s.Sample()
	if err != nil {
		t.Fatalf("Sample: %v", err)
	}
	// Seq belongs to the agent; set it so Validate can run.
	r.Seq = 1
	if err := r.Validate(); err != nil {
		t.Fatalf("report does not validate: %v\n%+v", err, r)
	}
	return r
}

func closeTo(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

func checkCPUs(t *testing.T, got []proto.CPUStat, want []proto.CPUStat) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("CPUs = %+v\nwant %+v", got, want)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.CPU != w.CPU || !closeTo(float64(g.Busy), float64(w.Busy)) || !closeTo(float64(g.Idle), float64(w.Idle)) ||
			!closeTo(float64(g.IOWait), float64(w.IOWait)) || !closeTo(float64(g.Steal), float64(w.Steal)) {
			t.Errorf("CPUs[%d] = %+v, want %+v", i, g, w)
		}
	}
}

// TestSample runs two samples on the 4-CPU fixture, two seconds apart, and
// checks every field of the Report against the deltas written in between.
func TestSample(t *testing.T) {
	s, root, clk := primed(t, "guest4", 2*time.Second)

	advanceStat(t, root, map[int]statDelta{
		// user nice system idle iowait irq softirq steal guest guest_nice
		0: {120, 0, 20, 40, 10, 0, 0, 10, 80, 0}, // guest time is inside user
		1: {50, 10, 20, 100, 0, 10, 10, 0, 0, 0},
		2: {0, 0, 0, 200, 0, 0, 0, 0, 0, 0},
		3: {180, 0, 0, 0, 0, 0, 0, 20, 0, 0},
	})
	advanceSchedstat(t, root,
		map[int]uint64{0: 250_000_000, 2: 1_000, 3: 3_500_000_000},
		map[int]uint64{0: 1200, 1: 40, 2: 2, 3: 300})
	advanceVMStat(t, root, 100, 250)
	for name, d := range map[string]uint64{"workingset_refault_anon": 7, "workingset_refault_file": 900, "pgmajfault": 33,
		"allocstall_normal": 2, "allocstall_movable": 1, "oom_kill": 1} {
		advanceVMStatCounter(t, root, name, d)
	}
	writeFile(t, root, "proc/pressure/cpu", "some avg10=12.50 avg60=4.08 avg300=1.37 total=49192637\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
	// 0.3 s of some-stall and 0.1 s of full-stall in the 2 s interval.
	writeFile(t, root, "proc/pressure/memory", "some avg10=15.00 avg60=3.00 avg300=1.00 total=300000\nfull avg10=5.00 avg60=1.00 avg300=0.30 total=100000\n")
	writeFile(t, root, "proc/loadavg", "2.10 1.20 0.80 5/230 18500\n")

	r := mustSample(t, s)
	wantMem := proto.MemoryStats{HavePSI: true, PSISomeMicros: 300000, PSIFullMicros: 100000, RefaultAnon: 7, RefaultFile: 900,
		MajorFaults: 33, AllocStalls: 3, OOMKills: 1, BlockBytes: 128 << 20, BlocksOnline: 32, BlocksOffline: 2}
	if r.Memory == nil || *r.Memory != wantMem {
		t.Errorf("Memory = %+v, want %+v", r.Memory, wantMem)
	}
	if err := r.Validate(); err != nil {
		t.Errorf("report invalid: %v", err)
	}

	if r.MonotonicNanos != clk.mono || r.WallUnixNanos != clk.wall.UnixNano() {
		t.Errorf("timestamps = %d, %d; want %d, %d", r.MonotonicNanos, r.WallUnixNanos, clk.mono, clk.wall.UnixNano())
	}
	if r.IntervalNanos != int64(2*time.Second) {
		t.Errorf("IntervalNanos = %d, want 2s", r.IntervalNanos)
	}
	checkCPUs(t, r.CPUs, []proto.CPUStat{
		{CPU: 0, Busy: 0.70, Idle: 0.20, IOWait: 0.05, Steal: 0.05},
		{CPU: 1, Busy: 0.50, Idle: 0.50},
		{CPU: 2, Idle: 1},
		{CPU: 3, Busy: 0.90, Steal: 0.10},
	})
	if r.Online.String() != "0-3" || r.Present.String() != "0-3" {
		t.Errorf("Online, Present = %q, %q; want 0-3, 0-3", r.Online, r.Present)
	}
	if r.Load1 != 2.10 {
		t.Errorf("load1 = %v", r.Load1)
	}
	if r.PSI == nil || r.PSI.SomeAvg10 != 12.5 || r.PSI.SomeTotalMicros != 49192637 {
		t.Errorf("PSI = %+v", r.PSI)
	}
	wantDelay := []proto.RunDelay{
		{CPU: 0, WaitNanos: 250_000_000, Timeslices: 1200},
		{CPU: 1, WaitNanos: 0, Timeslices: 40},
		{CPU: 2, WaitNanos: 1_000, Timeslices: 2},
		{CPU: 3, WaitNanos: 3_500_000_000, Timeslices: 300},
	}
	if len(r.RunDelay) != len(wantDelay) {
		t.Fatalf("RunDelay = %+v, want %+v", r.RunDelay, wantDelay)
	}
	for i := range wantDelay {
		if r.RunDelay[i] != wantDelay[i] {
			t.Errorf("RunDelay[%d] = %+v, want %+v", i, r.RunDelay[i], wantDelay[i])
		}
	}
	if r.MemTotalBytes != 4025436*1024 || r.MemAvailableBytes != 3314772*1024 {
		t.Errorf("memory = %d of %d", r.MemAvailableBytes, r.MemTotalBytes)
	}
	if r.SwapInPerSec != 50 || r.SwapOutPerSec != 125 {
		t.Errorf("swap = %v in, %v out per second; want 50, 125", r.SwapInPerSec, r.SwapOutPerSec)
	}
	if r.Seq != 1 || r.Dropped != 0 {
		t.Errorf("Sample touched Seq or Dropped")
	}

	for _, src := range s.Sources() {
		if !src.InUse || src.Err != nil {
			t.Errorf("source %s: in use %v, err %v", src.Name, src.InUse, src.Err)
		}
	}
}

// TestSampleHotplug: a CPU hot-added since the last sample has no baseline
// and is left out; one whose counters went backwards (re-onlined) restarts
// its baseline; one that went offline is simply gone. All three are back to
// normal the round after.
func TestSampleHotplug(t *testing.T) {
	s, root, clk := primed(t, "guest4", time.Second)

	// cpu3 goes offline, cpu2 is re-onlined with counters lower than
	// before, cpu4 is hot-added and onlined.
	editCounterLines(t, root, "proc/stat", "cpu", func(cpu int, f []uint64) []uint64 {
		switch cpu {
		case 0, 1:
			f[0] += 50
			f[3] += 50
		case 2:
			f[3] -= 1000
		case 3:
			return nil
		}
		return f
	})
	stat := readFile(t, root, "proc/stat")
	stat = strings.Replace(stat, "intr ", "cpu4 10 0 5 80 0 0 0 0 0 0\nintr ", 1)
	writeFile(t, root, "proc/stat", stat)
	editCounterLines(t, root, "proc/schedstat", "cpu", func(cpu int, f []uint64) []uint64 {
		switch cpu {
		case 2:
			f[7] -= 5 // went backwards
		case 3:
			return nil
		}
		return f
	})
	writeFile(t, root, "sys/devices/system/cpu/present", "0-4\n")
	writeFile(t, root, "sys/devices/system/cpu/online", "0-2,4\n")

	r := mustSample(t, s)
	checkCPUs(t, r.CPUs, []proto.CPUStat{
		{CPU: 0, Busy: 0.5, Idle: 0.5},
		{CPU: 1, Busy: 0.5, Idle: 0.5},
	})
	if len(r.RunDelay) != 2 || r.RunDelay[0].CPU != 0 || r.RunDelay[1].CPU != 1 {
		t.Errorf("RunDelay = %+v, want cpus 0 and 1", r.RunDelay)
	}
	if r.Online.String() != "0-2,4" || r.Present.String() != "0-4" {
		t.Errorf("Online, Present = %q, %q", r.Online, r.Present)
	}

	// Next round: cpu2 and cpu4 have baselines now.
	clk.advance(time.Second)
	advanceStat(t, root, map[int]statDelta{
		0: {0, 0, 0, 100}, 1: {0, 0, 0, 100}, 2: {25, 0, 0, 75}, 4: {100},
	})
	r = mustSample(t, s)
	checkCPUs(t, r.CPUs, []proto.CPUStat{
		{CPU: 0, Idle: 1}, {CPU: 1, Idle: 1}, {CPU: 2, Busy: 0.25, Idle: 0.75}, {CPU: 4, Busy: 1},
	})
	if len(r.RunDelay) != 3 {
		t.Errorf("RunDelay = %+v, want cpus 0, 1 and 2", r.RunDelay)
	}
}

// TestMinimalKernel: without PSI, schedstat and MemAvailable the sample
// still succeeds, and Sources says what is missing and why.
func TestMinimalKernel(t *testing.T) {
	s, root, _ := primed(t, "minimal", time.Second)
	advanceStat(t, root, map[int]statDelta{0: {30, 0, 10, 60}, 1: {0, 0, 0, 100}})
	advanceVMStat(t, root, 7, 0)

	r := mustSample(t, s)
	checkCPUs(t, r.CPUs, []proto.CPUStat{{CPU: 0, Busy: 0.4, Idle: 0.6}, {CPU: 1, Idle: 1}})
	if r.PSI != nil || r.RunDelay != nil {
		t.Errorf("PSI = %+v, RunDelay = %+v; want nil, nil", r.PSI, r.RunDelay)
	}
	// MemFree + Buffers + Cached.
	if want := uint64(612384+41120+230912) * 1024; r.MemAvailableBytes != want {
		t.Errorf("MemAvailableBytes = %d, want estimate %d", r.MemAvailableBytes, want)
	}
	if r.SwapInPerSec != 7 {
		t.Errorf("SwapInPerSec = %v, want 7", r.SwapInPerSec)
	}

	got := map[string]SourceState{}
	for _, src := range s.Sources() {
		got[src.Name] = src
	}
	for _, tc := range []struct {
		name  string
		inUse bool
		is    error
	}{
		{SourceStat, true, nil},
		{SourceCPULists, true, nil},
		{SourceLoadAvg, true, nil},
		{SourceMeminfo, true, errNoMemAvailable},
		{SourcePSI, false, fs.ErrNotExist},
		{SourceSchedstat, false, fs.ErrNotExist},
		{SourceVMStat, true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, ok := got[tc.name]
			if !ok {
				t.Fatal("not reported")
			}
			if src.InUse != tc.inUse || !errors.Is(src.Err, tc.is) || (tc.is == nil) != (src.Err == nil) {
				t.Errorf("InUse %v, Err %v; want %v, %v", src.InUse, src.Err, tc.inUse, tc.is)
			}
			if src.Err != nil && !strings.Contains(src.Err.Error(), root) && tc.name != SourceMeminfo {
				t.Errorf("error %q does not name the file", src.Err)
			}
		})
	}
}

// TestRequiredSources: without /proc/stat, the CPU lists, loadavg or
// meminfo there is no Report, and the error names the file.
func TestRequiredSources(t *testing.T) {
	for _, tc := range []struct {
		remove string
		source string
	}{
		{"proc/stat", SourceStat},
		{"sys/devices/system/cpu/online", SourceCPULists},
		{"sys/devices/system/cpu/present", SourceCPULists},
		{"proc/loadavg", SourceLoadAvg},
		{"proc/meminfo", SourceMeminfo},
	} {
		t.Run(tc.remove, func(t *testing.T) {
			root := fixture(t, "guest4")
			if err := os.Remove(filepath.Join(root, tc.remove)); err != nil {
				t.Fatal(err)
			}
			s, err := New(optionsFor(root, newFakeClock()))
			if err != nil {
				t.Fatal(err)
			}
			r, err := s.Sample()
			if r != nil || err == nil || errors.Is(err, ErrNoBaseline) {
				t.Fatalf("Sample = %v, %v; want a failure", r, err)
			}
			if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), tc.remove) {
				t.Errorf("error %q does not say %s is missing", err, tc.remove)
			}
			for _, src := range s.Sources() {
				if src.Name == tc.source && (src.InUse || src.Err == nil) {
					t.Errorf("Sources: %s in use %v, err %v", src.Name, src.InUse, src.Err)
				}
			}
		})
	}
}

// TestFailedSampleKeepsBaseline: a sample that fails on a required source
// leaves the baseline alone; the next success covers both intervals.
func TestFailedSampleKeepsBaseline(t *testing.T) {
	s, root, clk := primed(t, "guest4", time.Second)
	stat := readFile(t, root, "proc/stat")
	if err := os.Remove(filepath.Join(root, "proc/stat")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sample(); err == nil {
		t.Fatal("Sample without /proc/stat succeeded")
	}
	writeFile(t, root, "proc/stat", stat)
	advanceStat(t, root, map[int]statDelta{0: {100, 0, 0, 100}})
	clk.advance(time.Second)
	r := mustSample(t, s)
	if r.IntervalNanos != int64(2*time.Second) {
		t.Errorf("IntervalNanos = %v, want 2s", time.Duration(r.IntervalNanos))
	}
	if len(r.CPUs) != 1 || r.CPUs[0].Busy != 0.5 {
		t.Errorf("CPUs = %+v, want cpu0 half busy (the others did not tick)", r.CPUs)
	}
}

func TestSampleTiming(t *testing.T) {
	t.Run("too soon keeps the baseline", func(t *testing.T) {
		s, root, clk := primed(t, "guest4", 50*time.Millisecond)
		if _, err := s.Sample(); !errors.Is(err, ErrTooSoon) {
			t.Fatalf("Sample after 50ms: %v, want ErrTooSoon", err)
		}
		clk.advance(950 * time.Millisecond)
		advanceStat(t, root, map[int]statDelta{0: {0, 0, 0, 100}})
		if r := mustSample(t, s); r.IntervalNanos != int64(time.Second) {
			t.Errorf("IntervalNanos = %v, want 1s", time.Duration(r.IntervalNanos))
		}
	})
	t.Run("a long gap re-primes", func(t *testing.T) {
		s, root, clk := primed(t, "guest4", 2*time.Hour)
		advanceStat(t, root, map[int]statDelta{0: {0, 0, 0, 100}})
		if _, err := s.Sample(); !errors.Is(err, ErrNoBaseline) {
			t.Fatalf("Sample after 2h: %v, want ErrNoBaseline", err)
		}
		clk.advance(time.Second)
		advanceStat(t, root, map[int]statDelta{0: {100}})
		r := mustSample(t, s)
		if r.IntervalNanos != int64(time.Second) || len(r.CPUs) != 1 || r.CPUs[0].Busy != 1 {
			t.Errorf("after re-priming: interval %v, CPUs %+v", time.Duration(r.IntervalNanos), r.CPUs)
		}
	})
	t.Run("a clock going backwards re-primes", func(t *testing.T) {
		s, root, clk := primed(t, "guest4", -time.Second)
		if _, err := s.Sample(); !errors.Is(err, ErrNoBaseline) {
			t.Fatalf("Sample after the clock went back: %v, want ErrNoBaseline", err)
		}
		clk.advance(time.Second)
		advanceStat(t, root, map[int]statDelta{0: {100}})
		if r := mustSample(t, s); r.IntervalNanos != int64(time.Second) {
			t.Errorf("IntervalNanos = %v, want 1s", time.Duration(r.IntervalNanos))
		}
	})
	t.Run("negative monotonic clock", func(t *testing.T) {
		clk := newFakeClock()
		clk.mono = -1
		s, err := New(optionsFor(fixture(t, "guest4"), clk))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Sample(); err == nil || errors.Is(err, ErrNoBaseline) {
			t.Fatalf("Sample with a negative clock: %v", err)
		}
	})
}

// TestHostileValues feeds values no kernel prints and checks the Report
// still validates or the sample fails — never a Report that the actuator
// would reject.
func TestHostileValues(t *testing.T) {
	for _, tc := range []struct {
		name    string
		file    string
		content string
		wantErr bool
		check   func(t *testing.T, s *Sampler, r *proto.Report)
	}{
		{name: "NaN load", file: "proc/loadavg", content: "NaN 0.1 0.1 1/2 3\n", wantErr: true},
		{name: "absurd load", file: "proc/loadavg", content: "1e9 0.1 0.1 1/2 3\n", wantErr: true},
		{name: "MemAvailable above MemTotal", file: "proc/meminfo", content: "MemTotal: 1000 kB\nMemFree: 10 kB\nMemAvailable: 2000 kB\n",
			check: func(t *testing.T, _ *Sampler, r *proto.Report) {
				if r.MemAvailableBytes != r.MemTotalBytes {
					t.Errorf("MemAvailableBytes %d not clamped to %d", r.MemAvailableBytes, r.MemTotalBytes)
				}
			}},
		{name: "no MemTotal", file: "proc/meminfo", content: "MemFree: 10 kB\n", wantErr: true},
		{name: "petabytes of memory", file: "proc/meminfo", content: "MemTotal: 2251799813685248 kB\nMemAvailable: 1 kB\n", wantErr: true},
		{name: "PSI NaN", file: "proc/pressure/cpu", content: "some avg10=NaN avg60=0 avg300=0 total=1\n",
			check: func(t *testing.T, s *Sampler, r *proto.Report) {
				if r.PSI != nil {
					t.Errorf("PSI = %+v, want nil", r.PSI)
				}
				if src := s.Sources()[srcPSI]; src.InUse || !errors.Is(src.Err, ErrParse) {
					t.Errorf("psi source: %+v", src)
				}
			}},
		{name: "PSI over 100", file: "proc/pressure/cpu", content: "some avg10=100.01 avg60=0 avg300=0 total=1\n",
			check: func(t *testing.T, _ *Sampler, r *proto.Report) {
				if r.PSI == nil || r.PSI.SomeAvg10 != 100 {
					t.Errorf("PSI = %+v, want avg10 clamped to 100", r.PSI)
				}
			}},
		{name: "PSI without some line", file: "proc/pressure/cpu", content: "full avg10=1 avg60=0 avg300=0 total=1\n",
			check: func(t *testing.T, _ *Sampler, r *proto.Report) {
				if r.PSI != nil {
					t.Errorf("PSI = %+v, want nil", r.PSI)
				}
			}},
		{name: "schedstat of an unknown format", file: "proc/schedstat", content: "version 99\ncpu0 1 2 3\n",
			check: func(t *testing.T, s *Sampler, r *proto.Report) {
				if r.RunDelay != nil {
					t.Errorf("RunDelay = %+v, want nil", r.RunDelay)
				}
				if src := s.Sources()[srcSchedstat]; src.InUse || !errors.Is(src.Err, ErrParse) {
					t.Errorf("schedstat source: %+v", src)
				}
			}},
		{name: "schedstat wait beyond any interval", file: "proc/schedstat",
			content: "version 15\ntimestamp 1\ncpu0 0 0 1 1 1 1 1 18446744073709551615 9\n",
			check: func(t *testing.T, _ *Sampler, r *proto.Report) {
				// The baseline had cpu0 at 31277415112; the jump is
				// too large to be real.
				for _, d := range r.RunDelay {
					if d.CPU == 0 {
						t.Errorf("RunDelay kept %+v", d)
					}
				}
			}},
		{name: "schedstat cpu repeated", file: "proc/schedstat",
			content: "version 15\ntimestamp 1\ncpu1 0 0 1 1 1 1 1 35120087443 1805321\ncpu1 0 0 1 1 1 1 1 35120087443 1805321\n"},
		{name: "vmstat swap counter garbage", file: "proc/vmstat", content: "pswpin x\npswpout 1\n",
			check: func(t *testing.T, s *Sampler, r *proto.Report) {
				if r.SwapInPerSec != 0 || s.Sources()[srcVMStat].InUse {
					t.Errorf("swap in %v, source %+v", r.SwapInPerSec, s.Sources()[srcVMStat])
				}
			}},
		{name: "online not within present", file: "sys/devices/system/cpu/online", content: "0-5\n",
			check: func(t *testing.T, _ *Sampler, r *proto.Report) {
				if r.Online.String() != "0-3" {
					t.Errorf("Online = %q, want 0-3 (clipped to present)", r.Online)
				}
			}},
		{name: "stat without cpu lines", file: "proc/stat", content: "ctxt 1\nprocs_running 1\n", wantErr: true},
		{name: "stat NaN counter", file: "proc/stat", content: "cpu0 NaN 0 0 100 0 0 0 0 0 0\ncpu1 1 1 1 1 1 1 1 1 1 1\n",
			check: func(t *testing.T, _ *Sampler, r *proto.Report) {
				for _, c := range r.CPUs {
					if c.CPU == 0 {
						t.Errorf("kept %+v", c)
					}
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, root, _ := primed(t, "guest4", time.Second)
			writeFile(t, root, tc.file, tc.content)
			r, err := s.Sample()
			if tc.wantErr {
				if err == nil {
					t.Fatalf("Sample succeeded: %+v", r)
				}
				if !strings.Contains(err.Error(), tc.file) {
					t.Errorf("error %q does not name %s", err, tc.file)
				}
				return
			}
			if err != nil {
				t.Fatalf("Sample: %v", err)
			}
			r.Seq = 1
			if err := r.Validate(); err != nil {
				t.Fatalf("report does not validate: %v", err)
			}
			if tc.check != nil {
				tc.check(t, s, r)
			}
		})
	}
}

func TestNewBadRoot(t *testing.T) {
	_, err := New(Options{ProcRoot: filepath.Join(t.TempDir(), "nope")})
	if err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("New on a missing proc root: %v", err)
	}
}

func TestSourcesBeforeSample(t *testing.T) {
	s, err := New(optionsFor(fixture(t, "guest4"), newFakeClock()))
	if err != nil {
		t.Fatal(err)
	}
	srcs := s.Sources()
	if len(srcs) != numSources {
		t.Fatalf("%d sources, want %d", len(srcs), numSources)
	}
	for _, src := range srcs {
		if src.InUse || src.Err == nil || src.Path == "" {
			t.Errorf("before any Sample: %+v", src)
		}
	}
	// Sources returns a copy.
	srcs[0].Name = "changed"
	if s.Sources()[0].Name != SourceStat {
		t.Error("Sources exposes the Sampler's state")
	}
}

func TestSystemClock(t *testing.T) {
	m1, w1 := SystemClock{}.Now()
	m2, w2 := SystemClock{}.Now()
	if m1 <= 0 || m2 < m1 || w1.IsZero() || w2.Before(w1.Add(-time.Second)) {
		t.Errorf("SystemClock: %d %v then %d %v", m1, w1, m2, w2)
	}
}

// BenchmarkSample measures one steady-state Sample on the 4-CPU fixture.
// Counters are advanced outside the timer so every iteration computes real
// deltas.
func BenchmarkSample(b *testing.B) {
	s, root, clk := primed(b, "guest4", time.Second)
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		clk.advance(time.Second)
		advanceStat(b, root, map[int]statDelta{0: {60, 0, 10, 30}, 1: {20, 0, 5, 75}, 2: {0, 0, 0, 100}, 3: {90, 0, 5, 0, 0, 0, 0, 5}})
		advanceSchedstat(b, root, map[int]uint64{0: 1e6, 1: 2e6, 2: 0, 3: 9e6}, map[int]uint64{0: 100, 1: 50, 2: 1, 3: 400})
		advanceVMStat(b, root, 1, 2)
		b.StartTimer()
		if _, err := s.Sample(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMemorySignals is the agent's cost per sample of the memory
// signals (the whole of /proc/vmstat, /proc/pressure/memory, and the
// memory blocks' states, read every blockRescan samples), on the fixture
// (34 blocks) and, natively, on this machine's own /proc and /sys.
func BenchmarkMemorySignals(b *testing.B) {
	for _, tc := range []struct{ name, proc, sys string }{
		{"fixture", "testdata/guest4/proc", "testdata/guest4/sys"},
		{"native", "/proc", "/sys"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			s, err := New(Options{ProcRoot: tc.proc, SysRoot: tc.sys})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			var blocks memBlocks
			for b.Loop() {
				for _, i := range []int{srcVMStat, srcPSIMemory} {
					s.srcs[i].Read()
				}
				blocks = blocksAt(s, 1<<30)
			}
			b.ReportMetric(float64(blocks.online+blocks.offline), "blocks")
		})
	}
}

// TestMemoryBlocksRescan: block states are read again when MemTotal moves
// (memory onlined), else every blockRescan samples.
func TestMemoryBlocksRescan(t *testing.T) {
	root := fixture(t, "guest4")
	s, err := New(Options{ProcRoot: root + "/proc", SysRoot: root + "/sys"})
	if err != nil {
		t.Fatal(err)
	}
	if b := blocksAt(s, 1<<30); b.online != 32 || b.offline != 2 || b.size != 128<<20 {
		t.Fatalf("blocks %+v", b)
	}
	writeFile(t, root, "sys/devices/system/memory/memory33/state", "online\n")
	for i := 1; i < blockRescan; i++ {
		if b := blocksAt(s, 1<<30); b.online != 32 {
			t.Fatalf("sample %d: rescanned without cause: %+v", i, b)
		}
	}
	if b := blocksAt(s, 1<<30); b.online != 33 || b.offline != 1 {
		t.Fatalf("after %d samples: %+v, want 33 online", blockRescan, b)
	}
	writeFile(t, root, "sys/devices/system/memory/memory32/state", "online\n")
	if b := blocksAt(s, 1<<30+128<<20); b.online != 34 || b.offline != 0 {
		t.Fatalf("MemTotal moved: %+v, want 34 online at once", b)
	}
	// A kernel without memory hot-plug has no directory: no blocks.
	if err := os.RemoveAll(root + "/sys/devices/system/memory"); err != nil {
		t.Fatal(err)
	}
	s.srcs[srcMemBlocks].(*memBlockSource).age = 0 // force a rescan
	if b := blocksAt(s, 1<<30); b != (memBlocks{}) {
		t.Fatalf("no directory: %+v", b)
	}
}

// recordingSource is an extra that needs what the collector's sources put
// in the Report, and fails on demand.
type recordingSource struct {
	fail     bool
	sawDelay []bool // per Fill: was RunDelay filled before it
	fills    int
}

func (*recordingSource) Name() string { return "recording" }
func (*recordingSource) Path() string { return "test" }
func (*recordingSource) Read() error  { return nil }
func (x *recordingSource) Fill(r *proto.Report) error {
	x.fills++
	x.sawDelay = append(x.sawDelay, len(r.RunDelay) > 0)
	if x.fail {
		return errors.New("broken")
	}
	return nil
}

// TestExtraSourcesRunAfterTheCollectors: an extra runs after the
// collector's sources, on every sample; its Fill error on the priming
// sample is not counted, later ones are, and it recovers.
func TestExtraSourcesRunAfterTheCollectors(t *testing.T) {
	root := fixture(t, "guest4")
	clk := newFakeClock()
	x := &recordingSource{fail: true}
	opts := optionsFor(root, clk)
	opts.Extra = []Source{x}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	srcs := s.Sources()
	if len(srcs) != numSources+1 || srcs[numSources].Name != "recording" || !errors.Is(srcs[numSources].Err, ErrNotSampled) {
		t.Fatalf("sources %+v", srcs)
	}
	if _, err := s.Sample(); !errors.Is(err, ErrNoBaseline) {
		t.Fatal(err)
	}
	if st := s.Sources()[numSources]; !st.InUse || st.Err != nil {
		t.Fatalf("a priming Fill error counted: %+v", st)
	}
	clk.advance(time.Second)
	advanceSchedstat(t, root, map[int]uint64{0: 1000}, map[int]uint64{0: 10})
	if _, err := s.Sample(); err != nil {
		t.Fatal(err)
	}
	if st := s.Sources()[numSources]; st.InUse || st.Err == nil || st.Err.Error() != "broken" {
		t.Fatalf("failed Fill: %+v", st)
	}
	x.fail = false
	clk.advance(time.Second)
	if _, err := s.Sample(); err != nil {
		t.Fatal(err)
	}
	if st := s.Sources()[numSources]; !st.InUse || st.Err != nil {
		t.Fatalf("recovered: %+v", st)
	}
	if x.fills != 3 || x.sawDelay[0] || !x.sawDelay[1] {
		t.Fatalf("fills %d, RunDelay seen %v: want 3, filled before the extra once primed", x.fills, x.sawDelay)
	}
}
