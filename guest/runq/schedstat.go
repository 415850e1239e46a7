package runq

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/prometheus/procfs"

	"github.com/hotplugheaven/hotplug/proto"
)

// schedstatSampler estimates run-queue latency from /proc/schedstat
// (Documentation/scheduler/sched-stats.rst): per CPU, run_delay is the
// total time in ns tasks spent runnable and waiting for that CPU, and
// pcount the number of timeslices run on it. Both come from sched_info,
// which the kernel keeps whenever CONFIG_SCHEDSTATS is built in, even with
// kernel.sched_schedstats off.
//
// The file is read once per interval, by the collector, whose per-CPU
// deltas (Report.RunDelay) already leave out a CPU without a baseline
// (hot-added), whose counters went backwards, or whose wait exceeds a
// million tasks waiting the whole interval. This sampler reads the file
// only when it is opened, to know it is there.
//
// What that gives, honestly, is one number per interval: the mean wait per
// timeslice, Σ Δrun_delay ÷ Σ Δpcount over all CPUs. Nothing in schedstat
// describes the spread, so the reported p50/p95/p99 are that mean scaled by
// an assumed exponential distribution (see fromMean) — an estimate, never
// a measurement, and Buckets stay empty.
type schedstatSampler struct{}

func openSchedstat(procRoot string) (sampler, error) {
	pfs, err := procfs.NewFS(procRoot)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(procRoot, "schedstat")
	st, err := pfs.Schedstat()
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s does not exist (kernel built without CONFIG_SCHEDSTATS)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if len(st.CPUs) == 0 {
		// procfs skips lines it does not match, so a format change
		// reads as "no CPUs".
		return nil, fmt.Errorf("%s has no cpuN line with 9 fields (unknown schedstat version?)", path)
	}
	return schedstatSampler{}, nil
}

// sample is the mean wait per timeslice over the report's RunDelay; a
// report without one (the collector's first, or schedstat unreadable this
// interval) gets no RunQueue.
func (schedstatSampler) sample(r *proto.Report) (*proto.RunQueue, error) {
	if len(r.RunDelay) == 0 {
		return nil, nil
	}
	var wait, slices float64 // float: no overflow summing many CPUs
	for _, d := range r.RunDelay {
		wait += float64(d.WaitNanos)
		slices += float64(d.Timeslices)
	}
	var mean time.Duration
	if slices > 0 {
		mean = clampDuration(wait / slices)
	}
	return fromMean(proto.RunQSourceSchedstat, mean), nil
}

func (schedstatSampler) close() error { return nil }
