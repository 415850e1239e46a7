package runq

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path/filepath"
	"syscall"
	"time"

	"github.com/prometheus/procfs"

	"github.com/hotplugheaven/hotplug/proto"
)

// psiSampler estimates run-queue latency from CPU pressure
// (Documentation/accounting/psi.rst): the "some" line's total is the time,
// in µs, during which at least one runnable task was waiting for a CPU.
// That is a duration, not a count of waits, so it is divided by the
// context switches of the interval (/proc/stat ctxt). Every wait that ends
// ends in a context switch, so there are at most that many waits, and the
// waits add up to at least the "some" time; the quotient is therefore a
// lower bound on the mean wait. Percentiles are estimated from it as for
// schedstat (see fromMean); Buckets stay empty. The least informative
// source: used only without schedstat.
type psiSampler struct {
	fs        procfs.FS
	path      string
	now       func() time.Time
	last      time.Time
	prevStall uint64 // µs
	prevCtxt  uint64
}

func openPSI(procRoot string, now func() time.Time) (sampler, error) {
	pfs, err := procfs.NewFS(procRoot)
	if err != nil {
		return nil, err
	}
	s := &psiSampler{fs: pfs, path: filepath.Join(procRoot, "pressure", "cpu"), now: now}
	if s.prevStall, s.prevCtxt, err = s.read(); err != nil {
		return nil, err
	}
	s.last = now()
	return s, nil
}

func (s *psiSampler) read() (stallMicros, ctxt uint64, err error) {
	st, err := s.fs.PSIStatsForResource("cpu")
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return 0, 0, fmt.Errorf("%s does not exist (needs Linux 4.20+ with CONFIG_PSI)", s.path)
	case errors.Is(err, syscall.EOPNOTSUPP):
		return 0, 0, fmt.Errorf("%s: PSI is built in but disabled (psi=0 on the kernel command line, or CONFIG_PSI_DEFAULT_DISABLED without psi=1)", s.path)
	case err != nil:
		return 0, 0, fmt.Errorf("reading %s: %w", s.path, err)
	case st.Some == nil:
		return 0, 0, fmt.Errorf("%s has no \"some\" line", s.path)
	}
	stat, err := s.fs.Stat()
	if err != nil {
		return 0, 0, fmt.Errorf("reading context switches: %w", err)
	}
	return st.Some.Total, stat.ContextSwitches, nil
}

func (s *psiSampler) sample(*proto.Report) (*proto.RunQueue, error) {
	stall, ctxt, err := s.read()
	if err != nil {
		return nil, err
	}
	now := s.now()
	elapsed := max(now.Sub(s.last), 0)
	s.last = now
	prevStall, prevCtxt := s.prevStall, s.prevCtxt
	s.prevStall, s.prevCtxt = stall, ctxt
	if stall < prevStall || ctxt < prevCtxt {
		return nil, fmt.Errorf("%s or /proc/stat ctxt went backwards; interval skipped", s.path)
	}
	// "some" is wall time: it cannot exceed the interval.
	stallNs := math.Min(float64(stall-prevStall)*1e3, float64(elapsed))
	switches := float64(ctxt - prevCtxt)
	mean := stallNs // no switch at all: one wait, as long as the stall
	if switches > 0 {
		mean = stallNs / switches
	}
	return fromMean(proto.RunQSourcePSI, clampDuration(mean)), nil
}

func (s *psiSampler) close() error { return nil }
