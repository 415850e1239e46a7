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

// Source is the state of one input of Sample.
type Source struct {
	Name string
	Path string
	// InUse reports whether the last Sample used the source.
	InUse bool
	// Err says why the source is not in use or, when InUse is set, how its
	// data is degraded (an estimate in place of a missing field).
	Err error
}

// Sampler turns kernel counters into Reports. It keeps the previous sample's
// counters as the baseline for the next, so one Sampler serves one sampling
// loop. It is not safe for concurrent use.
type Sampler struct {
	opts  Options
	fs    procfs.FS
	cpus  *cpu.Controller
	clock Clock

	primed   bool
	prevMono int64

	// Baselines. Each optional source keeps its own so that a source which
	// comes and goes primes itself without disturbing the others.
	prevStat  map[int64]procfs.CPUStat
	prevSched map[int]schedCounters
	prevSwap  swapCounters // zero value: no baseline
	prevMem   memCounters  // valid with prevSwap.ok (the same read)
	prevPSIM  psiTotals
	// Memory block counts, rescanned now and then (memory.go).
	blocks         memBlocks
	blocksAge      int
	blocksMemTotal uint64

	// Scratch reused between samples.
	ids        []int64
	sched      []schedCounters
	vmbuf      []byte
	blkbuf     []byte
	sources    [numSources]Source
	psiPath    string
	vmstPath   string
	psiMemPath string
}

// New returns a Sampler reading the trees opts names. It fails only when the
// proc root is not a directory; missing files are found by Sample.
func New(opts Options) (*Sampler, error) {
	opts = opts.withDefaults()
	pfs, err := procfs.NewFS(opts.ProcRoot)
	if err != nil {
		return nil, fmt.Errorf("collector: proc root: %w (is procfs mounted?)", err)
	}
	s := &Sampler{
		opts:       opts,
		fs:         pfs,
		cpus:       cpu.NewController(opts.SysRoot),
		clock:      opts.Clock,
		prevSched:  make(map[int]schedCounters),
		vmbuf:      make([]byte, 0, 8<<10),
		psiPath:    procPath(opts, "pressure/cpu"),
		vmstPath:   procPath(opts, "vmstat"),
		psiMemPath: procPath(opts, "pressure/memory"),
		blkbuf:     make([]byte, 0, 64),
	}
	s.sources = [...]Source{
		{Name: SourceStat, Path: procPath(opts, "stat")},
		{Name: SourceCPULists, Path: opts.SysRoot + "/devices/system/cpu/{online,present}"},
		{Name: SourceLoadAvg, Path: procPath(opts, "loadavg")},
		{Name: SourceMeminfo, Path: procPath(opts, "meminfo")},
		{Name: SourcePSI, Path: s.psiPath},
		{Name: SourceSchedstat, Path: procPath(opts, "schedstat")},
		{Name: SourceVMStat, Path: s.vmstPath},
		{Name: SourcePSIMemory, Path: s.psiMemPath},
		{Name: SourceMemBlocks, Path: opts.SysRoot + "/devices/system/memory"},
	}
	for i := range s.sources {
		s.sources[i].Err = errNotSampled
	}
	return s, nil
}

var errNotSampled = errors.New("not sampled yet")

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

// Sources reports, per input, whether the last Sample used it and, if not,
// why. The order is fixed. The agent logs it after the first Sample (which
// reads every source even though it returns ErrNoBaseline).
func (s *Sampler) Sources() []Source {
	return append([]Source(nil), s.sources[:]...)
}

// Indexes into Sampler.sources, in the order Sources reports them.
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
)

func (s *Sampler) setSource(i int, inUse bool, err error) {
	s.sources[i].InUse, s.sources[i].Err = inUse, err
}

// Sample reads every source and returns the Report for the interval since
// the previous successful call. It fills everything but Seq and Dropped,
// which belong to the agent's send queue. The Report is the caller's: the
// Sampler keeps no reference to it.
//
// The first call returns ErrNoBaseline. An error from a required source
// (/proc/stat, the CPU lists, /proc/loadavg, /proc/meminfo) fails the sample
// and keeps the previous baseline, so the next success covers the gap.
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

	st, err := s.readStat()
	if err != nil {
		return nil, err
	}
	online, present, err := s.readCPULists()
	if err != nil {
		return nil, err
	}
	load, err := s.readLoadAvg()
	if err != nil {
		return nil, err
	}
	mem, err := s.readMeminfo()
	if err != nil {
		return nil, err
	}
	psi := s.readPSI()
	sched := s.readSchedstat()
	swap, memc := s.readVMStat()
	psiMem := s.readPSIMemory()
	blocks := s.memBlocksCached(mem.total)

	r := &proto.Report{
		MonotonicNanos:    mono,
		WallUnixNanos:     max(wall.UnixNano(), 0),
		IntervalNanos:     mono - s.prevMono,
		Online:            online,
		Present:           present,
		Load1:             load.Load1,
		PSI:               psi,
		MemTotalBytes:     mem.total,
		MemAvailableBytes: mem.available,
	}
	wasPrimed := s.primed
	if wasPrimed {
		s.ids = s.ids[:0]
		r.CPUs, s.ids = cpuFractions(make([]proto.CPUStat, 0, len(st.CPU)), s.prevStat, st.CPU, s.ids)
		if len(sched) > 0 && len(s.prevSched) > 0 {
			r.RunDelay = runDelays(make([]proto.RunDelay, 0, len(sched)), s.prevSched, sched, uint64(r.IntervalNanos)*maxWaitPerNano)
		}
		r.SwapInPerSec, r.SwapOutPerSec = swapRates(s.prevSwap, swap, r.IntervalNanos)
		r.Memory = memoryStats(s.prevMem, memc, s.prevSwap.ok && swap.ok, s.prevPSIM, psiMem, blocks)
		if r.Memory != nil {
			// The stall totals advance on the kernel's clock, not
			// ours: never more than the interval.
			ivl := uint64(r.IntervalNanos / 1e3)
			r.Memory.PSISomeMicros = min(r.Memory.PSISomeMicros, ivl)
			r.Memory.PSIFullMicros = min(r.Memory.PSIFullMicros, r.Memory.PSISomeMicros)
		}
	}

	// The current counters become the baseline whatever happened above: a
	// CPU omitted for going backwards restarts from here.
	s.prevStat = st.CPU
	s.prevSwap, s.prevMem, s.prevPSIM = swap, memc, psiMem
	clear(s.prevSched)
	for _, c := range sched {
		s.prevSched[c.cpu] = c
	}
	s.prevMono = mono
	s.primed = true
	if !wasPrimed {
		return nil, primeReason
	}
	return r, nil
}

// maxWaitPerNano mirrors proto.Report.Validate: run delay may not exceed a
// million waiting tasks for the whole interval.
const maxWaitPerNano = 1_000_000

// readCPULists reads online and present. They are two files read at two
// moments: a hot-remove between the reads can leave a CPU online but no
// longer present. Read again once, then keep only online CPUs that are
// present so the Report stays consistent.
func (s *Sampler) readCPULists() (online, present proto.CPUSet, err error) {
	for range 2 {
		if online, err = s.cpus.OnlineCPUs(); err != nil {
			break
		}
		if present, err = s.cpus.Present(); err != nil {
			break
		}
		if online.SubsetOf(present) {
			s.setSource(srcCPULists, true, nil)
			return online, present, nil
		}
	}
	if err != nil {
		s.setSource(srcCPULists, false, err)
		return proto.CPUSet{}, proto.CPUSet{}, fmt.Errorf("collector: %w", err)
	}
	s.setSource(srcCPULists, true, nil)
	return online.Difference(online.Difference(present)), present, nil
}
