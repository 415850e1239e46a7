package actuator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotplugheaven/hotplug/host/channel"
	"github.com/hotplugheaven/hotplug/proto"
)

// Limits on what an agent may make the actuator do while connecting.
const (
	// resyncLimit is how many stray bytes are skipped looking for a frame
	// start before a Hello (virtio-serial keeps bytes across connections).
	resyncLimit = 64 << 10
	// strayFrameLimit is how many non-Hello frames are skipped before Hello.
	strayFrameLimit = 64
	writeTimeout    = 10 * time.Second
)

var sessionIDs atomic.Uint64

var (
	errSilent         = errors.New("agent silent")
	errAgentClosed    = errors.New("agent closed the connection")
	errAgentRestarted = errors.New("agent restarted")
	// errMisbehaving: the agent used up its strikes (guard.go).
	errMisbehaving = errors.New("agent misbehaving")
)

// agentConn serves a VM's agent channel on a goroutine of its own: it
// accepts connections one at a time, does the Hello, reads frames and
// delivers what they say to the VM loop as events. It holds no VM state:
// what the VM knows of its agent (the session in use, the last report)
// lives in the loop, which alone decides what an event means.
type agentConn struct {
	vm      string
	log     hclog.Logger
	obs     observers
	ch      channel.Channel
	out     chan<- any // the VM loop's inbox
	hello   time.Duration
	backoff time.Duration
	// interval is the policy interval in force, told to the agent in the
	// Welcome and the base of the idle timeout; the loop stores it.
	interval *atomic.Int64
	// guard judges the agent's traffic; complain logs about it, rate-limited.
	guard    *guard
	complain *complaints
}

// session is one accepted, greeted agent connection.
type session struct {
	id      uint64
	conn    net.Conn
	w       *proto.Writer
	hello   *proto.Hello
	version uint16
	// appsIgnored: the warning that a version 1 agent's applications are
	// ignored was logged (read loop only).
	appsIgnored bool
}

// send writes one message with a deadline, so a guest that stops reading
// cannot block the VM's loop.
func (s *session) send(m proto.Message) error {
	_ = s.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	return s.w.Write(m)
}

// Events from a VM's agentConn to its loop.
type (
	evSession struct{ s *session }
	evReport  struct {
		s  *session
		r  *proto.Report
		at time.Time
	}
	evAck struct {
		s *session
		a *proto.Ack
	}
	evClosed struct {
		s   *session
		err error
	}
)

// serveChannel accepts connections from the VM's channel one at a time,
// greets them and forwards their messages to the VM loop until ctx ends.
func (v *agentConn) serve(ctx context.Context) {
	ch := v.ch
	failures := 0
	for ctx.Err() == nil {
		conn, err := ch.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			v.log.Warn("agent channel accept failed", "channel", ch.String(), "error", err)
			failures++
			if channel.Sleep(ctx, v.retryDelay(failures)) != nil {
				return
			}
			continue
		}
		greeted, err := v.serveConn(ctx, conn, ch)
		conn.Close()
		if ctx.Err() != nil {
			return
		}
		v.complain.warn(time.Now(), "connection_ended", "agent connection ended", "channel", ch.String(), "error", err)
		// A channel we dial (virtio-serial) would otherwise spin on a port
		// whose guest side is closed, and a guest reconnecting in a loop
		// would cost a handshake each time: wait longer after each failed
		// connection, and start again from short once an agent got in.
		switch {
		case errors.Is(err, errMisbehaving):
			// Dropped for what it sent: the longest wait before its next
			// chance, whatever it did before.
			failures = max(failures, 5)
		case greeted:
			failures = 0
		}
		failures++
		if channel.Sleep(ctx, v.retryDelay(failures)) != nil {
			return
		}
	}
}

// serveConn runs one connection: Hello, Welcome, then messages until error.
// greeted reports whether the handshake succeeded.
func (v *agentConn) serveConn(ctx context.Context, conn net.Conn, ch channel.Channel) (greeted bool, err error) {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	r := proto.NewReader(conn, 0)
	s, err := v.handshake(conn, r, ch)
	if err != nil {
		if ctx.Err() == nil {
			v.obs.rejected(v.vm, RejectHandshake)
		}
		return false, err
	}
	v.guard.newSession(time.Now(), false)
	for {
		v.log.Info("agent connected", "channel", ch.String(), "agent", s.hello.AgentVersion,
			"protocol", s.version, "machine_id", s.hello.MachineID, "online", s.hello.Online.String())
		if !v.deliver(ctx, evSession{s: s}) {
			return true, ctx.Err()
		}
		err = v.readLoop(ctx, s, r)
		var again *rehello
		if errors.As(err, &again) {
			// A restarted agent on a stream that outlived it (virtio-serial:
			// the host never sees the guest close the port) says Hello
			// again: end the old session and greet the new one.
			v.deliver(ctx, evClosed{s: s, err: errAgentRestarted})
			if vd := v.guard.newSession(time.Now(), true); vd.reason != "" {
				v.obs.rejected(v.vm, vd.reason)
				v.complain.warn(time.Now(), vd.reason, "agent said Hello again", "error", vd.err)
				if vd.drop {
					return true, v.dropped(vd)
				}
			} else {
				v.log.Info("agent restarted: new Hello on the same stream")
			}
			if s, err = v.greet(conn, again.hello); err != nil {
				v.obs.rejected(v.vm, RejectHandshake)
				return true, err
			}
			continue
		}
		if ctx.Err() == nil {
			switch {
			case errors.Is(err, errSilent):
				v.obs.rejected(v.vm, RejectSilent)
			case errors.Is(err, errMisbehaving):
				v.obs.rejected(v.vm, RejectMisbehaving)
			case !errors.Is(err, errAgentClosed):
				v.obs.rejected(v.vm, RejectFraming)
			}
		}
		v.deliver(ctx, evClosed{s: s, err: err})
		return true, err
	}
}

// rehello is readLoop's way of saying a new Hello arrived.
type rehello struct{ hello *proto.Hello }

func (r *rehello) Error() string { return "agent sent a new Hello" }

// handshake waits for a Hello, skipping what an earlier connection left in
// the stream, and answers it.
func (v *agentConn) handshake(conn net.Conn, r *proto.Reader, ch channel.Channel) (*session, error) {
	// On virtio-serial a guest without a running agent says nothing for as
	// long as it likes, and that costs nothing; on a listener a silent peer
	// holds a connection slot. Either way, from its first byte a peer has
	// helloTimeout to complete a Hello: trickling one is refused.
	if _, dialled := ch.(*channel.VirtioSerial); dialled {
		if err := r.WaitData(); err != nil {
			return nil, fmt.Errorf("waiting for Hello: %w", err)
		}
	}
	_ = conn.SetReadDeadline(time.Now().Add(v.hello))
	skippedBytes, skippedFrames := 0, 0
	for {
		t, payload, err := r.ReadFrame()
		if errors.Is(err, proto.ErrBadMagic) && skippedBytes < resyncLimit {
			n, rerr := r.Resync(resyncLimit - skippedBytes)
			skippedBytes += n + proto.HeaderSize
			if rerr != nil {
				return nil, fmt.Errorf("no Hello: %w", rerr)
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("waiting for Hello: %w", err)
		}
		if t != proto.TypeHello {
			if skippedFrames++; skippedFrames > strayFrameLimit {
				return nil, fmt.Errorf("no Hello in the first %d frames", strayFrameLimit)
			}
			continue
		}
		if skippedBytes > 0 || skippedFrames > 0 {
			v.log.Debug("skipped stale data before Hello", "bytes", skippedBytes, "frames", skippedFrames)
		}
		m, err := proto.Decode(t, payload)
		if err != nil {
			return nil, fmt.Errorf("bad Hello: %w", err)
		}
		return v.greet(conn, m.(*proto.Hello))
	}
}

// greet answers a Hello: the common version, or why there is none.
func (v *agentConn) greet(conn net.Conn, hello *proto.Hello) (*session, error) {
	w := proto.NewWriter(conn)
	version, err := proto.Negotiate(hello)
	if err != nil {
		_ = conn.SetWriteDeadline(time.Now().Add(writeTimeout))
		_ = w.Write(&proto.Welcome{Error: err.Error()})
		return nil, err
	}
	s := &session{id: sessionIDs.Add(1), conn: conn, w: w, hello: hello, version: version}
	if err := s.send(&proto.Welcome{Version: version, VM: v.vm, IntervalNanos: int64(v.policyInterval())}); err != nil {
		return nil, fmt.Errorf("sending Welcome: %w", err)
	}
	return s, nil
}

// readLoop forwards messages until the connection fails, the agent goes
// silent for longer than idleTimeout, or the guard has seen enough
// misbehaviour. What the guard refuses is counted, and logged within the
// VM's complaint budget, here: the loop sees only admitted messages.
func (v *agentConn) readLoop(ctx context.Context, s *session, r *proto.Reader) error {
	for {
		_ = s.conn.SetReadDeadline(time.Now().Add(v.idleTimeout()))
		t, payload, err := r.ReadFrame()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return fmt.Errorf("%w for %v", errSilent, v.idleTimeout())
			}
			if errors.Is(err, io.EOF) {
				return errAgentClosed
			}
			return err // framing lost: bad magic, oversized, truncated
		}
		now := time.Now()
		m, err := proto.Decode(t, payload)
		if err != nil {
			if vd := v.refuse(now, v.guard.bad(now, rejectReason(err), err), t); vd.drop {
				return v.dropped(vd)
			}
			continue
		}
		var ev any
		switch m := m.(type) {
		case *proto.Report:
			v.guard.setInterval(now, v.policyInterval())
			if vd := v.refuse(now, v.guard.report(now, m), t); vd.drop {
				return v.dropped(vd)
			} else if vd.reason != "" {
				continue
			}
			if vd := v.refuse(now, v.checkApps(now, s, m), t); vd.drop {
				return v.dropped(vd)
			} else if vd.reason != "" {
				continue
			}
			ev = evReport{s: s, r: m, at: now}
		case *proto.Ack:
			if vd := v.refuse(now, v.guard.ack(now), t); vd.drop {
				return v.dropped(vd)
			} else if vd.reason != "" {
				continue
			}
			ev = evAck{s: s, a: m}
		case *proto.Hello:
			return &rehello{hello: m}
		default:
			return fmt.Errorf("agent sent %v after Hello", t)
		}
		if !v.deliver(ctx, ev) {
			return ctx.Err()
		}
	}
}

// checkApps holds a report's applications to what the session's Hello
// announced, so a guest cannot make up names (each a label value in the
// operator's Prometheus) report by report. A version 1 agent announces
// none: its application statistics are dropped, said once per session.
func (v *agentConn) checkApps(now time.Time, s *session, r *proto.Report) verdict {
	if len(r.Apps) == 0 {
		return verdict{}
	}
	if s.version < proto.VersionAnnouncedApps {
		if !s.appsIgnored {
			s.appsIgnored = true
			v.log.Warn("agent speaks protocol 1, which does not announce its applications: their statistics are ignored (gray-box mode needs the agent of this release)",
				"agent", s.hello.AgentVersion)
		}
		r.Apps = nil
		return verdict{}
	}
	for _, a := range r.Apps {
		if !slices.Contains(s.hello.Apps, a.Name) {
			return v.guard.bad(now, RejectUnknownApp, fmt.Errorf("report %d: application %q was not announced in Hello (announced: %s)",
				r.Seq, a.Name, strings.Join(s.hello.Apps, ", ")))
		}
	}
	return verdict{}
}

// refuse counts and logs a message the guard did not admit; vd passes
// through.
func (v *agentConn) refuse(now time.Time, vd verdict, t proto.MsgType) verdict {
	if vd.reason == "" {
		return vd
	}
	v.obs.rejected(v.vm, vd.reason)
	v.complain.warn(now, vd.reason, "message from agent refused", "type", t.String(), "error", vd.err)
	return vd
}

// dropped is the error that ends a connection whose agent used up its
// strikes.
func (v *agentConn) dropped(vd verdict) error {
	return fmt.Errorf("%w: dropping the connection after %d strikes, last: %v", errMisbehaving, strikeLimit, vd.err)
}

func (v *agentConn) policyInterval() time.Duration { return time.Duration(v.interval.Load()) }

// idleTimeout is how long an agent may stay silent before its connection is
// dropped: three missed reports and some slack for a slow guest.
func (v *agentConn) idleTimeout() time.Duration { return 3*v.policyInterval() + 10*time.Second }

// deliver hands an event to the VM loop unless ctx ends first.
func (v *agentConn) deliver(ctx context.Context, ev any) bool {
	select {
	case v.out <- ev:
		return true
	case <-ctx.Done():
		return false
	}
}

func (v *agentConn) retryDelay(failures int) time.Duration {
	d := 250 * time.Millisecond << min(failures, 5)
	return min(d, v.backoff)
}
