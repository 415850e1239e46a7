package actuator

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/time/rate"

	"github.com/hotplugheaven/hotplug/proto"
)

// What one VM's agent may send, whatever it is. An honest agent stays far
// inside these; a hostile one meets them within a second.
const (
	// reportBurst is how many reports beyond the steady rate are taken at
	// once: an agent that was cut off sends what it queued (up to three
	// intervals' worth at the fast rate) when it gets back in.
	reportBurst = 16
	// ackBurst bounds Acks the same way; the actuator sends one command at
	// a time, so an honest agent never has more than one outstanding.
	ackBurst = 8
	// strikeLimit is how much misbehaviour (undecodable, invalid or
	// replayed messages, a new Hello within a minute of the last)
	// a VM's agent may show before its connection is dropped; strikes
	// come back at one per strikeRefill, across connections, so one valid
	// report wipes nothing and reconnecting does not start afresh.
	strikeLimit  = 10
	strikeRefill = 30 * time.Second
	// excessPerStrike: reports or Acks beyond the rate limit are dropped,
	// and every so many of them count as a strike, so a flood of valid
	// reports ends the connection too.
	excessPerStrike = 50
	// rehelloGrace: a new Hello on a session older than this is an agent
	// restart, not misbehaviour.
	rehelloGrace = time.Minute
)

// reportRate is the fastest steady rate at which a VM's agent may report:
// once per fast interval (a quarter of the policy interval, as the agent
// samples under CPU pressure).
func reportRate(interval time.Duration) rate.Limit {
	return rate.Every(max(interval/4, proto.MinInterval))
}

// guard judges what one VM's agent sends: how fast it may report and Ack,
// and how much misbehaviour it may show before it is dropped. It belongs
// to the VM's agentConn goroutine and lives as long as the VM, so its
// record outlives connections. Time is passed in.
type guard struct {
	reports *rate.Limiter
	acks    *rate.Limiter
	strikes *rate.Limiter
	excess  int
	// lastSeq is the current session's last admitted report.
	lastSeq uint64
	// sessionAt is when the current session's Hello came.
	sessionAt time.Time
	// rateOf is reportRate (benchmarks lift the limit to measure the
	// path behind it).
	rateOf func(time.Duration) rate.Limit
}

func newGuard(interval time.Duration) *guard {
	return &guard{
		reports: rate.NewLimiter(reportRate(interval), reportBurst),
		acks:    rate.NewLimiter(reportRate(interval), ackBurst),
		strikes: rate.NewLimiter(rate.Every(strikeRefill), strikeLimit),
		rateOf:  reportRate,
	}
}

// setInterval follows a policy change of the reporting interval.
func (g *guard) setInterval(now time.Time, interval time.Duration) {
	if l := g.rateOf(interval); l != g.reports.Limit() {
		g.reports.SetLimitAt(now, l)
		g.acks.SetLimitAt(now, l)
	}
}

// verdict is what the guard makes of one message.
type verdict struct {
	// reason is empty when the message is admitted, else a Reject constant.
	reason string
	// err says what was wrong, for the log.
	err error
	// drop: the agent has used up its strikes; end the connection.
	drop bool
}

// newSession starts the record of a session greeted at now. A Hello that
// replaces a session younger than rehelloGrace is a strike.
func (g *guard) newSession(now time.Time, rehello bool) verdict {
	young := rehello && now.Sub(g.sessionAt) < rehelloGrace
	g.lastSeq, g.sessionAt = 0, now
	if young {
		return g.strike(now, RejectRehello, fmt.Errorf("new Hello within %v of the last", rehelloGrace))
	}
	return verdict{}
}

// bad records a message that could not be decoded or validated.
func (g *guard) bad(now time.Time, reason string, err error) verdict {
	return g.strike(now, reason, err)
}

// report judges a decoded, valid report that arrived at now.
func (g *guard) report(now time.Time, r *proto.Report) verdict {
	if r.Seq <= g.lastSeq {
		return g.strike(now, RejectReplayed, fmt.Errorf("report %d: sequence number not increasing (last %d)", r.Seq, g.lastSeq))
	}
	if err := checkClock(r, now); err != nil {
		return g.strike(now, RejectInvalid, err)
	}
	g.lastSeq = r.Seq
	if !g.reports.AllowN(now, 1) {
		return g.over(now, fmt.Errorf("report %d: more than one report per %v", r.Seq, time.Duration(float64(time.Second)/float64(g.reports.Limit()))))
	}
	return verdict{}
}

// ack judges an Ack that arrived at now.
func (g *guard) ack(now time.Time) verdict {
	if !g.acks.AllowN(now, 1) {
		return g.over(now, fmt.Errorf("more Acks than commands"))
	}
	return verdict{}
}

// over records a message beyond the rate limit: dropped, and a strike
// every excessPerStrike.
func (g *guard) over(now time.Time, err error) verdict {
	g.excess++
	if g.excess%excessPerStrike == 0 {
		v := g.strike(now, RejectRateLimited, err)
		if v.drop {
			return v
		}
	}
	return verdict{reason: RejectRateLimited, err: err}
}

func (g *guard) strike(now time.Time, reason string, err error) verdict {
	return verdict{reason: reason, err: err, drop: !g.strikes.AllowN(now, 1)}
}

// complaints rate-limits what the log says about one VM's guest: the
// first few lines of each period are written as they come, the rest are
// counted by reason and summed up in one line at the end of the period.
// Counters in the metrics carry the detail. Both the VM's agentConn and
// its loop complain, so it locks.
type complaints struct {
	log       hclog.Logger
	period    time.Duration
	perPeriod int

	mu         sync.Mutex
	start      time.Time
	lines      int
	suppressed map[string]int
	timer      *time.Timer
}

// Defaults for complaints: at most five lines and one summary a minute.
const (
	complaintPeriod    = time.Minute
	complaintsInPeriod = 5
)

func newComplaints(log hclog.Logger) *complaints {
	return &complaints{log: log, period: complaintPeriod, perPeriod: complaintsInPeriod, suppressed: map[string]int{}}
}

// warn logs msg with args (and the reason) unless this period's lines are
// spent, in which case it is counted under reason for the summary.
func (c *complaints) warn(now time.Time, reason, msg string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now.Sub(c.start) >= c.period {
		c.flushLocked()
		c.start, c.lines = now, 0
	}
	if c.lines < c.perPeriod {
		c.lines++
		c.log.Warn(msg, append(args, "reason", reason)...)
		return
	}
	c.suppressed[reason]++
	if c.timer == nil {
		// Say at the end of the period what was held back, even if the
		// guest falls silent.
		c.timer = time.AfterFunc(c.start.Add(c.period).Sub(now), func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.timer = nil
			c.flushLocked()
		})
	}
}

// flushLocked writes the summary of what was suppressed, if anything.
func (c *complaints) flushLocked() {
	if len(c.suppressed) == 0 {
		return
	}
	reasons := make([]string, 0, len(c.suppressed))
	total := 0
	for r, n := range c.suppressed {
		reasons = append(reasons, r)
		total += n
	}
	slices.Sort(reasons)
	var b strings.Builder
	for i, r := range reasons {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", r, c.suppressed[r])
	}
	c.log.Warn("guest misbehaviour: further messages not logged", "suppressed", total, "by_reason", b.String(),
		"since", c.start.UTC().Format(time.RFC3339), "hint", "hotplug_report_receive_errors_total has the counts")
	clear(c.suppressed)
}

// stop flushes what is pending and cancels the timer.
func (c *complaints) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	c.flushLocked()
}
