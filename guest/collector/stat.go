package collector

import (
	"fmt"
	"math"
	"slices"

	"github.com/prometheus/procfs"

	"github.com/hotplugheaven/hotplug/proto"
)

// statSource reads /proc/stat (Documentation/filesystems/proc.rst, "1.8
// Miscellaneous kernel statistics in /proc/stat") through procfs: each
// CPU's busy, idle, iowait and steal shares. It is the one source the
// collector cannot work without.
type statSource struct {
	fs         procfs.FS
	path, root string
	cur, prev  map[int64]procfs.CPUStat
	ids        []int64 // scratch
}

func (s *statSource) Name() string { return SourceStat }
func (s *statSource) Path() string { return s.path }

func (s *statSource) Read() error {
	st, err := s.fs.Stat()
	if err == nil && len(st.CPU) == 0 {
		// procfs skips lines it does not know, so a file without per-CPU
		// lines parses "successfully" into an empty map.
		err = fmt.Errorf("%w: no cpuN lines", ErrParse)
	}
	if err != nil {
		// A required source: the baseline stays, and the next success
		// covers the gap.
		return fmt.Errorf("collector: %w; per-CPU load cannot be measured without it (is procfs mounted at %s?)",
			inFile(s.path, err), s.root)
	}
	s.cur = st.CPU
	return nil
}

func (s *statSource) Fill(r *proto.Report) error {
	if r.IntervalNanos > 0 && s.prev != nil {
		s.ids = s.ids[:0]
		r.CPUs, s.ids = cpuFractions(make([]proto.CPUStat, 0, len(s.cur)), s.prev, s.cur, s.ids)
	}
	// The current counters become the baseline whatever happened: a CPU
	// omitted for going backwards restarts from here.
	s.prev = s.cur
	return nil
}

// cpuFractions appends to out, in CPU order, each CPU's share of the interval
// spent busy, idle, in iowait and stolen, from the deltas of its /proc/stat
// counters between prev and cur. ids is scratch space, returned for reuse.
//
// A CPU is left out rather than reported with made-up numbers when:
//   - it is not in prev: it was hot-added or onlined since, no baseline;
//   - a counter went backwards: the CPU was re-onlined (its idle and iowait
//     times come from the nohz code and can restart), or iowait did what
//     proc.rst warns of ("The value of iowait field in /proc/stat will
//     decrease in certain conditions");
//   - no time passed on it at all.
//
// In all three the caller's next baseline is cur, so the CPU is back the
// round after.
func cpuFractions(out []proto.CPUStat, prev, cur map[int64]procfs.CPUStat, ids []int64) ([]proto.CPUStat, []int64) {
	for id := range cur {
		if id >= 0 && id < proto.MaxCPUs {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		p, ok := prev[id]
		if !ok {
			continue
		}
		if f, ok := fractions(p, cur[id]); ok {
			f.CPU = uint16(id)
			out = append(out, f)
		}
	}
	return out, ids
}

// fractions computes one CPU's fractions. Guest and guest_nice are not
// added: the kernel already counts guest time inside user and nice
// (proc.rst), so the eight fields below partition the CPU's time.
func fractions(p, c procfs.CPUStat) (proto.CPUStat, bool) {
	d := [...]float64{
		c.User - p.User, c.Nice - p.Nice, c.System - p.System,
		c.IRQ - p.IRQ, c.SoftIRQ - p.SoftIRQ, // busy: indexes 0-4
		c.Idle - p.Idle, c.Iowait - p.Iowait, c.Steal - p.Steal,
	}
	total := 0.0
	for _, v := range d {
		// procfs hands back jiffies/USER_HZ as float64; a counter that
		// did not move differs by exactly 0, one that went backwards by
		// at least a jiffy.
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return proto.CPUStat{}, false
		}
		total += v
	}
	if total <= 0 || math.IsInf(total, 0) {
		return proto.CPUStat{}, false
	}
	busy := d[0] + d[1] + d[2] + d[3] + d[4]
	return proto.CPUStat{
		Busy:   fraction(busy, total),
		Idle:   fraction(d[5], total),
		IOWait: fraction(d[6], total),
		Steal:  fraction(d[7], total),
	}, true
}

// fraction returns part/total as a float32 in [0, 1]; float rounding can
// land a hair outside.
func fraction(part, total float64) float32 {
	return float32(min(max(part/total, 0), 1))
}
