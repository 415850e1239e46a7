package runq

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strconv"
	"time"

	"github.com/prometheus/procfs"

	"github.com/hotplugheaven/hotplug/proto"
)

// schedstatSampler estimates run-queue latency from /proc/schedstat
// (Documentation/scheduler/sched-stats.rst; the cpuN line is the same in
// versions 15 to 17): per CPU, field 8 is run_delay, the total time in ns
// tasks spent runnable and waiting for that CPU, and field 9 is pcount, the
// number of timeslices run on it. Both come from sched_info, which the
// kernel keeps whenever CONFIG_SCHEDSTATS is built in, even with
// kernel.sched_schedstats off.
//
// What that gives, honestly, is one number per interval: the mean wait per
// timeslice, Σ Δrun_delay ÷ Σ Δpcount over all CPUs. Nothing in schedstat
// describes the spread, so the reported p50/p95/p99 are that mean scaled by
// an assumed exponential distribution (see fromMean) — an estimate, never
// a measurement, and Buckets stay empty. A CPU without a baseline
// (hot-added since the last sample), whose counters went backwards, or
// whose wait exceeds a million tasks waiting the whole interval is left out
// of the sums rather than distorting them.
type schedstatSampler struct {
	fs   procfs.FS
	path string
	now  func() time.Time
	last time.Time
	prev map[int]schedCPU
}

type schedCPU struct{ wait, slices uint64 }

func openSchedstat(procRoot string, now func() time.Time) (sampler, error) {
	pfs, err := procfs.NewFS(procRoot)
	if err != nil {
		return nil, err
	}
	s := &schedstatSampler{fs: pfs, path: filepath.Join(procRoot, "schedstat"), now: now}
	if s.prev, err = s.read(); err != nil {
		return nil, err
	}
	s.last = now()
	return s, nil
}

func (s *schedstatSampler) read() (map[int]schedCPU, error) {
	st, err := s.fs.Schedstat()
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s does not exist (kernel built without CONFIG_SCHEDSTATS)", s.path)
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", s.path, err)
	}
	cpus := make(map[int]schedCPU, len(st.CPUs))
	for _, c := range st.CPUs {
		n, err := strconv.Atoi(c.CPUNum)
		if err != nil || n < 0 || n >= proto.MaxCPUs {
			continue
		}
		cpus[n] = schedCPU{c.WaitingNanoseconds, c.RunTimeslices}
	}
	if len(cpus) == 0 {
		// procfs skips lines it does not match, so a format change
		// reads as "no CPUs".
		return nil, fmt.Errorf("%s has no cpuN line with 9 fields (unknown schedstat version?)", s.path)
	}
	return cpus, nil
}

func (s *schedstatSampler) sample() (*proto.RunQueue, error) {
	cur, err := s.read()
	if err != nil {
		return nil, err
	}
	now := s.now()
	elapsed := max(now.Sub(s.last), 0)
	s.last = now
	maxWait := float64(elapsed) * 1e6
	var wait, slices float64 // float: no overflow summing many CPUs
	for cpu, c := range cur {
		p, ok := s.prev[cpu]
		if !ok || c.wait < p.wait || c.slices < p.slices || float64(c.wait-p.wait) > maxWait {
			continue
		}
		wait += float64(c.wait - p.wait)
		slices += float64(c.slices - p.slices)
	}
	s.prev = cur
	var mean time.Duration
	if slices > 0 {
		mean = clampDuration(wait / slices)
	}
	return fromMean(proto.RunQSourceSchedstat, mean), nil
}

func (s *schedstatSampler) close() error { return nil }
