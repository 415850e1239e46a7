package runq

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"

	"github.com/hotplugheaven/hotplug/bpf"
	"github.com/hotplugheaven/hotplug/proto"
)

// Compile-time check that bpf.RunqlatSlots agrees with the object.
var _ [bpf.RunqlatSlots]uint64 = bpf.RunqlatHist{}.Slots

// Reasons eBPF cannot be used at all, which raw_tp shares with tp_btf.
var (
	errNoBTF        = errors.New("no kernel BTF")
	errNotPermitted = errors.New("not permitted to load eBPF")
)

// progSet is one of the two program sets in bpf/runqlat.c.
type progSet int

const (
	tpBTF progSet = iota // BTF-typed raw tracepoints and task storage, kernel 5.11+
	rawTP                // raw tracepoints, kernel 4.17+
	// tpBTFSchedInfo is the cheap flavour of tpBTF: one tp_btf program on
	// sched_switch reading the scheduler's own sched_info stamps. openEBPF
	// picks it for tpBTF when the kernel's BTF has every field it reads.
	tpBTFSchedInfo
)

// loadOpts are the options openEBPF takes besides the set and BTF path.
type loadOpts struct {
	// countPreempted is the program's count_preempted option.
	countPreempted bool
	// wakeups keeps tpBTF on its wake-up programs even where the
	// sched_info flavour could load.
	wakeups bool
}

func (p progSet) source() string {
	if p == rawTP {
		return proto.RunQSourceRawTP
	}
	return proto.RunQSourceTPBTF
}

func (p progSet) detail() string {
	switch p {
	case tpBTFSchedInfo:
		return "log2 histogram of every wait from one tp_btf program on sched_switch reading the scheduler's sched_info stamps"
	case rawTP:
		return "log2 histogram of every wait from raw_tp programs on sched_wakeup, sched_wakeup_new and sched_switch"
	}
	return "log2 histogram of every wait from tp_btf programs on sched_wakeup, sched_wakeup_new and sched_switch"
}

// maps are the maps the set uses: its histograms, and where it keeps start
// times. The others are not created (task storage would fail on a kernel
// before 5.11).
func (p progSet) maps() []string {
	switch p {
	case tpBTF:
		return []string{bpf.RunqlatMapHists, bpf.RunqlatMapStartTask}
	case rawTP:
		return []string{bpf.RunqlatMapHists, bpf.RunqlatMapStart}
	}
	return []string{bpf.RunqlatMapHistsCpu}
}

// programs lists the set's programs in attach order: sched_switch first,
// so that no wait can start (be recorded by a wake-up) without the program
// that ends it already in place — a start left behind would later read as
// one huge wait.
func (p progSet) programs() []struct{ prog, tracepoint string } {
	if p == tpBTFSchedInfo {
		return []struct{ prog, tracepoint string }{{bpf.RunqlatProgBtfSwitchSi, "sched_switch"}}
	}
	if p == tpBTF {
		return []struct{ prog, tracepoint string }{
			{bpf.RunqlatProgBtfSwitch, "sched_switch"},
			{bpf.RunqlatProgBtfWakeup, "sched_wakeup"},
			{bpf.RunqlatProgBtfWakeupNew, "sched_wakeup_new"},
		}
	}
	return []struct{ prog, tracepoint string }{
		{bpf.RunqlatProgRawSwitch, "sched_switch"},
		{bpf.RunqlatProgRawWakeup, "sched_wakeup"},
		{bpf.RunqlatProgRawWakeupNew, "sched_wakeup_new"},
	}
}

// ebpfSampler reads the histogram bpf/runqlat.c fills.
type ebpfSampler struct {
	src   string
	what  string // Choice.Detail
	coll  *ebpf.Collection
	links []link.Link
	hists *ebpf.Map // per-CPU array (wake-up sets), or nil
	// cpuHists is the array of ncpu histograms the sched_info flavour
	// writes, or nil.
	cpuHists *ebpf.Map
	ncpu     int
	cpuHist  bpf.RunqlatHistCpu

	percpu          []bpf.RunqlatHist
	cur, prev, diff []uint64
	prevLost, lost  uint64
}

// openEBPF loads one program set with CO-RE against the BTF at btfPath and
// attaches it; for tpBTF it first tries the sched_info flavour, unless
// opts rule it out. Errors say why in terms an operator can act on.
func openEBPF(set progSet, btfPath string, opts loadOpts) (sampler, error) {
	// Parsing kernel BTF for CO-RE takes some 15 MiB that are garbage once
	// the programs are loaded; hand them back to the OS rather than keep
	// them in the agent's RSS for its whole life.
	defer debug.FreeOSMemory()
	if err := checkBTF(btfPath); err != nil {
		return nil, err
	}
	var kernel *btf.Spec
	var err error
	if btfPath == "/sys/kernel/btf/vmlinux" {
		kernel, err = btf.LoadKernelSpec() // cached by cilium/ebpf
	} else {
		kernel, err = btf.LoadSpec(btfPath)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: reading %s: %v", errNoBTF, btfPath, err)
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; later ones
	// to the memory cgroup, and this is a no-op. A failure here shows up
	// again, more clearly, as a load error.
	_ = rlimit.RemoveMemlock()

	if set != tpBTF {
		s, err := loadSet(set, kernel, opts.countPreempted)
		if err != nil {
			return nil, err // not a typed nil in the interface
		}
		return s, nil
	}
	var why error
	switch {
	case opts.wakeups:
		why = errors.New("wake-up programs asked for")
	case !opts.countPreempted:
		why = errors.New("it always counts preempted tasks")
	default:
		why = schedInfoFields(kernel)
	}
	if why == nil {
		s, err := loadSet(tpBTFSchedInfo, kernel, true)
		if err == nil {
			return s, nil
		}
		why = err
	}
	s, err := loadSet(tpBTF, kernel, opts.countPreempted)
	if err != nil {
		return nil, err
	}
	s.what += " (sched_switch alone on sched_info not used: " + why.Error() + ")"
	return s, nil
}

// schedInfoFields says why the sched_info flavour cannot load against
// kernel, or nil if the kernel has every field it reads:
// task_struct.sched_info.last_queued (CONFIG_SCHED_INFO) and
// task_struct.se.cfs_rq->rq->clock (cfs_rq.rq needs CONFIG_FAIR_GROUP_SCHED).
func schedInfoFields(kernel *btf.Spec) error {
	path := []struct{ typ, member string }{
		{"task_struct", "sched_info"}, {"sched_info", "last_queued"},
		{"task_struct", "se"}, {"sched_entity", "cfs_rq"},
		{"cfs_rq", "rq"}, {"rq", "clock"},
	}
	for _, p := range path {
		var st *btf.Struct
		if err := kernel.TypeByName(p.typ, &st); err != nil {
			return fmt.Errorf("kernel BTF has no struct %s: %v", p.typ, err)
		}
		if !slices.ContainsFunc(st.Members, func(m btf.Member) bool { return m.Name == p.member }) {
			return fmt.Errorf("kernel has no %s.%s (needs CONFIG_SCHED_INFO and CONFIG_FAIR_GROUP_SCHED)", p.typ, p.member)
		}
	}
	return nil
}

// loadSet loads and attaches one program set against kernel's BTF.
func loadSet(set progSet, kernel *btf.Spec, countPreempted bool) (*ebpfSampler, error) {
	spec, err := bpf.LoadRunqlat()
	if err != nil {
		return nil, err
	}
	if err := spec.Variables[bpf.RunqlatVarCountPreempted].Set(countPreempted); err != nil {
		return nil, fmt.Errorf("setting count_preempted: %w", err)
	}
	keep := map[string]bool{}
	for _, p := range set.programs() {
		keep[p.prog] = true
	}
	for name := range spec.Programs {
		if !keep[name] {
			delete(spec.Programs, name)
		}
	}
	for name := range spec.Maps {
		if !slices.Contains(set.maps(), name) && !strings.HasPrefix(name, ".") { // not .rodata
			delete(spec.Maps, name)
		}
	}
	var ncpu int
	if m := spec.Maps[bpf.RunqlatMapHistsCpu]; m != nil {
		if ncpu, err = ebpf.PossibleCPU(); err != nil {
			return nil, fmt.Errorf("counting possible CPUs: %w", err)
		}
		m.MaxEntries = uint32(ncpu)
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{
		Programs: ebpf.ProgramOptions{KernelTypes: kernel},
	})
	if err != nil {
		return nil, explainLoad(set, "loading", err)
	}
	s := &ebpfSampler{
		src: set.source(), what: set.detail(), coll: coll, hists: coll.Maps[bpf.RunqlatMapHists],
		cpuHists: coll.Maps[bpf.RunqlatMapHistsCpu], ncpu: ncpu,
		cur: make([]uint64, bpf.RunqlatSlots), prev: make([]uint64, bpf.RunqlatSlots), diff: make([]uint64, bpf.RunqlatSlots),
	}
	for _, p := range set.programs() {
		var l link.Link
		if set == rawTP {
			l, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: p.tracepoint, Program: coll.Programs[p.prog]})
		} else {
			l, err = link.AttachTracing(link.TracingOptions{Program: coll.Programs[p.prog], AttachType: ebpf.AttachTraceRawTp})
		}
		if err != nil {
			s.close()
			return nil, explainLoad(set, "attaching to "+p.tracepoint, err)
		}
		s.links = append(s.links, l)
	}
	return s, nil
}

// checkBTF fails with errNoBTF unless the kernel's BTF file exists. Both
// program sets use CO-RE and cannot load without it.
func checkBTF(path string) error {
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%w: %s does not exist (the kernel needs CONFIG_DEBUG_INFO_BTF=y, Linux 5.4+)", errNoBTF, path)
		}
		return fmt.Errorf("%w: %v", errNoBTF, err)
	}
	return nil
}

// explainLoad turns a load or attach error into one an operator can act on.
func explainLoad(set progSet, what string, err error) error {
	var ve *ebpf.VerifierError
	switch {
	case errors.As(err, &ve):
		// Before the errno check: the verifier rejects with EACCES.
		return fmt.Errorf("the kernel's verifier rejected the %s programs: %s: %v", set.source(), what, err)
	case errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES):
		return fmt.Errorf("%w: %s: run the agent as root, or with CAP_BPF and CAP_PERFMON (Linux 5.8+): %v", errNotPermitted, what, err)
	case errors.Is(err, ebpf.ErrNotSupported):
		min := "5.11"
		if set == rawTP {
			min = "4.17"
		}
		return fmt.Errorf("kernel does not support %s programs (needs Linux %s+): %s: %v", set.source(), min, what, err)
	}
	return fmt.Errorf("%s %s programs: %w", what, set.source(), err)
}

func (s *ebpfSampler) sample(*proto.Report) (*proto.RunQueue, error) {
	clear(s.cur)
	var lost uint64
	add := func(h *bpf.RunqlatHist) {
		for j, n := range h.Slots {
			s.cur[j] += n
		}
		lost += h.Lost
	}
	if s.cpuHists != nil {
		for cpu := range uint32(s.ncpu) {
			if err := s.cpuHists.Lookup(cpu, &s.cpuHist); err != nil {
				return nil, fmt.Errorf("reading the run-queue histogram map: %w", err)
			}
			add(&s.cpuHist.H)
		}
	} else {
		if err := s.hists.Lookup(uint32(0), &s.percpu); err != nil {
			return nil, fmt.Errorf("reading the run-queue histogram map: %w", err)
		}
		for i := range s.percpu {
			add(&s.percpu[i])
		}
	}
	ok := delta(s.diff, s.cur, s.prev)
	s.prev, s.cur = s.cur, s.prev
	if lost >= s.prevLost {
		s.lost += lost - s.prevLost
	}
	s.prevLost = lost
	if !ok {
		// Per-CPU counters only grow; this would take a 2^64 wrap.
		return nil, errors.New("run-queue histogram went backwards; interval skipped")
	}
	return fromHistogram(s.src, s.diff), nil
}

func (s *ebpfSampler) close() error {
	var errs []error
	for _, l := range s.links {
		errs = append(errs, l.Close())
	}
	s.links = nil
	if s.coll != nil {
		s.coll.Close()
		s.coll = nil
	}
	return errors.Join(errs...)
}

// detail says what the loaded programs measure, for Choice.Detail.
func (s *ebpfSampler) detail() string { return s.what }

// lostWaits is how many waits the program could not record (its map of
// queued tasks full or busy) since it was loaded.
func (s *ebpfSampler) lostWaits() uint64 { return s.lost }
