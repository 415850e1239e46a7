package proto

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"time"
)

// Protocol versions this build speaks. A peer picks the highest version in the
// intersection of both ranges (see Negotiate).
const (
	MinVersion uint16 = 1
	MaxVersion uint16 = 2
)

// Version 2 adds Hello.Apps: an agent speaking it announces the
// applications it reports on, and the actuator refuses reports that name
// any other. A version 1 session's application statistics are ignored,
// since nothing bounds the names it may make up.
const VersionAnnouncedApps uint16 = 2

// Bounds on strings and lists so that a decoded message stays small.
const (
	MaxStringLen   = 256  // identities, versions, names
	MaxErrorLen    = 1024 // error texts in Ack and Welcome
	MaxCPUErrors   = 64   // per-CPU failures in one Ack
	MaxApps        = 32   // applications in one Report
	MaxRunQBuckets = 64   // log2 buckets of a run-queue latency histogram
	MaxInterval    = time.Hour
	MinInterval    = 100 * time.Millisecond
	maxLoad        = 1e6  // a load average past this is not a real guest
	maxRatePerSec  = 1e9  // pages per second
	fractionSlack  = 0.05 // rounding in /proc/stat deltas
	maxMemoryBytes = 1 << 50
)

// ErrInvalid wraps every semantic validation failure.
var ErrInvalid = errors.New("invalid message")

// MsgType identifies the message carried in a frame.
type MsgType uint8

// Message types. Values are part of the wire format: never renumber.
const (
	TypeHello   MsgType = 1 // agent → actuator, first frame on a connection
	TypeWelcome MsgType = 2 // actuator → agent, answer to Hello
	TypeReport  MsgType = 3 // agent → actuator, every sampling interval
	TypeCommand MsgType = 4 // actuator → agent
	TypeAck     MsgType = 5 // agent → actuator, answer to Command
)

func (t MsgType) String() string {
	switch t {
	case TypeHello:
		return "Hello"
	case TypeWelcome:
		return "Welcome"
	case TypeReport:
		return "Report"
	case TypeCommand:
		return "Command"
	case TypeAck:
		return "Ack"
	}
	return fmt.Sprintf("MsgType(%d)", uint8(t))
}

// Message is implemented by every message.
type Message interface {
	Type() MsgType
	// Validate rejects values an honest peer cannot send.
	Validate() error
}

// CPUTopology ties a Linux CPU number to its APIC id, which is how the
// actuator finds the hypervisor's CPU device for a guest CPU.
type CPUTopology struct {
	CPU    uint16 `msgpack:"cpu"`
	APICID uint32 `msgpack:"apic"`
}

// Hello opens a connection from the agent.
type Hello struct {
	MinVersion   uint16 `msgpack:"minv"`
	MaxVersion   uint16 `msgpack:"maxv"`
	AgentVersion string `msgpack:"agent"`
	// MachineID is /etc/machine-id; ProductUUID is the DMI product UUID
	// (/sys/class/dmi/id/product_uuid) when the guest exposes it. Both are
	// claims by the guest, never proof of identity: the channel decides which
	// VM a connection belongs to.
	MachineID   string        `msgpack:"mid,omitempty"`
	ProductUUID string        `msgpack:"uuid,omitempty"`
	Hostname    string        `msgpack:"host,omitempty"`
	Possible    CPUSet        `msgpack:"possible"`
	Present     CPUSet        `msgpack:"present"`
	Online      CPUSet        `msgpack:"online"`
	Topology    []CPUTopology `msgpack:"topo,omitempty"`
	// IntervalNanos is the agent's sampling interval.
	IntervalNanos int64 `msgpack:"ivl"`
	// Apps names the applications (apps.d) whose statistics this
	// session's reports may carry; at most MaxApps, each a valid
	// application name, no repeats (version 2).
	Apps []string `msgpack:"apps,omitempty"`
}

// appNameRE is what an application may be called: the name of its apps.d
// file, and a Prometheus label value on the host.
var appNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidAppName reports whether name may name an application.
func ValidAppName(name string) bool { return appNameRE.MatchString(name) }

// Type implements Message.
func (*Hello) Type() MsgType { return TypeHello }

// Validate implements Message.
func (h *Hello) Validate() error {
	if h.MinVersion == 0 || h.MaxVersion < h.MinVersion {
		return fmt.Errorf("%w: hello: version range %d..%d", ErrInvalid, h.MinVersion, h.MaxVersion)
	}
	for _, f := range [...]struct{ name, s string }{{"agent", h.AgentVersion}, {"machine-id", h.MachineID}, {"uuid", h.ProductUUID}, {"hostname", h.Hostname}} {
		if len(f.s) > MaxStringLen {
			return fmt.Errorf("%w: hello: %s is %d bytes, limit %d", ErrInvalid, f.name, len(f.s), MaxStringLen)
		}
	}
	if err := checkCPUSets("hello", h.Possible, h.Present, h.Online); err != nil {
		return err
	}
	if err := checkTopology("hello", h.Topology); err != nil {
		return err
	}
	if len(h.Apps) > MaxApps {
		return fmt.Errorf("%w: hello: %d applications, limit %d", ErrInvalid, len(h.Apps), MaxApps)
	}
	for i, a := range h.Apps {
		if !ValidAppName(a) {
			return fmt.Errorf("%w: hello: application %q: use 1-64 letters, digits, '.', '_' or '-'", ErrInvalid, clipName(a))
		}
		if slices.Contains(h.Apps[:i], a) {
			return fmt.Errorf("%w: hello: application %q announced twice", ErrInvalid, a)
		}
	}
	return checkInterval("hello", h.IntervalNanos)
}

// Negotiate returns the highest version both this build and the Hello speak.
func Negotiate(h *Hello) (uint16, error) {
	lo, hi := max(h.MinVersion, MinVersion), min(h.MaxVersion, MaxVersion)
	if lo > hi {
		return 0, fmt.Errorf("no common protocol version: agent speaks %d..%d, this build %d..%d",
			h.MinVersion, h.MaxVersion, MinVersion, MaxVersion)
	}
	return hi, nil
}

// Welcome answers a Hello. A non-empty Error means the actuator refuses the
// connection (and closes it after sending).
type Welcome struct {
	Version uint16 `msgpack:"v"`
	VM      string `msgpack:"vm,omitempty"`
	Error   string `msgpack:"err,omitempty"`
	// IntervalNanos, when non-zero, asks the agent to sample at this interval.
	IntervalNanos int64 `msgpack:"ivl,omitempty"`
}

// Type implements Message.
func (*Welcome) Type() MsgType { return TypeWelcome }

// Validate implements Message.
func (w *Welcome) Validate() error {
	if len(w.VM) > MaxStringLen || len(w.Error) > MaxErrorLen {
		return fmt.Errorf("%w: welcome: string too long", ErrInvalid)
	}
	if w.Error == "" && w.Version == 0 {
		return fmt.Errorf("%w: welcome: neither version nor error", ErrInvalid)
	}
	if w.IntervalNanos != 0 {
		return checkInterval("welcome", w.IntervalNanos)
	}
	return nil
}

// CPUStat is one CPU's share of the interval, from /proc/stat deltas.
// Busy counts user, nice, system, irq and softirq time (guest time is already
// inside user and nice).
type CPUStat struct {
	CPU    uint16  `msgpack:"cpu"`
	Busy   float32 `msgpack:"busy"`
	Idle   float32 `msgpack:"idle"`
	IOWait float32 `msgpack:"iow"`
	Steal  float32 `msgpack:"steal"`
}

// RunDelay is one CPU's /proc/schedstat delta over the interval: time tasks
// spent runnable but waiting for this CPU, and the number of timeslices run.
type RunDelay struct {
	CPU        uint16 `msgpack:"cpu"`
	WaitNanos  uint64 `msgpack:"wait"`
	Timeslices uint64 `msgpack:"slices"`
}

// PSI is the CPU pressure line "some" of /proc/pressure/cpu.
type PSI struct {
	SomeAvg10       float64 `msgpack:"avg10"` // percent, as the kernel prints it
	SomeTotalMicros uint64  `msgpack:"total"` // cumulative stall time
}

// Report is one sampling interval's measurements.
type Report struct {
	Seq uint64 `msgpack:"seq"`
	// MonotonicNanos is CLOCK_MONOTONIC at the end of the interval: the
	// agent ages its queued reports by it. The actuator orders reports by
	// Seq and times them by their arrival, never by a guest's clock.
	MonotonicNanos int64 `msgpack:"mono"`
	WallUnixNanos  int64 `msgpack:"wall"`
	IntervalNanos  int64 `msgpack:"ivl"`

	CPUs    []CPUStat `msgpack:"cpus"`
	Online  CPUSet    `msgpack:"online"`
	Present CPUSet    `msgpack:"present"`

	Load1 float64 `msgpack:"load1"`

	PSI      *PSI       `msgpack:"psi,omitempty"`
	RunDelay []RunDelay `msgpack:"rundelay,omitempty"`

	MemTotalBytes     uint64  `msgpack:"memtotal"`
	MemAvailableBytes uint64  `msgpack:"memavail"`
	SwapInPerSec      float64 `msgpack:"swapin"`  // pages/s
	SwapOutPerSec     float64 `msgpack:"swapout"` // pages/s

	// Dropped counts reports the agent discarded (queue full while the
	// actuator was unreachable) since the previous report it sent.
	Dropped uint64 `msgpack:"dropped,omitempty"`

	// RunQueue is run-queue latency, when the agent can measure it.
	RunQueue *RunQueue `msgpack:"runq,omitempty"`
	// Memory is the interval's memory pressure, when the agent can read
	// it (version 2 agents; older ones leave it out).
	Memory *MemoryStats `msgpack:"mem,omitempty"`
	// Apps are per-application request statistics from access logs
	// (gray-box mode).
	Apps []AppStats `msgpack:"apps,omitempty"`
}

// MemoryStats is the guest's memory pressure over the interval: deltas of
// the kernel's cumulative counters since the previous report (zero when a
// counter has no baseline or went back), and the state of its memory
// blocks now.
type MemoryStats struct {
	// PSI memory stall time over the interval, µs (/proc/pressure/memory):
	// some task stalled, and all non-idle tasks stalled (full ≤ some).
	// HavePSI is false without PSI.
	HavePSI       bool   `msgpack:"psi,omitempty"`
	PSISomeMicros uint64 `msgpack:"psi_some,omitempty"`
	PSIFullMicros uint64 `msgpack:"psi_full,omitempty"`
	// From /proc/vmstat: workingset refaults of anonymous and file pages
	// (pages evicted and needed again), major faults, direct-reclaim
	// allocation stalls (all zones) and OOM kills.
	RefaultAnon uint64 `msgpack:"refault_anon,omitempty"`
	RefaultFile uint64 `msgpack:"refault_file,omitempty"`
	MajorFaults uint64 `msgpack:"pgmajfault,omitempty"`
	AllocStalls uint64 `msgpack:"allocstall,omitempty"`
	OOMKills    uint64 `msgpack:"oom_kill,omitempty"`
	// Memory blocks (/sys/devices/system/memory): their size, and how many
	// are online and offline (hot-added memory arrives offline unless the
	// kernel onlines it). BlockBytes is 0 when the directory is absent.
	BlockBytes    uint64 `msgpack:"block,omitempty"`
	BlocksOnline  uint32 `msgpack:"online,omitempty"`
	BlocksOffline uint32 `msgpack:"offline,omitempty"`
}

// maxMemoryBlocks bounds a guest's memory blocks (a petabyte at 1 GiB).
const maxMemoryBlocks = 1 << 20

func (m *MemoryStats) validate(seq uint64, interval int64) error {
	ivlMicros := float64(interval) / 1e3 * (1 + fractionSlack)
	if !m.HavePSI && (m.PSISomeMicros != 0 || m.PSIFullMicros != 0) {
		return fmt.Errorf("%w: report %d: memory stall time without PSI", ErrInvalid, seq)
	}
	if float64(m.PSISomeMicros) > ivlMicros || m.PSIFullMicros > m.PSISomeMicros {
		return fmt.Errorf("%w: report %d: memory stall some %d µs, full %d µs in a %d µs interval",
			ErrInvalid, seq, m.PSISomeMicros, m.PSIFullMicros, interval/1e3)
	}
	maxCount := maxRatePerSec * float64(interval) / 1e9
	for _, f := range [...]struct {
		name string
		v    uint64
	}{{"refault_anon", m.RefaultAnon}, {"refault_file", m.RefaultFile}, {"pgmajfault", m.MajorFaults},
		{"allocstall", m.AllocStalls}, {"oom_kill", m.OOMKills}} {
		if float64(f.v) > maxCount {
			return fmt.Errorf("%w: report %d: %s %d in one interval", ErrInvalid, seq, f.name, f.v)
		}
	}
	if m.BlockBytes != 0 && (m.BlockBytes&(m.BlockBytes-1) != 0 || m.BlockBytes < 1<<20 || m.BlockBytes > 1<<40) {
		return fmt.Errorf("%w: report %d: memory block size %d", ErrInvalid, seq, m.BlockBytes)
	}
	if n := uint64(m.BlocksOnline) + uint64(m.BlocksOffline); n > maxMemoryBlocks || (n > 0 && m.BlockBytes == 0) ||
		uint64(m.BlocksOnline)*m.BlockBytes > maxMemoryBytes {
		return fmt.Errorf("%w: report %d: %d online and %d offline memory blocks of %d bytes",
			ErrInvalid, seq, m.BlocksOnline, m.BlocksOffline, m.BlockBytes)
	}
	return nil
}

// Run-queue latency sources, best first.
const (
	RunQSourceTPBTF     = "ebpf-tp_btf"
	RunQSourceRawTP     = "ebpf-raw_tp"
	RunQSourceSchedstat = "schedstat"
	RunQSourcePSI       = "psi"
)

// RunQueue is how long runnable tasks waited for a CPU during the interval.
type RunQueue struct {
	// Source is one of the RunQSource constants.
	Source string `msgpack:"src"`
	// Buckets is a log2 histogram of wake-up-to-run latency: Buckets[i]
	// counts waits in [2^i, 2^(i+1)) µs. Only eBPF sources fill it.
	Buckets []uint64 `msgpack:"buckets,omitempty"`
	// Percentiles of the wait, in nanoseconds. Sources without a
	// distribution (schedstat, PSI) give their best estimate of each.
	P50Nanos int64 `msgpack:"p50"`
	P95Nanos int64 `msgpack:"p95"`
	P99Nanos int64 `msgpack:"p99"`
}

// AppStats is one application's requests during the interval, from its
// access log. Times are seconds.
type AppStats struct {
	Name string `msgpack:"name"`
	// Arrivals counts requests served and dropped; Drops those answered
	// with a status the application's config counts as dropped.
	Arrivals    uint64  `msgpack:"arrivals"`
	Drops       uint64  `msgpack:"drops"`
	ArrivalRate float64 `msgpack:"rate"` // per second
	// Inter-arrival time mean and variance. When the log's timestamps are
	// whole seconds, the variance is estimated from per-second counts and
	// InterArrivalFromCounts is set.
	InterArrivalMean       float64 `msgpack:"ia_mean"`
	InterArrivalVar        float64 `msgpack:"ia_var"`
	InterArrivalFromCounts bool    `msgpack:"ia_counts,omitempty"`
	// Service time (the log's duration field) mean and variance.
	ServiceMean float64 `msgpack:"svc_mean"`
	ServiceVar  float64 `msgpack:"svc_var"`
	// Response-time percentiles.
	RespP50 float64 `msgpack:"p50"`
	RespP95 float64 `msgpack:"p95"`
	RespP99 float64 `msgpack:"p99"`
	// SLA from the application's config: a mean response time, or a
	// percentile (0 < SLAPercentile < 1) that must stay under SLATarget.
	SLAMean       float64 `msgpack:"sla_mean,omitempty"`
	SLAPercentile float64 `msgpack:"sla_pct,omitempty"`
	SLATarget     float64 `msgpack:"sla_target,omitempty"`
	// CPUSeconds is the CPU time the application used over the interval,
	// when CPUSource says where it was measured (CPUSourceCgroup: the
	// cgroup v2 cpu.stat of the systemd units its config names). Without
	// it the host shares the VM's busy time among applications by their
	// request counts.
	CPUSeconds float64 `msgpack:"cpu_s,omitempty"`
	CPUSource  string  `msgpack:"cpu_src,omitempty"`
}

// CPUSourceCgroup: AppStats.CPUSeconds is the usage_usec of the
// application's units' cgroups.
const CPUSourceCgroup = "cgroup"

// Type implements Message.
func (*Report) Type() MsgType { return TypeReport }

// BusyCPUs is the CPU time the online CPUs were busy over the interval, in
// CPUs (two CPUs half busy are 1.0). Offline CPUs are left out: a CPU
// offlined during the interval reports stale shares.
func (r *Report) BusyCPUs() float64 {
	var busy float64
	for _, c := range r.CPUs {
		if r.Online.Has(int(c.CPU)) {
			busy += float64(c.Busy)
		}
	}
	return busy
}

// WaitingTasks is the mean number of tasks that were runnable but waiting
// for a CPU over the interval: the summed run delay of every CPU divided by
// the interval. 0 without an interval.
func (r *Report) WaitingTasks() float64 {
	if r.IntervalNanos <= 0 {
		return 0
	}
	var wait uint64
	for _, d := range r.RunDelay {
		wait += d.WaitNanos
	}
	return float64(wait) / float64(r.IntervalNanos)
}

// Validate implements Message.
func (r *Report) Validate() error {
	if r.Seq == 0 {
		return fmt.Errorf("%w: report: sequence number 0", ErrInvalid)
	}
	if r.MonotonicNanos < 0 || r.WallUnixNanos < 0 {
		return fmt.Errorf("%w: report %d: negative timestamp", ErrInvalid, r.Seq)
	}
	if err := checkInterval(fmt.Sprintf("report %d", r.Seq), r.IntervalNanos); err != nil {
		return err
	}
	if len(r.CPUs) > MaxCPUs || len(r.RunDelay) > MaxCPUs {
		return fmt.Errorf("%w: report %d: more than %d per-CPU entries", ErrInvalid, r.Seq, MaxCPUs)
	}
	if err := checkCPUSets(fmt.Sprintf("report %d", r.Seq), r.Present, r.Present, r.Online); err != nil {
		return err
	}
	var seen CPUSet
	for _, c := range r.CPUs {
		if int(c.CPU) >= MaxCPUs || seen.Has(int(c.CPU)) {
			return fmt.Errorf("%w: report %d: cpu %d repeated or out of range", ErrInvalid, r.Seq, c.CPU)
		}
		seen.Add(int(c.CPU))
		sum := float64(0)
		for _, f := range []float32{c.Busy, c.Idle, c.IOWait, c.Steal} {
			v := float64(f)
			if math.IsNaN(v) || v < 0 || v > 1+fractionSlack {
				return fmt.Errorf("%w: report %d: cpu %d: fraction %v outside [0,1]", ErrInvalid, r.Seq, c.CPU, f)
			}
			sum += v
		}
		if sum > 1+fractionSlack {
			return fmt.Errorf("%w: report %d: cpu %d: fractions sum to %.3f", ErrInvalid, r.Seq, c.CPU, sum)
		}
	}
	seen = CPUSet{}
	for _, d := range r.RunDelay {
		if int(d.CPU) >= MaxCPUs || seen.Has(int(d.CPU)) {
			return fmt.Errorf("%w: report %d: run delay for cpu %d repeated or out of range", ErrInvalid, r.Seq, d.CPU)
		}
		seen.Add(int(d.CPU))
		// Tasks can wait at most (tasks × interval); a million waiting tasks
		// per CPU is past anything real and keeps the float maths finite.
		if d.WaitNanos > uint64(r.IntervalNanos)*1_000_000 {
			return fmt.Errorf("%w: report %d: cpu %d run delay %d ns in a %d ns interval", ErrInvalid, r.Seq, d.CPU, d.WaitNanos, r.IntervalNanos)
		}
	}
	// Arrays, not maps: Validate runs on every report, and a map literal
	// allocates each time.
	for _, f := range [...]struct {
		name string
		v    float64
	}{{"load1", r.Load1}} {
		if !finiteIn(f.v, 0, maxLoad) {
			return fmt.Errorf("%w: report %d: %s = %v", ErrInvalid, r.Seq, f.name, f.v)
		}
	}
	if r.PSI != nil && !finiteIn(r.PSI.SomeAvg10, 0, 100+100*fractionSlack) {
		return fmt.Errorf("%w: report %d: psi avg10 = %v", ErrInvalid, r.Seq, r.PSI.SomeAvg10)
	}
	if r.MemTotalBytes > maxMemoryBytes || r.MemAvailableBytes > r.MemTotalBytes {
		return fmt.Errorf("%w: report %d: memory available %d of total %d", ErrInvalid, r.Seq, r.MemAvailableBytes, r.MemTotalBytes)
	}
	if !finiteIn(r.SwapInPerSec, 0, maxRatePerSec) || !finiteIn(r.SwapOutPerSec, 0, maxRatePerSec) {
		return fmt.Errorf("%w: report %d: swap rate in=%v out=%v", ErrInvalid, r.Seq, r.SwapInPerSec, r.SwapOutPerSec)
	}
	if q := r.RunQueue; q != nil {
		switch q.Source {
		case RunQSourceTPBTF, RunQSourceRawTP, RunQSourceSchedstat, RunQSourcePSI:
		default:
			return fmt.Errorf("%w: report %d: unknown run-queue source %q", ErrInvalid, r.Seq, q.Source)
		}
		if len(q.Buckets) > MaxRunQBuckets {
			return fmt.Errorf("%w: report %d: %d run-queue buckets", ErrInvalid, r.Seq, len(q.Buckets))
		}
		if q.P50Nanos < 0 || q.P95Nanos < q.P50Nanos || q.P99Nanos < q.P95Nanos || q.P99Nanos > int64(MaxInterval) {
			return fmt.Errorf("%w: report %d: run-queue percentiles %d/%d/%d ns", ErrInvalid, r.Seq, q.P50Nanos, q.P95Nanos, q.P99Nanos)
		}
	}
	if r.Memory != nil {
		if err := r.Memory.validate(r.Seq, r.IntervalNanos); err != nil {
			return err
		}
	}
	if len(r.Apps) > MaxApps {
		return fmt.Errorf("%w: report %d: %d applications, limit %d", ErrInvalid, r.Seq, len(r.Apps), MaxApps)
	}
	for i := range r.Apps {
		if err := r.Apps[i].validate(); err != nil {
			return fmt.Errorf("%w: report %d: app %q: %v", ErrInvalid, r.Seq, clipName(r.Apps[i].Name), err)
		}
		for _, b := range r.Apps[:i] {
			if b.Name == r.Apps[i].Name {
				return fmt.Errorf("%w: report %d: app %q twice", ErrInvalid, r.Seq, b.Name)
			}
		}
	}
	return nil
}

// maxSeconds bounds every time in AppStats: a day.
const maxSeconds = 86400

func (a *AppStats) validate() error {
	if !ValidAppName(a.Name) {
		return errors.New("not an application name (1-64 letters, digits, '.', '_' or '-')")
	}
	if a.Drops > a.Arrivals {
		return fmt.Errorf("%d drops of %d arrivals", a.Drops, a.Arrivals)
	}
	const secs, secs2 = float64(maxSeconds), float64(maxSeconds) * maxSeconds
	for _, f := range [...]struct {
		name  string
		v, hi float64
	}{{"rate", a.ArrivalRate, maxRatePerSec}, {"ia_mean", a.InterArrivalMean, secs}, {"ia_var", a.InterArrivalVar, secs2},
		{"svc_mean", a.ServiceMean, secs}, {"svc_var", a.ServiceVar, secs2}, {"p50", a.RespP50, secs}, {"p95", a.RespP95, secs},
		{"p99", a.RespP99, secs}, {"sla_mean", a.SLAMean, secs}, {"sla_target", a.SLATarget, secs}} {
		if !finiteIn(f.v, 0, f.hi) {
			return fmt.Errorf("%s = %v", f.name, f.v)
		}
	}
	if !finiteIn(a.CPUSeconds, 0, secs*MaxCPUs) || len(a.CPUSource) > MaxStringLen || (a.CPUSource == "" && a.CPUSeconds != 0) {
		return fmt.Errorf("cpu_s = %v from %q", a.CPUSeconds, clipName(a.CPUSource))
	}
	if !(a.RespP50 <= a.RespP95 && a.RespP95 <= a.RespP99) {
		return fmt.Errorf("percentiles out of order: %v %v %v", a.RespP50, a.RespP95, a.RespP99)
	}
	if !finiteIn(a.SLAPercentile, 0, 1) || a.SLAPercentile == 1 {
		return fmt.Errorf("sla_pct = %v", a.SLAPercentile)
	}
	return nil
}

func clipName(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}

// Command asks the agent to change CPU state or its sampling interval.
type Command struct {
	ID      uint64 `msgpack:"id"`
	Online  CPUSet `msgpack:"online,omitempty"`
	Offline CPUSet `msgpack:"offline,omitempty"`
	// WantOnline, when non-zero, asks the agent to online present but
	// offline CPUs — waiting for hot-added ones to appear — until at least
	// this many are online. It names no CPU because the guest's kernel,
	// not the host, numbers a hot-added CPU.
	WantOnline uint16 `msgpack:"want_online,omitempty"`
	// IntervalNanos, when non-zero, sets the sampling interval.
	IntervalNanos int64 `msgpack:"ivl,omitempty"`
}

// Type implements Message.
func (*Command) Type() MsgType { return TypeCommand }

// Validate implements Message.
func (c *Command) Validate() error {
	if c.ID == 0 {
		return fmt.Errorf("%w: command: id 0", ErrInvalid)
	}
	if c.Online.Len() > 0 && c.Offline.Len() > 0 && c.Online.Difference(c.Offline).Len() != c.Online.Len() {
		return fmt.Errorf("%w: command %d: cpus both onlined and offlined", ErrInvalid, c.ID)
	}
	if c.WantOnline > MaxCPUs {
		return fmt.Errorf("%w: command %d: want %d CPUs online, limit %d", ErrInvalid, c.ID, c.WantOnline, MaxCPUs)
	}
	if c.IntervalNanos != 0 {
		return checkInterval(fmt.Sprintf("command %d", c.ID), c.IntervalNanos)
	}
	return nil
}

// CPUError is one CPU the agent could not change.
type CPUError struct {
	CPU   uint16 `msgpack:"cpu"`
	Error string `msgpack:"err"`
}

// Ack answers a Command. OK is true only when every requested change took
// effect; Failed says which CPUs did not and why. Online and Present are the
// guest's sets after the command.
type Ack struct {
	ID      uint64     `msgpack:"id"`
	OK      bool       `msgpack:"ok"`
	Error   string     `msgpack:"err,omitempty"`
	Failed  []CPUError `msgpack:"failed,omitempty"`
	Online  CPUSet     `msgpack:"online"`
	Present CPUSet     `msgpack:"present"`
	// Topology gives the APIC ids of the CPUs the command touched, read
	// while they were online, so the actuator can unplug the right device.
	Topology []CPUTopology `msgpack:"topo,omitempty"`
}

// Type implements Message.
func (*Ack) Type() MsgType { return TypeAck }

// Validate implements Message.
func (a *Ack) Validate() error {
	if a.ID == 0 {
		return fmt.Errorf("%w: ack: id 0", ErrInvalid)
	}
	if len(a.Error) > MaxErrorLen || len(a.Failed) > MaxCPUErrors {
		return fmt.Errorf("%w: ack %d: error text or list too long", ErrInvalid, a.ID)
	}
	for _, f := range a.Failed {
		if int(f.CPU) >= MaxCPUs || len(f.Error) > MaxErrorLen {
			return fmt.Errorf("%w: ack %d: bad failure entry for cpu %d", ErrInvalid, a.ID, f.CPU)
		}
	}
	if a.OK && (a.Error != "" || len(a.Failed) > 0) {
		return fmt.Errorf("%w: ack %d: ok with errors", ErrInvalid, a.ID)
	}
	if err := checkCPUSets(fmt.Sprintf("ack %d", a.ID), a.Present, a.Present, a.Online); err != nil {
		return err
	}
	return checkTopology(fmt.Sprintf("ack %d", a.ID), a.Topology)
}

func checkCPUSets(what string, possible, present, online CPUSet) error {
	if !present.SubsetOf(possible) {
		return fmt.Errorf("%w: %s: present cpus %s not within possible %s", ErrInvalid, what, present, possible)
	}
	if !online.SubsetOf(present) {
		return fmt.Errorf("%w: %s: online cpus %s not within present %s", ErrInvalid, what, online, present)
	}
	return nil
}

func checkTopology(what string, topo []CPUTopology) error {
	if len(topo) > MaxCPUs {
		return fmt.Errorf("%w: %s: %d topology entries", ErrInvalid, what, len(topo))
	}
	for _, t := range topo {
		if int(t.CPU) >= MaxCPUs {
			return fmt.Errorf("%w: %s: topology for cpu %d", ErrInvalid, what, t.CPU)
		}
	}
	return nil
}

func checkInterval(what string, nanos int64) error {
	if d := time.Duration(nanos); d < MinInterval || d > MaxInterval {
		return fmt.Errorf("%w: %s: interval %v outside [%v, %v]", ErrInvalid, what, d, MinInterval, MaxInterval)
	}
	return nil
}

func finiteIn(v, lo, hi float64) bool {
	return !math.IsNaN(v) && v >= lo && v <= hi
}
