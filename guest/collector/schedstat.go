package collector

import (
	"fmt"
	"strconv"

	"github.com/prometheus/procfs"

	"github.com/hotplugheaven/hotplug/proto"
)

// schedCounters is one CPU's cumulative run-queue counters from
// /proc/schedstat.
type schedCounters struct {
	cpu    int
	wait   uint64 // run_delay: ns tasks spent runnable, waiting for this CPU
	slices uint64 // pcount: timeslices run on this CPU
}

// schedstatSource reads the cpuN lines of /proc/schedstat
// (Documentation/scheduler/sched-stats.rst, versions 15 to 17 share the cpu
// line) through procfs: field 8 is run_delay in nanoseconds, field 9 the
// number of timeslices. Both come from sched_info, which the kernel keeps
// whenever CONFIG_SCHEDSTATS is built in, even with kernel.sched_schedstats
// off. The file is missing with CONFIG_SCHEDSTATS off.
type schedstatSource struct {
	fs   procfs.FS
	path string
	cur  []schedCounters
	prev map[int]schedCounters
}

func (s *schedstatSource) Name() string { return SourceSchedstat }
func (s *schedstatSource) Path() string { return s.path }

func (s *schedstatSource) Read() error {
	st, err := s.fs.Schedstat()
	if err == nil && len(st.CPUs) == 0 {
		// procfs matches cpuN lines with a regular expression and
		// silently skips the rest, so a format change reads as "no CPUs".
		err = fmt.Errorf("%w: no cpuN line with 9 fields (unknown schedstat version?)", ErrParse)
	}
	if err != nil {
		clear(s.prev)
		return absent(s.path, err, "this kernel has no schedstat (CONFIG_SCHEDSTATS off); the host sizes without run-queue delay")
	}
	s.cur = s.cur[:0]
	for _, c := range st.CPUs {
		n, err := strconv.Atoi(c.CPUNum)
		// The kernel prints CPUs in ascending order; anything else would
		// put one CPU twice into the Report.
		if err != nil || n < 0 || n >= proto.MaxCPUs || (len(s.cur) > 0 && n <= s.cur[len(s.cur)-1].cpu) {
			continue
		}
		s.cur = append(s.cur, schedCounters{cpu: n, wait: c.WaitingNanoseconds, slices: c.RunTimeslices})
	}
	return nil
}

func (s *schedstatSource) Fill(r *proto.Report) error {
	if r.IntervalNanos > 0 && len(s.cur) > 0 && len(s.prev) > 0 {
		r.RunDelay = runDelays(make([]proto.RunDelay, 0, len(s.cur)), s.prev, s.cur, uint64(r.IntervalNanos)*maxWaitPerNano)
	}
	clear(s.prev)
	for _, c := range s.cur {
		s.prev[c.cpu] = c
	}
	return nil
}

// maxWaitPerNano mirrors proto.Report.Validate: run delay may not exceed a
// million waiting tasks for the whole interval.
const maxWaitPerNano = 1_000_000

// runDelays appends to out each CPU's run-delay and timeslice deltas between
// prev and cur. As in cpuFractions, a CPU without a baseline (hot-added,
// or schedstat just became readable) or whose counters went backwards is
// left out rather than reported as a huge or negative delta, as is a wait
// longer than maxWait, which no real interval produces.
func runDelays(out []proto.RunDelay, prev map[int]schedCounters, cur []schedCounters, maxWait uint64) []proto.RunDelay {
	for _, c := range cur {
		p, ok := prev[c.cpu]
		if !ok || c.wait < p.wait || c.slices < p.slices || c.wait-p.wait > maxWait {
			continue
		}
		out = append(out, proto.RunDelay{CPU: uint16(c.cpu), WaitNanos: c.wait - p.wait, Timeslices: c.slices - p.slices})
	}
	return out
}
