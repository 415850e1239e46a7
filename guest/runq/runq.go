package runq

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/hotplugheaven/hotplug/guest/collector"
	"github.com/hotplugheaven/hotplug/proto"
)

var _ collector.Source = (*Source)(nil)

// Mode is the best source New may use; the ones below it are its
// fallbacks. It is the agent's runq_source setting.
type Mode string

// Modes, best first.
const (
	ModeAuto      Mode = "auto"      // same as ModeEBPF: the best that works
	ModeEBPF      Mode = "ebpf"      // tp_btf, then raw_tp, then /proc
	ModeRawTP     Mode = "raw_tp"    // raw_tp, then /proc (if tp_btf misbehaves)
	ModeSchedstat Mode = "schedstat" // /proc/schedstat, then PSI
	ModePSI       Mode = "psi"       // PSI only
	ModeOff       Mode = "off"       // do not measure run-queue latency
)

// ParseMode validates a runq_source setting; "" means ModeAuto.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case "":
		return ModeAuto, nil
	case ModeAuto, ModeEBPF, ModeRawTP, ModeSchedstat, ModePSI, ModeOff:
		return m, nil
	}
	return "", fmt.Errorf("must be auto, ebpf, raw_tp, schedstat, psi or off, got %q", s)
}

// ErrNoSource is returned by New when no source can be used; the error
// wrapping it says why each one failed.
var ErrNoSource = errors.New("no run-queue latency source")

// Options configures New. The zero value is ModeAuto on /proc and /sys.
type Options struct {
	Mode Mode
	// ProcRoot and SysRoot default to /proc and /sys (tests use fixture
	// trees). The eBPF sources take kernel BTF from
	// SysRoot/kernel/btf/vmlinux; the programs always go into the running
	// kernel.
	ProcRoot, SysRoot string
	// IgnorePreempted stops counting the time a preempted, still-runnable
	// task waits to run again (the eBPF count_preempted option). Leave it
	// off: CPU-bound tasks that never sleep only ever wait that way.
	IgnorePreempted bool
	// WakeupPrograms keeps the tp_btf source on its wake-up programs
	// (three per wait, a start time in task storage) where the kernel
	// would allow the cheaper sched_switch-only flavour, which reads the
	// scheduler's own sched_info stamps. For comparing the two; the
	// agent leaves it off.
	WakeupPrograms bool
	// Now is the clock (default time.Now); the /proc sources use it to
	// bound implausible deltas.
	Now func() time.Time

	// openEBPF replaces the real loader in tests; nil means openEBPF.
	openEBPF func(set progSet, btfPath string, opts loadOpts) (sampler, error)
}

// sampler is one way of measuring; each sample covers the time since the
// previous one (or since it was opened). r is the report being filled,
// with the collector's measurements in it: a source may use them rather
// than read a file a second time.
type sampler interface {
	sample(r *proto.Report) (*proto.RunQueue, error)
	close() error
}

// Attempt is a source that was tried and not used.
type Attempt struct {
	Source string // a proto.RunQSource* constant
	Err    error
}

// Choice is what New picked and why.
type Choice struct {
	// Source is the proto.RunQSource* constant in use.
	Source string
	// Detail says what the source measures.
	Detail string
	// Skipped are the better sources that were tried first, with the
	// reason each could not be used; sources below Mode are not listed.
	Skipped []Attempt
}

// String is one log line: the source, what it measures, and why the better
// ones are not in use.
func (c Choice) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (%s)", c.Source, c.Detail)
	for i, a := range c.Skipped {
		if i == 0 {
			b.WriteString("; not used: ")
		} else {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: %v", a.Source, a.Err)
	}
	return b.String()
}

// Source measures run-queue latency with the best available source and
// fills Report.RunQueue. It is one of the agent's collector.Sources, after
// the collector's own (it reads their RunDelay); Fill is meant for the
// agent's sampling goroutine and is not safe for concurrent use.
type Source struct {
	s      sampler
	choice Choice
}

// New opens the best source Options.Mode allows. eBPF failures are not
// errors: they are recorded in Choice().Skipped and the next source is
// tried. The error, wrapping ErrNoSource, comes only when nothing works
// (or Mode is ModeOff); the agent then runs without run-queue latency.
func New(opts Options) (*Source, error) {
	if opts.ProcRoot == "" {
		opts.ProcRoot = "/proc"
	}
	if opts.SysRoot == "" {
		opts.SysRoot = "/sys"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.openEBPF == nil {
		opts.openEBPF = openEBPF
	}
	mode, err := ParseMode(string(opts.Mode))
	if err != nil {
		return nil, fmt.Errorf("runq: mode: %w", err)
	}
	if mode == ModeOff {
		return nil, fmt.Errorf("%w: turned off (runq_source = \"off\")", ErrNoSource)
	}

	type candidate struct {
		src, detail string
		open        func() (sampler, error)
	}
	btfPath := filepath.Join(opts.SysRoot, "kernel", "btf", "vmlinux")
	var cands []candidate
	var sets []progSet
	switch mode {
	case ModeAuto, ModeEBPF:
		sets = []progSet{tpBTF, rawTP}
	case ModeRawTP:
		sets = []progSet{rawTP}
	}
	for _, set := range sets {
		cands = append(cands, candidate{set.source(), set.detail(), func() (sampler, error) {
			if err := checkBTF(btfPath); err != nil {
				return nil, err
			}
			return opts.openEBPF(set, btfPath, loadOpts{countPreempted: !opts.IgnorePreempted, wakeups: opts.WakeupPrograms})
		}})
	}
	if mode != ModePSI {
		cands = append(cands, candidate{proto.RunQSourceSchedstat,
			"mean wait per timeslice from " + filepath.Join(opts.ProcRoot, "schedstat") + " (the collector's reading); percentiles estimated from the mean",
			func() (sampler, error) { return openSchedstat(opts.ProcRoot) }})
	}
	cands = append(cands, candidate{proto.RunQSourcePSI,
		"lower bound on the mean wait from " + filepath.Join(opts.ProcRoot, "pressure", "cpu") + " some-stall time per context switch; percentiles estimated from the mean",
		func() (sampler, error) { return openPSI(opts.ProcRoot, opts.Now) }})

	var skipped []Attempt
	var ebpfErr error // a tp_btf failure raw_tp would share
	for _, c := range cands {
		if c.src == proto.RunQSourceRawTP && ebpfErr != nil {
			skipped = append(skipped, Attempt{c.src, sameCause{proto.RunQSourceTPBTF, ebpfErr}})
			continue
		}
		s, err := c.open()
		if err == nil {
			detail := c.detail
			if d, ok := s.(interface{ detail() string }); ok {
				detail = d.detail() // which flavour of the set loaded
			}
			return &Source{s: s, choice: Choice{Source: c.src, Detail: detail, Skipped: skipped}}, nil
		}
		if c.src == proto.RunQSourceTPBTF && (errors.Is(err, errNoBTF) || errors.Is(err, errNotPermitted)) {
			ebpfErr = err
		}
		skipped = append(skipped, Attempt{c.src, err})
	}
	msgs := make([]string, len(skipped))
	for i, a := range skipped {
		msgs[i] = fmt.Sprintf("%s: %v", a.Source, a.Err)
	}
	return nil, fmt.Errorf("%w: %s", ErrNoSource, strings.Join(msgs, "; "))
}

// Name implements collector.Source.
func (s *Source) Name() string { return "runq:" + s.choice.Source }

// Path implements collector.Source: what the chosen source measures from.
func (s *Source) Path() string { return s.choice.Detail }

// Read implements collector.Source. The waits are read in Fill, which
// needs the collector's RunDelay of the same Report.
func (s *Source) Read() error { return nil }

// Choice says which source is in use and why.
func (s *Source) Choice() Choice { return s.choice }

// Fill implements collector.Source: it sets r.RunQueue to the waits since
// the previous Fill (or since New, for the first).
func (s *Source) Fill(r *proto.Report) error {
	q, err := s.s.sample(r)
	if err != nil {
		return err
	}
	r.RunQueue = q
	return nil
}

// Close detaches the eBPF programs, if any. Fill must not be called after.
func (s *Source) Close() error { return s.s.close() }

// sameCause marks a source not tried because a better one failed for a
// reason it shares (no BTF, no privileges).
type sameCause struct {
	src string
	err error
}

func (e sameCause) Error() string { return "not tried: same cause as " + e.src }
func (e sameCause) Unwrap() error { return e.err }

// LostWaits is how many waits the eBPF program could not record since it
// was loaded (its table of queued tasks was full or busy); 0 for the /proc
// sources, which do not lose any.
func (s *Source) LostWaits() uint64 {
	if e, ok := s.s.(*ebpfSampler); ok {
		return e.lostWaits()
	}
	return 0
}
