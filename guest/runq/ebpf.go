package runq

import (
	"errors"
	"fmt"
	"os"
	"runtime/debug"
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
)

func (p progSet) source() string {
	if p == tpBTF {
		return proto.RunQSourceTPBTF
	}
	return proto.RunQSourceRawTP
}

func (p progSet) detail() string {
	kind := "tp_btf"
	if p == rawTP {
		kind = "raw_tp"
	}
	return "log2 histogram of every wait from " + kind + " programs on sched_wakeup, sched_wakeup_new and sched_switch"
}

// startMap is the map the set keeps start times in; the other set's is not
// created (task storage would fail on a kernel before 5.11).
func (p progSet) startMap() string {
	if p == tpBTF {
		return bpf.RunqlatMapStartTask
	}
	return bpf.RunqlatMapStart
}

// programs lists the set's programs in attach order: sched_switch first,
// so that no wait can start (be recorded by a wake-up) without the program
// that ends it already in place — a start left behind would later read as
// one huge wait.
func (p progSet) programs() []struct{ prog, tracepoint string } {
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
	coll  *ebpf.Collection
	links []link.Link
	hists *ebpf.Map

	percpu          []bpf.RunqlatHist
	cur, prev, diff []uint64
	prevLost, lost  uint64
}

// openEBPF loads one program set with CO-RE against the BTF at btfPath and
// attaches it. Errors say why in terms an operator can act on.
func openEBPF(set progSet, btfPath string, countPreempted bool) (sampler, error) {
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
	for _, name := range []string{bpf.RunqlatMapStart, bpf.RunqlatMapStartTask} {
		if name != set.startMap() {
			delete(spec.Maps, name)
		}
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{
		Programs: ebpf.ProgramOptions{KernelTypes: kernel},
	})
	if err != nil {
		return nil, explainLoad(set, "loading", err)
	}
	s := &ebpfSampler{
		src: set.source(), coll: coll, hists: coll.Maps[bpf.RunqlatMapHists],
		cur: make([]uint64, bpf.RunqlatSlots), prev: make([]uint64, bpf.RunqlatSlots), diff: make([]uint64, bpf.RunqlatSlots),
	}
	for _, p := range set.programs() {
		var l link.Link
		if set == tpBTF {
			l, err = link.AttachTracing(link.TracingOptions{Program: coll.Programs[p.prog], AttachType: ebpf.AttachTraceRawTp})
		} else {
			l, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: p.tracepoint, Program: coll.Programs[p.prog]})
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

func (s *ebpfSampler) sample() (*proto.RunQueue, error) {
	if err := s.hists.Lookup(uint32(0), &s.percpu); err != nil {
		return nil, fmt.Errorf("reading the run-queue histogram map: %w", err)
	}
	clear(s.cur)
	var lost uint64
	for i := range s.percpu {
		for j, n := range s.percpu[i].Slots {
			s.cur[j] += n
		}
		lost += s.percpu[i].Lost
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

// lostWaits is how many waits the program could not record (its map of
// queued tasks full or busy) since it was loaded.
func (s *ebpfSampler) lostWaits() uint64 { return s.lost }
