package collector

import (
	"fmt"
	"strconv"

	"github.com/hotplugheaven/hotplug/proto"
)

// schedCounters is one CPU's cumulative run-queue counters from
// /proc/schedstat.
type schedCounters struct {
	cpu    int
	wait   uint64 // run_delay: ns tasks spent runnable, waiting for this CPU
	slices uint64 // pcount: timeslices run on this CPU
}

// readSchedstat reads the cpuN lines of /proc/schedstat
// (Documentation/scheduler/sched-stats.rst, versions 15 to 17 share the cpu
// line) through procfs: field 8 is run_delay in nanoseconds, field 9 the
// number of timeslices. Both come from sched_info, which the kernel keeps
// whenever CONFIG_SCHEDSTATS is built in, even with kernel.sched_schedstats
// off. It returns nil when the file is missing (CONFIG_SCHEDSTATS off) or
// unusable; the reason is kept for Sources.
func (s *Sampler) readSchedstat() []schedCounters {
	st, err := s.fs.Schedstat()
	if err == nil && len(st.CPUs) == 0 {
		// procfs matches cpuN lines with a regular expression and
		// silently skips the rest, so a format change reads as "no CPUs".
		err = fmt.Errorf("%w: no cpuN line with 9 fields (unknown schedstat version?)", ErrParse)
	}
	if err != nil {
		s.setSource(srcSchedstat, false, absent(s.sources[srcSchedstat].Path, err,
			"this kernel has no schedstat (CONFIG_SCHEDSTATS off); the host sizes without run-queue delay"))
		return nil
	}
	s.sched = s.sched[:0]
	for _, c := range st.CPUs {
		n, err := strconv.Atoi(c.CPUNum)
		// The kernel prints CPUs in ascending order; anything else would
		// put one CPU twice into the Report.
		if err != nil || n < 0 || n >= proto.MaxCPUs || (len(s.sched) > 0 && n <= s.sched[len(s.sched)-1].cpu) {
			continue
		}
		s.sched = append(s.sched, schedCounters{cpu: n, wait: c.WaitingNanoseconds, slices: c.RunTimeslices})
	}
	s.setSource(srcSchedstat, true, nil)
	return s.sched
}

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
