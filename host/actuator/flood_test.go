package actuator

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotplugheaven/hotplug/host/channel"
	"github.com/hotplugheaven/hotplug/proto"
)

// floodRig is a TCP transport rig whose hostile guest floods; the
// victim's channel backs off 300 ms after a dropped connection.
func floodRig(t *testing.T) (*transportRig, string) {
	tcp, err := channel.ListenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := startTransportRig(t, "tcp", tcp, nil, 300*time.Millisecond)
	r.logs.mu.Lock()
	r.logs.quiet = true // the flood's own lines would fill the test log
	r.logs.mu.Unlock()
	return r, tcp.Addr().String()
}

func validReport(seq uint64) *proto.Report {
	return &proto.Report{Seq: seq, IntervalNanos: int64(interval), WallUnixNanos: time.Now().UnixNano(),
		Online: proto.NewCPUSet(0), Present: proto.NewCPUSet(0), CPUs: []proto.CPUStat{{CPU: 0, Busy: 0.2, Idle: 0.8}}}
}

// flood connects to addr again and again for d, says Hello, then writes
// whatever frames next gives as fast as the socket takes them. It returns
// the frames written and the connections that got a Welcome.
func flood(t *testing.T, addr string, d time.Duration, next func(conn int, i int) []byte) (frames, sessions int) {
	deadline := time.Now().Add(d)
	for conn := 0; time.Now().Before(deadline); conn++ {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		c.SetDeadline(deadline)
		if _, err := c.Write(mustMarshal(t, hello())); err != nil {
			c.Close()
			continue
		}
		if _, err := proto.NewReader(c, 0).Next(); err == nil {
			sessions++
		}
		var batch bytes.Buffer
		for i := 0; time.Now().Before(deadline); {
			batch.Reset()
			for range 256 {
				batch.Write(next(conn, i))
				i++
			}
			if _, err := c.Write(batch.Bytes()); err != nil {
				break
			}
			frames += 256
		}
		c.Close()
	}
	return frames, sessions
}

// TestGuestCannotFloodTheLog: a guest that repeats a sequence number, or
// interleaves invalid reports with valid ones, as fast as the socket
// takes them, gets a handful of log lines a minute and its connection
// dropped; its reconnects are backed off, and the bystander is scaled on
// time.
func TestGuestCannotFloodTheLog(t *testing.T) {
	invalid := frameNoValidate(t, &proto.Report{Seq: 1 << 40, IntervalNanos: int64(interval), Online: proto.NewCPUSet(0),
		Present: proto.NewCPUSet(0), Load1: 1e12})
	for _, tc := range []struct {
		name   string
		next   func(conn, i int) []byte
		reason string
	}{
		{"seq 1 repeated", func(conn, i int) []byte { return mustMarshal(t, validReport(1)) }, RejectReplayed},
		{"nine invalid then one valid", func(conn, i int) []byte {
			if i%10 == 9 {
				return mustMarshal(t, validReport(uint64(i+1)))
			}
			return invalid
		}, RejectInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, addr := floodRig(t)
			r.good.SetDemand(2)
			const d = 3 * time.Second
			frames, sessions := flood(t, addr, d, tc.next)
			lines := r.logs.count("victim")
			r.rec.mu.Lock()
			refused, dropped := r.rec.rejected[tc.reason], r.rec.rejected[RejectMisbehaving]
			r.rec.mu.Unlock()
			t.Logf("%s: %d frames in %v over %d sessions; %d refused as %s, %d connections dropped; %d victim log lines",
				tc.name, frames, d, sessions, refused, tc.reason, dropped, lines)
			if frames < 1000 {
				t.Fatalf("only %d frames: the flood did not happen", frames)
			}
			if dropped == 0 {
				t.Fatal("the flooding session was never dropped")
			}
			// Strikes come back at one per 30 s and outlive connections:
			// after the first drop each new session lasts one strike.
			if sessions > 2+int(d/(300*time.Millisecond)) {
				t.Errorf("%d sessions in %v: reconnects not backed off", sessions, d)
			}
			if lines > complaintsInPeriod {
				t.Errorf("%d log lines about the victim in %v, budget %d a minute", lines, d, complaintsInPeriod)
			}
			waitFor(t, 10*time.Second, "the bystander to be scaled", func() bool { return r.goodQMP.Plugged() >= 2 })
		})
	}
}

// TestReportRateLimited: a guest sending valid, increasing reports as fast
// as it can has at most the fast rate (one per quarter interval, at least
// 100 ms) plus a burst accepted; the rest are dropped and counted, the
// connection ends, and the operator's stream of that VM stays small.
func TestReportRateLimited(t *testing.T) {
	r, addr := floodRig(t)
	r.good.SetDemand(2)
	const d = 3 * time.Second
	seq := uint64(0)
	frames, sessions := flood(t, addr, d, func(conn, i int) []byte {
		seq++
		rep := validReport(seq)
		rep.CPUs[0].Busy, rep.CPUs[0].Idle = 1, 0
		rep.RunDelay = []proto.RunDelay{{CPU: 0, WaitNanos: uint64(4 * interval)}}
		return mustMarshal(t, rep)
	})
	accepted := int(r.act.VM("victim").Status().Agent.Reports)
	r.rec.mu.Lock()
	limited := r.rec.rejected[RejectRateLimited]
	r.rec.mu.Unlock()
	perInterval := float64(accepted) / float64(d/interval)
	t.Logf("%d valid reports sent in %v over %d sessions; %d accepted (%.2f per %v interval), %d dropped over the rate",
		frames, d, sessions, accepted, perInterval, interval, limited)
	// Allowed: a burst, then one per max(interval/4, 100 ms).
	if allowed := reportBurst + int(d/max(interval/4, proto.MinInterval)) + 2; accepted > allowed {
		t.Errorf("%d reports accepted in %v, at most %d allowed", accepted, d, allowed)
	}
	r.rec.mu.Lock()
	dropped := r.rec.rejected[RejectMisbehaving]
	r.rec.mu.Unlock()
	if limited < excessPerStrike || dropped == 0 {
		t.Errorf("%d reports counted as over the rate, %d connections dropped: the flood went on", limited, dropped)
	}
	waitFor(t, 10*time.Second, "the bystander to be scaled", func() bool { return r.goodQMP.Plugged() >= 2 })
}

// TestBurstIsNotSustainedLoad: a burst of overloaded reports within a few
// milliseconds is one sample as far as the k-of-n filter goes: the victim
// is not scaled.
func TestBurstIsNotSustainedLoad(t *testing.T) {
	r, addr := floodRig(t)
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(mustMarshal(t, hello()))
	if _, err := proto.NewReader(c, 0).Next(); err != nil {
		t.Fatal(err)
	}
	var burst bytes.Buffer
	for seq := uint64(1); seq <= reportBurst; seq++ {
		rep := validReport(seq)
		rep.CPUs[0].Busy, rep.CPUs[0].Idle = 1, 0
		rep.RunDelay = []proto.RunDelay{{CPU: 0, WaitNanos: uint64(8 * interval)}}
		burst.Write(mustMarshal(t, rep))
	}
	c.Write(burst.Bytes())
	waitFor(t, 5*time.Second, "the burst to be read", func() bool { return r.act.VM("victim").Status().Agent.Reports >= uint64(reportBurst) })
	time.Sleep(5 * interval)
	if n := r.evilQMP.Plugged(); n > 1 {
		t.Fatalf("a burst of %d reports in a few ms scaled the victim to %d vCPUs", reportBurst, n)
	}
}

// unstamped is a valid report without a wall clock, for guard tests whose
// time is made up.
func unstamped(seq uint64) *proto.Report {
	r := validReport(seq)
	r.WallUnixNanos = 0
	return r
}

func TestGuardStrikesOutliveValidReports(t *testing.T) {
	g := newGuard(time.Second)
	now := time.Unix(1_700_000_000, 0)
	g.newSession(now, false)
	drops := 0
	for i := range 100 {
		if i%10 == 9 {
			if vd := g.report(now, unstamped(uint64(i))); vd.reason != "" {
				t.Fatalf("valid report %d refused: %v", i, vd.err)
			}
			continue
		}
		if vd := g.bad(now, RejectInvalid, errors.New("bad")); vd.drop {
			drops++
			if i != strikeLimit+1 && drops == 1 {
				t.Fatalf("first drop at message %d, want %d (10 strikes, one valid report between)", i, strikeLimit+1)
			}
		}
	}
	if drops == 0 {
		t.Fatal("never dropped")
	}
	// A strike comes back after strikeRefill: one more bad message then.
	later := now.Add(strikeRefill)
	if vd := g.bad(later, RejectInvalid, errors.New("bad")); vd.drop {
		t.Fatal("no strike came back after the refill time")
	}
	if vd := g.bad(later, RejectInvalid, errors.New("bad")); !vd.drop {
		t.Fatal("two strikes came back after one refill time")
	}
}

func TestGuardRates(t *testing.T) {
	g := newGuard(time.Second) // fast interval 250 ms
	now := time.Unix(1_700_000_000, 0)
	g.newSession(now, false)
	seq := uint64(0)
	admitted := 0
	for step := range 40 { // 10 s at 4 reports per 250 ms
		for range 4 {
			seq++
			if vd := g.report(now.Add(time.Duration(step)*250*time.Millisecond), unstamped(seq)); vd.reason == "" {
				admitted++
			} else if vd.reason != RejectRateLimited {
				t.Fatalf("report %d: %s", seq, vd.reason)
			}
		}
	}
	if want := reportBurst + 39; admitted < want-1 || admitted > want+1 {
		t.Fatalf("%d reports admitted over 10 s at 16/s, want about %d (burst + one per 250 ms)", admitted, want)
	}
	// A new Hello within a minute of the last is a strike; a minute later it is a restart.
	if vd := g.newSession(now.Add(10*time.Second), true); vd.reason != RejectRehello {
		t.Fatalf("quick re-Hello: %+v", vd)
	}
	if vd := g.newSession(now.Add(2*time.Minute), true); vd.reason != "" {
		t.Fatalf("re-Hello after two minutes: %+v", vd)
	}
	if vd := g.report(now.Add(2*time.Minute), unstamped(1)); vd.reason != "" {
		t.Fatalf("a new session starts its sequence again: %+v", vd)
	}
}

func TestComplaintsSummarise(t *testing.T) {
	var out lockedBuffer
	c := newComplaints(hclog.New(&hclog.LoggerOptions{Output: &out, Level: hclog.Warn}))
	c.period = 200 * time.Millisecond
	now := time.Now()
	for i := range 1000 {
		reason := RejectReplayed
		if i%2 == 1 {
			reason = RejectInvalid
		}
		c.warn(now, reason, "message from agent refused")
	}
	time.Sleep(400 * time.Millisecond) // the period's end writes the summary
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != complaintsInPeriod+1 {
		t.Fatalf("%d lines for 1000 complaints, want %d and a summary:\n%s", len(lines), complaintsInPeriod, out.String())
	}
	sum := lines[len(lines)-1]
	for _, want := range []string{"suppressed=995", "by_reason=\"invalid=498 replayed=497\""} {
		if !strings.Contains(sum, want) {
			t.Errorf("summary %q lacks %q", sum, want)
		}
	}
	c.stop()
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
