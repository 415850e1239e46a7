// Package stats turns parsed requests into the numbers the G/G/c model
// needs: arrivals and drops, the mean and variance of inter-arrival and
// service times, and response-time percentiles from a DDSketch
// (github.com/DataDog/sketches-go), for one sampling interval or for a
// whole file.
//
// It is pure: records in, a Summary out, no clock, no I/O, no goroutines.
// Memory is bounded whatever the input: a fixed number of timestamps
// (Options.MaxTimes) and a sketch with a bounded number of bins.
//
// # Inter-arrival variance from whole-second timestamps
//
// Most access logs stamp requests to the second. Differences of such
// stamps are 0 or whole seconds and say nothing about the spread of the
// real gaps, so when any record of the interval has a timestamp coarser
// than a millisecond-scale resolution (TimeRes ≥ 1 s), or more records
// arrive than MaxTimes, the variance is estimated from counts instead.
//
// Arrivals are counted in 1-second bins by their log timestamp: N_k for
// second k. For a stationary renewal arrival process with rate λ and
// inter-arrival times of mean 1/λ and squared coefficient of variation
// c_a² = σa²·λ², the index of dispersion of counts,
//
//	I(t) = Var[N(t)] / E[N(t)],
//
// tends to c_a² as the window t grows (Cox & Lewis, The Statistical
// Analysis of Series of Events, 1966, §4.5; for a Poisson process
// I(t) = 1 = c_a² for every t). With m the mean and v the sample variance
// of the per-second counts, λ ≈ m and
//
//	c_a² ≈ v / m,   E[A] = 1/m,   σa² = c_a² / λ² ≈ v / m³.
//
// Assumptions, and where it goes wrong:
//   - stationarity within the interval: a rate that ramps up inside the
//     interval inflates v and so σa² (the estimate is then pessimistic,
//     which errs on the side of more vCPUs);
//   - the 1-s bin is long against 1/λ (several arrivals per bin). For a
//     renewal process I(1 s) differs from its limit by a term of order
//     1/(λ·1 s); for Poisson there is no error at all. At rates below about
//     one request per second the estimate is rough, and so is any
//     queueing estimate from so few requests;
//   - correlated arrivals (sessions, retries) make I(t) grow with t; one
//     second then understates long-range burstiness;
//   - at least two closed bins: otherwise the interval reports the Poisson
//     value σa² = E[A]² and says so (AssumedPoisson).
//
// Bins follow the log's own clock, not the time lines were read: a backlog
// read in one go is binned as it happened. The second being written when
// an interval ends is carried into the next interval, so that a boundary
// does not split a bin into two short ones. An out-of-order record (HAProxy
// logs at the end of a request but stamps its start) older than the open
// bin is counted in the open bin. An idle gap between intervals adds at
// most Options.MaxGapBins empty bins, so that an hour of silence does not
// swamp the interval after it.
//
// With sub-second timestamps the inter-arrival times are the differences
// of the sorted arrival times, the first one measured from the previous
// interval's last arrival.
package stats

import (
	"bytes"
	"math"
	"slices"

	"github.com/DataDog/sketches-go/ddsketch"

	"github.com/hotplugheaven/hotplug/guest/applog/parse"
)

// Options bound a Window; zero fields take defaults.
type Options struct {
	// MaxTimes is how many sub-second arrival times an interval keeps for
	// exact inter-arrival times (default 1<<17, 1 MiB); past it the
	// counts method is used.
	MaxTimes int
	// MaxGapBins bounds the empty 1-s bins an idle gap between intervals
	// adds (default 0: unbounded, right for a whole file; the agent uses
	// the sampling interval).
	MaxGapBins int64
	// RelativeAccuracy of the response-time sketch (default 0.01).
	RelativeAccuracy float64
	// MaxBins of the sketch (default 2048); the lowest bins collapse past it.
	MaxBins int
}

// welford is a running mean and variance (Welford 1962) with the
// closed-form merge of Chan et al. for adding many equal values at once.
type welford struct {
	n       float64
	mean, m float64
}

func (w *welford) add(x float64) {
	w.n++
	d := x - w.mean
	w.mean += d / w.n
	w.m += d * (x - w.mean)
}

// addN adds k copies of x.
func (w *welford) addN(x float64, k float64) {
	if k <= 0 {
		return
	}
	n := w.n + k
	d := x - w.mean
	w.mean += d * k / n
	w.m += d * d * w.n * k / n
	w.n = n
}

// variance is the sample variance (n−1), 0 below two values.
func (w *welford) variance() float64 {
	if w.n < 2 {
		return 0
	}
	return math.Max(w.m/(w.n-1), 0)
}

// Window accumulates one interval (or one file) of records.
type Window struct {
	opt Options

	arrivals, drops, malformed uint64
	malformedBy                [parse.NumReasons]uint64
	first, last                int64
	coarse                     bool // a record with whole-second (or coarser) time
	times                      []int64
	timesFull                  bool
	added                      bool // any record since the last Reset

	svc    welford
	sketch *ddsketch.DDSketch

	// counts method: the open bin (carried across intervals) and the
	// closed bins of this interval.
	open      bool
	openSec   int64
	openCount float64
	bins      welford
	crossing  bool // the open bin is from an earlier interval
	// prevLast is the last arrival of earlier intervals (sub-second mode).
	prevLast int64
	havePrev bool
}

// New returns an empty Window.
func New(opt Options) *Window {
	if opt.MaxTimes <= 0 {
		opt.MaxTimes = 1 << 17
	}
	if opt.RelativeAccuracy <= 0 || opt.RelativeAccuracy >= 1 {
		opt.RelativeAccuracy = 0.01
	}
	if opt.MaxBins <= 0 {
		opt.MaxBins = 2048
	}
	s, err := ddsketch.LogCollapsingLowestDenseDDSketch(opt.RelativeAccuracy, opt.MaxBins)
	if err != nil {
		panic(err) // only for an accuracy outside (0,1), excluded above
	}
	return &Window{opt: opt, sketch: s}
}

// Add counts one request; drop says its status counts as dropped.
// Durations of dropped requests are left out of the service and response
// times: a fast 503 says nothing about how long serving takes.
func (w *Window) Add(rec *parse.Record, drop bool) {
	w.arrivals++
	if drop {
		w.drops++
	} else if rec.HasDuration {
		d := min(max(rec.Duration, 0), maxSeconds)
		w.svc.add(d)
		_ = w.sketch.Add(d) // cannot fail for d ≥ 0
	}
	t := rec.Time
	if !w.added || t < w.first {
		w.first = t
	}
	if !w.added || t > w.last {
		w.last = t
	}
	w.added = true
	if rec.TimeRes >= 1e9 {
		w.coarse = true
	}
	if !w.timesFull {
		if len(w.times) < w.opt.MaxTimes {
			w.times = append(w.times, t)
		} else {
			w.timesFull = true
		}
	}
	w.count(floorDiv(t, 1e9))
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// count puts one arrival at second sec into the 1-s bins.
func (w *Window) count(sec int64) {
	switch {
	case !w.open:
		w.open, w.openSec, w.openCount = true, sec, 1
	case sec == w.openSec:
		w.openCount++
	case sec > w.openSec:
		w.bins.add(w.openCount)
		gap := sec - w.openSec - 1
		if w.crossing && w.opt.MaxGapBins > 0 {
			gap = min(gap, w.opt.MaxGapBins)
		}
		w.crossing = false
		w.bins.addN(0, float64(gap))
		w.openSec, w.openCount = sec, 1
	default: // out of order: into the open bin
		w.openCount++
	}
}

// Malformed counts a skipped line.
func (w *Window) Malformed(r parse.Reason) {
	w.malformed++
	if r < parse.NumReasons {
		w.malformedBy[r]++
	}
}

// maxSeconds matches proto's bound on every time in AppStats.
const maxSeconds = 86400

// Summary is what a Window saw.
type Summary struct {
	Arrivals, Drops, Malformed uint64
	MalformedBy                [parse.NumReasons]uint64
	// First and Last are the earliest and latest arrival (Unix ns);
	// valid when Arrivals > 0.
	First, Last int64
	// SpanSeconds is Last − First plus one timestamp resolution step.
	SpanSeconds float64

	// ServiceN counts requests with a duration; when 0 the log has no
	// service time and the Service and Resp fields are zero.
	ServiceN                  uint64
	ServiceMean, ServiceVar   float64
	RespP50, RespP95, RespP99 float64

	// InterArrival mean and variance in seconds. InterArrivalN is the number
	// of inter-arrival times (sub-second mode) or of 1-s bins (counts).
	InterArrivalMean, InterArrivalVar float64
	InterArrivalN                     uint64
	FromCounts                        bool // the counts method was used
	AssumedPoisson                    bool // too little data: σa² = E[A]²
}

// Summary computes the statistics of what was added since the last Reset;
// call it once per interval, then Reset.
// final closes the open 1-s bin (end of a file); otherwise it is carried
// into the next interval unless nothing arrived in this one.
func (w *Window) Summary(final bool) Summary {
	s := Summary{Arrivals: w.arrivals, Drops: w.drops, Malformed: w.malformed, MalformedBy: w.malformedBy}
	if w.open && (final || !w.added) {
		w.bins.add(w.openCount)
		w.open = false
	}
	if w.svc.n > 0 {
		s.ServiceN = uint64(w.svc.n)
		s.ServiceMean, s.ServiceVar = clamp(w.svc.mean), clampVar(w.svc.variance())
		q, err := w.sketch.GetValuesAtQuantiles([]float64{0.5, 0.95, 0.99})
		if err == nil {
			s.RespP50 = clamp(q[0])
			s.RespP95 = max(clamp(q[1]), s.RespP50)
			s.RespP99 = max(clamp(q[2]), s.RespP95)
		}
	}
	if w.arrivals == 0 {
		return s
	}
	s.First, s.Last = w.first, w.last
	res := 1e9
	if !w.coarse {
		res = 1e6
	}
	s.SpanSeconds = float64(w.last-w.first)/1e9 + res/1e9

	if !w.coarse && !w.timesFull {
		t := w.times
		slices.Sort(t)
		var ia welford
		prev, have := w.prevLast, w.havePrev && w.prevLast <= t[0]
		for _, x := range t {
			if have {
				ia.add(float64(x-prev) / 1e9)
			}
			prev, have = x, true
		}
		if ia.n >= 2 {
			s.InterArrivalMean, s.InterArrivalVar = clamp(ia.mean), clampVar(ia.variance())
			s.InterArrivalN = uint64(ia.n)
			return s
		}
	}
	s.FromCounts = true
	s.InterArrivalN = uint64(w.bins.n)
	if w.bins.n >= 2 && w.bins.mean > 0 {
		m, v := w.bins.mean, w.bins.variance()
		s.InterArrivalMean, s.InterArrivalVar = clamp(1/m), clampVar(v/(m*m*m))
		return s
	}
	// Too few bins: the mean from the span, the Poisson variance.
	mean := clamp(s.SpanSeconds / float64(w.arrivals))
	s.InterArrivalMean, s.InterArrivalVar, s.AssumedPoisson = mean, clampVar(mean*mean), true
	return s
}

func clamp(v float64) float64 {
	if math.IsNaN(v) || v < 0 {
		return 0
	}
	return min(v, maxSeconds)
}

func clampVar(v float64) float64 {
	if math.IsNaN(v) || v < 0 {
		return 0
	}
	return min(v, maxSeconds*maxSeconds)
}

// Sketch appends the protobuf encoding of the interval's response-time
// DDSketch to buf (empty when there were no durations).
func (w *Window) Sketch(buf *bytes.Buffer) {
	if w.svc.n > 0 {
		w.sketch.EncodeProto(buf)
	}
}

// Reset starts the next interval. The open 1-s bin and the last arrival
// carry over, so that bins and inter-arrival times span the boundary.
func (w *Window) Reset() {
	if w.added && len(w.times) > 0 {
		w.prevLast, w.havePrev = slices.Max(w.times), true
	}
	w.arrivals, w.drops, w.malformed = 0, 0, 0
	w.malformedBy = [parse.NumReasons]uint64{}
	w.coarse, w.timesFull, w.added = false, false, false
	w.times = w.times[:0]
	w.svc = welford{}
	w.sketch.Clear()
	w.bins = welford{}
	w.crossing = w.open
}
