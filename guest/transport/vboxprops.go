package transport

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The VirtualBox guest-property bridge carries the agent's byte stream
// (our normal proto frames) through VirtualBox guest properties, for VMs
// with neither virtio-serial nor vsock. This file is the guest end; the
// host end is host/channel/vboxprops.go, which speaks the same protocol:
//
// Properties, under /HotplugHeaven/ (names stay under the service's 64
// bytes, values under its 1024, NUL included):
//
//	g/sess     guest: the session id S of its current connection (16 hex
//	           digits); deleted when the guest closes it
//	g/d0..d7   guest→host data: "S.SEQ.BASE64", chunk SEQ (1, 2, …) of the
//	           session's stream in slot (SEQ-1) mod 8
//	g/ack      guest: "S.N", it has consumed host chunks 1..N
//	h/sess     host: "S" once it accepted session S, "-S" when it closed or
//	           refused it
//	h/d0..d7   host→guest data, as g/d*
//	h/ack      host: "S.N"
//
// A sender has at most 8 chunks unacknowledged, so a slot is rewritten
// only after its chunk was consumed; a receiver takes chunks in SEQ order
// and ignores chunks of other sessions and SEQs it has already consumed,
// so nothing is applied twice. Each side learns of the other's changes by
// waiting on its namespace (VBoxControl guestproperty wait --timestamp
// here, VBoxManage guestproperty wait on the host) and re-reading it all
// (enumerate); a change missed between the two is picked up at the wait's
// timeout.

// Guest-property bridge constants shared with the host end.
const (
	VBoxPropPrefix = "/HotplugHeaven/"
	vboxWindow     = 8
	// vboxMaxValue is the longest value the guest property service takes
	// (GUEST_PROP_MAX_VALUE_LEN 1024 with the NUL, VirtualBox 6.1 and
	// later).
	vboxMaxValue = 1023
)

// VBoxProps dials the actuator through VirtualBox guest properties with
// the Guest Additions' VBoxControl.
type VBoxProps struct {
	// VBoxControl is the program (default "VBoxControl" from PATH).
	VBoxControl string
	// Env is added to VBoxControl's environment.
	Env []string
	// DialTimeout bounds the wait for the actuator to accept (default
	// 15 s).
	DialTimeout time.Duration
	// PollWait is the longest wait for the host's next change before the
	// properties are read again anyway (default 1 s).
	PollWait time.Duration
	// MaxValue caps the length of the values written (default and
	// maximum 1023; VirtualBox 6.0 and older take 127).
	MaxValue int
}

var _ Dialer = (*VBoxProps)(nil)

func (v *VBoxProps) String() string { return "virtualbox-guestprops:" + VBoxPropPrefix }

func (v *VBoxProps) defaults() {
	if v.VBoxControl == "" {
		v.VBoxControl = "VBoxControl"
	}
	if v.DialTimeout <= 0 {
		v.DialTimeout = 15 * time.Second
	}
	if v.PollWait <= 0 {
		v.PollWait = time.Second
	}
	if v.MaxValue <= 0 || v.MaxValue > vboxMaxValue {
		v.MaxValue = vboxMaxValue
	}
}

// Dial opens a session: it announces a new session id and waits for the
// actuator to accept it.
func (v *VBoxProps) Dial(ctx context.Context) (io.ReadWriteCloser, error) {
	v.defaults()
	if v.MaxValue < 64 {
		return nil, fmt.Errorf("vbox guest properties: MaxValue %d is too small to carry data", v.MaxValue)
	}
	var b [8]byte
	rand.Read(b[:])
	sess := hex.EncodeToString(b[:])
	pio := &guestPropIO{v: v}
	if err := pio.set(ctx, "g/ack", sess+".0"); err != nil {
		return nil, err
	}
	if err := pio.set(ctx, "g/sess", sess); err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, v.DialTimeout)
	defer cancel()
	for {
		props, err := pio.list(dctx)
		if err == nil {
			switch props["h/sess"] {
			case sess:
				return newPropBridge(pio, sess, "g", "h", v.MaxValue, v.PollWait), nil
			case "-" + sess:
				pio.set(context.Background(), "g/sess", "")
				return nil, fmt.Errorf("vbox guest properties: the actuator refused session %s", sess)
			}
		}
		if dctx.Err() != nil {
			pio.set(context.Background(), "g/sess", "")
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("vbox guest properties: no actuator accepted session %s within %v (is hotplug-actuator running with a virtualbox channel for this VM?)", sess, v.DialTimeout)
		}
		if err != nil {
			return nil, err
		}
		pio.wait(dctx, v.PollWait)
	}
}

// guestPropIO reads and writes properties with VBoxControl.
type guestPropIO struct {
	v *VBoxProps

	mu   sync.Mutex
	last int64 // timestamp of the last host change waited for
}

// vboxControl runs VBoxControl --nologo with args and returns its stdout,
// at most 1 MiB of it.
func (g *guestPropIO) vboxControl(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, g.v.VBoxControl, append([]string{"--nologo"}, args...)...)
	if len(g.v.Env) > 0 {
		cmd.Env = append(os.Environ(), g.v.Env...)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &capped{w: &stdout, n: 1 << 20}, &capped{w: &stderr, n: 16 << 10}
	err := cmd.Run()
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		msg := strings.TrimSpace(stderr.String())
		if i := strings.LastIndex(msg, "error: "); i >= 0 {
			msg = msg[i+len("error: "):]
		}
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			msg = "not found; install the VirtualBox Guest Additions"
		}
		return stdout.Bytes(), fmt.Errorf("VBoxControl guestproperty %s: %v: %s", args[1], err, msg)
	}
	return stdout.Bytes(), nil
}

// capped writes at most n bytes to w and drops the rest.
type capped struct {
	w io.Writer
	n int
}

func (c *capped) Write(p []byte) (int, error) {
	if len(p) > c.n {
		c.w.Write(p[:c.n])
		c.n = 0
		return len(p), nil
	}
	c.n -= len(p)
	return c.w.Write(p)
}

func (g *guestPropIO) set(ctx context.Context, name, value string) error {
	args := []string{"guestproperty", "set", VBoxPropPrefix + name}
	if value != "" {
		args = append(args, value, "--flags", "TRANSIENT")
	}
	_, err := g.vboxControl(ctx, args...)
	return err
}

// list reads the host's properties (h/*), keyed without the prefix.
func (g *guestPropIO) list(ctx context.Context) (map[string]string, error) {
	out, err := g.vboxControl(ctx, "guestproperty", "enumerate", "--patterns", VBoxPropPrefix+"h/*")
	if err != nil {
		return nil, err
	}
	props, newest := parseGuestEnumerate(out)
	g.mu.Lock()
	if g.last == 0 {
		g.last = newest // wait for changes after what is there now
	}
	g.mu.Unlock()
	return props, nil
}

// parseGuestEnumerate reads VBoxControl enumerate's "Name: N, value: V,
// timestamp: T, flags: F" lines for names under the prefix, and the newest
// timestamp.
func parseGuestEnumerate(out []byte) (map[string]string, int64) {
	props := map[string]string{}
	var newest int64
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "Name: ")
		if !ok {
			continue
		}
		name, rest, ok := strings.Cut(line, ", value: ")
		if !ok {
			continue
		}
		i := strings.LastIndex(rest, ", timestamp: ")
		if i < 0 {
			continue
		}
		if key, ok := strings.CutPrefix(name, VBoxPropPrefix); ok && len(rest[:i]) <= vboxMaxValue {
			props[key] = rest[:i]
			ts, _, _ := strings.Cut(rest[i+len(", timestamp: "):], ",")
			if n, err := strconv.ParseInt(ts, 10, 64); err == nil {
				newest = max(newest, n)
			}
		}
	}
	return props, newest
}

// wait returns when the host changed one of its properties since the last
// change seen, or after d. Failures (a timeout is one) are not errors: the
// caller reads the properties again either way.
func (g *guestPropIO) wait(ctx context.Context, d time.Duration) {
	g.mu.Lock()
	since := g.last
	g.mu.Unlock()
	if since == 0 {
		since = 1 // the oldest remembered change, not only new ones
	}
	out, err := g.vboxControl(ctx, "guestproperty", "wait", VBoxPropPrefix+"h/*",
		"--timestamp", strconv.FormatInt(since, 10), "--timeout", strconv.FormatInt(d.Milliseconds(), 10))
	if err != nil {
		if ctx.Err() == nil && !strings.Contains(err.Error(), "VERR_TIMEOUT") {
			sleepCtx(ctx, d) // VBoxControl failing fast must not spin
		}
		return
	}
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "Timestamp: "); ok {
			if ts, err := strconv.ParseInt(strings.TrimSuffix(v, " ns"), 10, 64); err == nil && ts > 0 {
				g.mu.Lock()
				g.last = max(g.last, ts)
				g.mu.Unlock()
			}
		}
	}
}

func sleepShort(ctx context.Context) { sleepCtx(ctx, 20*time.Millisecond) }

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// propIO is one end's access to the property store.
type propIO interface {
	list(ctx context.Context) (map[string]string, error)
	set(ctx context.Context, name, value string) error
	wait(ctx context.Context, d time.Duration)
}

// propBridge runs one session: user is the connection handed out (one end
// of a net.Pipe, so deadlines work); the pumps move bytes between the
// other end and the properties.
type propBridge struct {
	io         propIO
	sess       string
	own, peer  string // "g" or "h"
	chunk      int    // payload bytes per chunk
	poll       time.Duration
	user, pump net.Conn
	ctx        context.Context
	cancel     context.CancelFunc
	done       sync.WaitGroup
	closeOnce  sync.Once

	mu       sync.Mutex
	cond     *sync.Cond // peerAck moved, or shutting down
	peerAck  uint64     // chunks of ours the peer consumed
	protoErr error      // what ended the session, if the peer broke the protocol
	inCond   *sync.Cond // inbox got data, or shutting down
	inbox    []byte     // received, not yet read by the user
}

// inboxMax bounds what is received ahead of the user's reads; beyond it no
// more chunks are taken, so the peer's window fills and it waits.
const inboxMax = 512 << 10

func newPropBridge(io propIO, sess, own, peer string, maxValue int, poll time.Duration) *bridgeConn {
	// "S.SEQ." with a 20-digit SEQ, then base64 (4 chars per 3 bytes).
	room := maxValue - len(sess) - 22
	b := &propBridge{io: io, sess: sess, own: own, peer: peer, chunk: room / 4 * 3, poll: poll}
	b.cond, b.inCond = sync.NewCond(&b.mu), sync.NewCond(&b.mu)
	b.user, b.pump = net.Pipe()
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.done.Add(3)
	go b.receive()
	go b.deliver()
	go b.send()
	return &bridgeConn{Conn: b.user, b: b}
}

// bridgeConn is the user's end; Close also ends the session.
type bridgeConn struct {
	net.Conn
	b *propBridge
}

// Close ends the session: the pumps stop and the other end is told.
func (c *bridgeConn) Close() error {
	c.Conn.Close()
	c.b.shutdown(nil, true)
	return nil
}

// Read is the pipe's, except that a session ended by a protocol error
// reports that error instead of EOF.
func (c *bridgeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err == io.EOF {
		c.b.mu.Lock()
		perr := c.b.protoErr
		c.b.mu.Unlock()
		if perr != nil {
			err = perr
		}
	}
	return n, err
}

// Session is the session id, for logs and tests.
func (c *bridgeConn) Session() string { return c.b.sess }

// shutdown stops the pumps and, with notify, tells the peer the session is
// over (not needed when the peer ended it). The user's end sees EOF, or the
// protocol error that ended the session.
func (b *propBridge) shutdown(protoErr error, notify bool) {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		b.protoErr = protoErr
		b.mu.Unlock()
		b.cancel()
		b.pump.Close()
		b.mu.Lock()
		b.cond.Broadcast()
		b.inCond.Broadcast()
		b.mu.Unlock()
		b.done.Wait()
		if notify {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if b.own == "g" {
				b.io.set(ctx, "g/sess", "")
			} else {
				b.io.set(ctx, "h/sess", "-"+b.sess)
			}
		}
	})
}

// receive reads the peer's properties, hands its chunks to the user in
// order, acknowledges them, and notes the peer's acknowledgements.
func (b *propBridge) receive() {
	defer b.done.Done()
	var next uint64 = 1 // next chunk expected
	acked := uint64(0)  // what we last told the peer
	for b.ctx.Err() == nil {
		props, err := b.io.list(b.ctx)
		if err != nil {
			if b.ctx.Err() != nil {
				return
			}
			sleepCtx(b.ctx, b.poll)
			continue
		}
		if !b.sameSession(props[b.peer+"/sess"]) {
			go b.shutdown(nil, false) // the peer ended it
			return
		}
		if n, ok := b.parseAck(props[b.peer+"/ack"]); ok {
			b.mu.Lock()
			if n > b.peerAck {
				b.peerAck = n
				b.cond.Broadcast()
			}
			b.mu.Unlock()
		}
		progressed, full := false, false
		for {
			data, seq, err := b.chunkFor(props, next)
			if err != nil {
				go b.shutdown(err, true)
				return
			}
			if seq == 0 {
				break
			}
			if full = !b.enqueue(data); full {
				break
			}
			next++
			progressed = true
		}
		if next-1 > acked {
			if err := b.io.set(b.ctx, b.own+"/ack", fmt.Sprintf("%s.%d", b.sess, next-1)); err == nil {
				acked = next - 1
			}
		}
		switch {
		case full: // the user is behind: give it time, not the peer
			sleepShort(b.ctx)
		case !progressed:
			b.io.wait(b.ctx, b.poll)
		}
	}
}

// enqueue adds data to the inbox unless that would exceed inboxMax.
func (b *propBridge) enqueue(data []byte) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.inbox)+len(data) > inboxMax {
		return false
	}
	b.inbox = append(b.inbox, data...)
	b.inCond.Broadcast()
	return true
}

// deliver hands the inbox to the user, as fast as it reads.
func (b *propBridge) deliver() {
	defer b.done.Done()
	for {
		b.mu.Lock()
		for len(b.inbox) == 0 && b.ctx.Err() == nil {
			b.inCond.Wait()
		}
		data := b.inbox
		b.inbox = nil
		b.mu.Unlock()
		if b.ctx.Err() != nil {
			return
		}
		if _, err := b.pump.Write(data); err != nil {
			return // the user closed
		}
	}
}

// sameSession: the peer still runs our session?
func (b *propBridge) sameSession(v string) bool { return v == b.sess }

func (b *propBridge) parseAck(v string) (uint64, bool) {
	s, n, ok := strings.Cut(v, ".")
	if !ok || s != b.sess {
		return 0, false
	}
	x, err := strconv.ParseUint(n, 10, 64)
	return x, err == nil
}

// chunkFor finds chunk seq in its slot. It returns seq 0 if the slot holds
// something else (an older chunk, another session's); a chunk of this
// session that cannot be there, or does not decode, is an error.
func (b *propBridge) chunkFor(props map[string]string, seq uint64) ([]byte, uint64, error) {
	v := props[fmt.Sprintf("%s/d%d", b.peer, (seq-1)%vboxWindow)]
	s, rest, ok := strings.Cut(v, ".")
	if !ok || s != b.sess {
		return nil, 0, nil
	}
	n, payload, ok := strings.Cut(rest, ".")
	got, err := strconv.ParseUint(n, 10, 64)
	if !ok || err != nil {
		return nil, 0, fmt.Errorf("session %s: malformed chunk %.40q", b.sess, v)
	}
	switch {
	case got == seq:
	case got+vboxWindow == seq: // the previous round in this slot
		return nil, 0, nil
	default:
		return nil, 0, fmt.Errorf("session %s: chunk %d in the slot of chunk %d", b.sess, got, seq)
	}
	if len(payload) > vboxMaxValue {
		return nil, 0, fmt.Errorf("session %s: chunk %d is %d bytes", b.sess, seq, len(payload))
	}
	data, err := base64.StdEncoding.DecodeString(payload)
	if err != nil || len(data) == 0 {
		return nil, 0, fmt.Errorf("session %s: chunk %d does not decode: %v", b.sess, seq, err)
	}
	return data, seq, nil
}

// send cuts what the user writes into chunks and writes them to our slots,
// at most vboxWindow ahead of the peer's acknowledgement.
func (b *propBridge) send() {
	defer b.done.Done()
	buf := make([]byte, b.chunk)
	var seq uint64
	for {
		n, err := b.pump.Read(buf)
		if err != nil {
			go b.shutdown(nil, true) // the user closed
			return
		}
		seq++
		b.mu.Lock()
		for seq > b.peerAck+vboxWindow && b.ctx.Err() == nil {
			b.cond.Wait()
		}
		b.mu.Unlock()
		value := fmt.Sprintf("%s.%d.%s", b.sess, seq, base64.StdEncoding.EncodeToString(buf[:n]))
		for {
			err := b.io.set(b.ctx, fmt.Sprintf("%s/d%d", b.own, (seq-1)%vboxWindow), value)
			if err == nil {
				break
			}
			if b.ctx.Err() != nil {
				return
			}
			sleepCtx(b.ctx, b.poll)
		}
	}
}
