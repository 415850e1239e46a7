package collector

import (
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"

	"github.com/hotplugheaven/hotplug/guest/cpu"
	"github.com/hotplugheaven/hotplug/proto"
)

// Errors returned by the collector, wrapped with detail; test with errors.Is.
var (
	// ErrNoBaseline: the sample primed the counters and has nothing to say
	// yet. It is returned by the first Sample, and again after a gap longer
	// than proto.MaxInterval (a suspended guest), which re-primes.
	ErrNoBaseline = errors.New("no baseline yet: this sample primed the counters")
	// ErrTooSoon: Sample was called less than proto.MinInterval after the
	// previous sample. The baseline is kept, so the next call covers the
	// whole time since then.
	ErrTooSoon = errors.New("sampled too soon after the previous sample")
	// ErrNotSampled is the state of a source no Sample has read yet.
	ErrNotSampled = errors.New("not sampled yet")
	// ErrParse: a kernel file did not hold what its documentation says.
	ErrParse = errors.New("unexpected content in kernel file")
)

// Options says where the kernel's file systems are. Zero fields mean the
// defaults.
type Options struct {
	ProcRoot string // default /proc
	SysRoot  string // default /sys
	EtcRoot  string // default /etc
	// Clock supplies timestamps; nil means the system's CLOCK_MONOTONIC and
	// wall clock.
	Clock Clock
	// Extra sources run after the collector's, in order, in the sampling
	// loop: the agent's run-queue latency and application logs. Their
	// failures degrade the Report, never fail it.
	Extra []Source
}

func (o Options) withDefaults() Options {
	if o.ProcRoot == "" {
		o.ProcRoot = "/proc"
	}
	if o.SysRoot == "" {
		o.SysRoot = "/sys"
	}
	if o.EtcRoot == "" {
		o.EtcRoot = "/etc"
	}
	if o.Clock == nil {
		o.Clock = SystemClock{}
	}
	return o
}

// Clock reads both clocks a Report carries, as close together as possible.
type Clock interface {
	// Now returns CLOCK_MONOTONIC in nanoseconds and the wall-clock time.
	Now() (monotonicNanos int64, wall time.Time)
}

// SystemClock is the Clock of the running kernel. CLOCK_MONOTONIC is read
// directly rather than through time.Now, whose monotonic reading has an
// unexported, process-relative origin that the host could not compare
// across agent restarts.
type SystemClock struct{}

// Now implements Clock.
func (SystemClock) Now() (int64, time.Time) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		// CLOCK_MONOTONIC exists on every kernel Go supports; a failure
		// here is a broken seccomp filter, and the interval check in
		// Sample turns the zero into ErrTooSoon or a re-prime rather than
		// a bad Report.
		return 0, time.Now()
	}
	return ts.Nano(), time.Now()
}

// Source names, as reported by Sources.
const (
	SourceStat      = "stat"      // /proc/stat — required
	SourceCPULists  = "cpulists"  // /sys/devices/system/cpu/{online,present} — required
	SourceLoadAvg   = "loadavg"   // /proc/loadavg — required
	SourceMeminfo   = "meminfo"   // /proc/meminfo — required
	SourcePSI       = "psi"       // /proc/pressure/cpu — optional
	SourceSchedstat = "schedstat" // /proc/schedstat — optional
	SourceVMStat    = "vmstat"    // /proc/vmstat — optional
	// /proc/pressure/memory — optional
	SourcePSIMemory = "psi_memory"
	// /sys/devices/system/memory — optional
	SourceMemBlocks = "memory_blocks"
)

// Sampler turns kernel counters into Reports: it runs its sources (the
// collector's, then Options.Extra) once per sample. Each source keeps its
// own baseline, so one Sampler serves one sampling loop, and a source
// which comes and goes primes itself without disturbing the others. It is
// not safe for concurrent use.
type Sampler struct {
	clock    Clock
	primed   bool
	prevMono int64

	srcs   []Source
	states []SourceState
	read   []bool // scratch: which sources Read this sample
}

// Indexes into the Sampler's sources, in the order Sources reports them.
// The first numRequired are required.
const (
	srcStat = iota
	srcCPULists
	srcLoadAvg
	srcMeminfo
	srcPSI
	srcSchedstat
	srcVMStat
	srcPSIMemory
	srcMemBlocks
	numSources
	numRequired = srcMeminfo + 1
)

// New returns a Sampler reading the trees opts names, then opts.Extra. It
// fails only when the proc root is not a directory; missing files are found
// by Sample.
func New(opts Options) (*Sampler, error) {
	opts = opts.withDefaults()
	pfs, err := procfs.NewFS(opts.ProcRoot)
	if err != nil {
		return nil, fmt.Errorf("collector: proc root: %w (is procfs mounted?)", err)
	}
	mem := &meminfoSource{fs: pfs, path: procPath(opts, "meminfo")}
	s := &Sampler{clock: opts.Clock}
	s.srcs = append([]Source{
		&statSource{fs: pfs, path: procPath(opts, "stat"), root: opts.ProcRoot},
		&cpuListSource{cpus: cpu.NewController(opts.SysRoot), path: opts.SysRoot + "/devices/system/cpu/{online,present}"},
		&loadAvgSource{fs: pfs, path: procPath(opts, "loadavg")},
		mem,
		&psiSource{fs: pfs, path: procPath(opts, "pressure/cpu")},
		&schedstatSource{fs: pfs, path: procPath(opts, "schedstat"), prev: make(map[int]schedCounters)},
		&vmstatSource{path: procPath(opts, "vmstat"), buf: make([]byte, 0, 8<<10)},
		&psiMemorySource{fs: pfs, path: procPath(opts, "pressure/memory")},
		&memBlockSource{dir: opts.SysRoot + "/devices/system/memory", meminfo: mem, buf: make([]byte, 0, 64)},
	}, opts.Extra...)
	s.states = make([]SourceState, len(s.srcs))
	s.read = make([]bool, len(s.srcs))
	for i, src := range s.srcs {
		s.states[i] = SourceState{Name: src.Name(), Path: src.Path(), Err: ErrNotSampled}
	}
	return s, nil
}

// inFile names path in err unless err already does (os and procfs errors
// mostly do), so messages carry the file exactly once.
func inFile(path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return err
	}
	return fmt.Errorf("%s: %w", path, err)
}

// absent explains a missing optional file; the result still matches
// fs.ErrNotExist.
func absent(path string, err error, why string) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w: %s", path, fs.ErrNotExist, why)
	}
	return inFile(path, err)
}

func procPath(o Options, rel string) string { return o.ProcRoot + "/" + rel }

// Sources reports, per source, whether the last Sample used it and, if
// not, why. The order is fixed: the collector's, then Options.Extra. The
// agent logs it after the first Sample (which reads every source even
// though it returns ErrNoBaseline) and whenever a state changes.
func (s *Sampler) Sources() []SourceState {
	return append([]SourceState(nil), s.states...)
}

// Sample runs every source and returns the Report for the interval since
// the previous successful call. It fills everything but Seq and Dropped,
// which belong to the agent's send queue. The Report is the caller's: the
// Sampler keeps no reference to it.
//
// The first call returns ErrNoBaseline. An error from a required source
// (/proc/stat, the CPU lists, /proc/loadavg, /proc/meminfo) fails the sample
// before any source has filled, so every baseline stays and the next
// success covers the gap.
func (s *Sampler) Sample() (*proto.Report, error) {
	mono, wall := s.clock.Now()
	if mono < 0 {
		return nil, fmt.Errorf("collector: clock returned negative monotonic time %d", mono)
	}
	primeReason := ErrNoBaseline
	if s.primed {
		ivl := mono - s.prevMono
		switch {
		case ivl < 0:
			// CLOCK_MONOTONIC cannot do this; an injected clock can.
			s.primed = false
			primeReason = fmt.Errorf("%w: the monotonic clock went back %v", ErrNoBaseline, time.Duration(-ivl))
		case ivl < int64(proto.MinInterval):
			return nil, fmt.Errorf("%w: %v since the previous sample, minimum %v", ErrTooSoon, time.Duration(ivl), proto.MinInterval)
		case ivl > int64(proto.MaxInterval):
			// Rates over hours say nothing about now, and the Report
			// would not validate: start over.
			s.primed = false
			primeReason = fmt.Errorf("%w: %v since the previous sample (guest suspended?), limit %v",
				ErrNoBaseline, time.Duration(ivl).Round(time.Second), proto.MaxInterval)
		}
	}

	for i, src := range s.srcs {
		err := src.Read()
		s.states[i] = stateOf(src, err)
		s.read[i] = s.states[i].InUse
		if err != nil && i < numRequired && !s.read[i] {
			return nil, err
		}
	}

	r := &proto.Report{
		MonotonicNanos: mono,
		WallUnixNanos:  max(wall.UnixNano(), 0),
	}
	if s.primed {
		r.IntervalNanos = mono - s.prevMono
	}
	for i, src := range s.srcs {
		if !s.read[i] {
			continue
		}
		if err := src.Fill(r); err != nil && s.primed {
			s.states[i] = stateOf(src, err)
		}
	}
	s.prevMono = mono
	if !s.primed {
		s.primed = true
		return nil, primeReason
	}
	return r, nil
}
