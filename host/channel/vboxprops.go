package channel

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
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

	"github.com/hashicorp/go-hclog"
)

// VBoxProps is the host end of the VirtualBox guest-property bridge: the
// agent's byte stream (our proto frames) carried in guest properties under
// /HotplugHeaven/, for VMs with neither virtio-serial nor vsock. The
// protocol is described in guest/transport/vboxprops.go, the guest end;
// both files implement it and must change together.
//
// Everything read here comes from the guest: property values are bounded
// (the service's 1023 bytes, checked again), chunks must carry the
// session's id and the next sequence number (a replayed or repeated chunk
// is ignored, a chunk that cannot be in its slot ends the session), and a
// guest that stops acknowledging blocks our writes, which then hit the
// connection's write deadline.
type VBoxProps struct {
	// VM is the VirtualBox VM (name or UUID).
	VM string
	// VBoxManage is the program (default "VBoxManage" from PATH).
	VBoxManage string
	// Env is added to VBoxManage's environment.
	Env []string
	// PollWait is the longest wait for the guest's next change before
	// its properties are read again anyway (default 1 s).
	PollWait time.Duration
	// MaxValue caps the length of values written (default and maximum
	// 1023; VirtualBox 6.0 and older take 127).
	MaxValue int
	Logger   hclog.Logger

	mu      sync.Mutex
	closed  bool
	started bool
	handled []string // sessions accepted or refused, newest last
}

var _ Channel = (*VBoxProps)(nil)

// Guest-property bridge constants (see guest/transport/vboxprops.go).
const (
	vboxPropPrefix = "/HotplugHeaven/"
	vboxWindow     = 8
	vboxMaxValue   = 1023
)

func (v *VBoxProps) String() string { return "virtualbox-guestprops:" + v.VM }

// Close makes later Accept calls fail.
func (v *VBoxProps) Close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.closed = true
	return nil
}

func (v *VBoxProps) defaults() {
	if v.VBoxManage == "" {
		v.VBoxManage = "VBoxManage"
	}
	if v.PollWait <= 0 {
		v.PollWait = time.Second
	}
	if v.MaxValue <= 0 || v.MaxValue > vboxMaxValue {
		v.MaxValue = vboxMaxValue
	}
}

func (v *VBoxProps) seen(sess string) bool {
	for _, s := range v.handled {
		if s == sess {
			return true
		}
	}
	return false
}

func (v *VBoxProps) remember(sess string) {
	v.handled = append(v.handled, sess)
	if len(v.handled) > 16 {
		v.handled = v.handled[1:]
	}
}

// Accept waits for the guest to announce a new session and accepts it. A
// session another actuator process accepted before this one started
// cannot be resumed (its stream position is lost): it is refused, and the
// agent reconnects.
func (v *VBoxProps) Accept(ctx context.Context) (net.Conn, error) {
	v.defaults()
	if v.MaxValue < 64 {
		return nil, fmt.Errorf("agent channel %s: MaxValue %d is too small to carry data", v, v.MaxValue)
	}
	hio := &hostPropIO{v: v}
	failures := 0
	for {
		v.mu.Lock()
		closed := v.closed
		v.mu.Unlock()
		if closed {
			return nil, net.ErrClosed
		}
		props, err := hio.listAll(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if failures == 0 && v.Logger != nil {
				v.Logger.Warn("agent channel not readable, retrying", "channel", v.String(), "error", err)
			}
			if err := sleep(ctx, backoff(failures, 5*time.Second)); err != nil {
				return nil, err
			}
			failures++
			continue
		}
		failures = 0
		sess := props["g/sess"]
		v.mu.Lock()
		first := !v.started
		v.started = true
		known := v.seen(sess)
		if validSession(sess) && !known {
			v.remember(sess)
		}
		v.mu.Unlock()
		switch {
		case !validSession(sess) || known:
		case first && props["h/sess"] == sess:
			if v.Logger != nil {
				v.Logger.Info("refusing an agent session accepted by an earlier actuator; the agent reconnects", "channel", v.String(), "session", sess)
			}
			hio.set(ctx, "h/sess", "-"+sess)
		default:
			if err := hio.set(ctx, "h/ack", sess+".0"); err != nil {
				return nil, err
			}
			if err := hio.set(ctx, "h/sess", sess); err != nil {
				return nil, err
			}
			return newPropBridge(hio, sess, "h", "g", v.MaxValue, v.PollWait), nil
		}
		hio.wait(ctx, v.PollWait)
	}
}

func sleepShort(ctx context.Context) { sleep(ctx, 20*time.Millisecond) }

// validSession: 16 lowercase hex digits, what the guest end writes.
func validSession(s string) bool {
	if len(s) != 16 {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// hostPropIO reads and writes the VM's properties with VBoxManage.
type hostPropIO struct {
	v *VBoxProps
}

func (h *hostPropIO) vboxManage(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, h.v.VBoxManage, args...)
	if len(h.v.Env) > 0 {
		cmd.Env = append(os.Environ(), h.v.Env...)
	}
	var stdout, stderr bytes.Buffer
	out := &capped{w: &stdout, n: 1 << 20}
	cmd.Stdout, cmd.Stderr = out, &capped{w: &stderr, n: 16 << 10}
	err := cmd.Run()
	if out.over {
		return nil, fmt.Errorf("VBoxManage guestproperty %s %s: output over 1 MiB", args[1], h.v.VM)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		msg := strings.TrimSpace(stderr.String())
		if first, _, ok := strings.Cut(msg, "\n"); ok {
			msg = first
		}
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			msg = "not found; install VirtualBox or set the path of VBoxManage"
		}
		return stdout.Bytes(), fmt.Errorf("VBoxManage guestproperty %s %s: %v: %s", args[1], h.v.VM, err, msg)
	}
	return stdout.Bytes(), nil
}

// capped writes at most n bytes to w and notes what it dropped.
type capped struct {
	w    *bytes.Buffer
	n    int
	over bool
}

func (c *capped) Write(p []byte) (int, error) {
	if len(p) > c.n {
		c.w.Write(p[:c.n])
		c.n, c.over = 0, true
		return len(p), nil
	}
	c.n -= len(p)
	return c.w.Write(p)
}

func (h *hostPropIO) set(ctx context.Context, name, value string) error {
	args := []string{"guestproperty", "set", h.v.VM, vboxPropPrefix + name}
	if value != "" {
		args = append(args, value, "--flags", "TRANSIENT")
	}
	_, err := h.vboxManage(ctx, args...)
	return err
}

// list reads the guest's properties (g/*), keyed without the prefix.
func (h *hostPropIO) list(ctx context.Context) (map[string]string, error) {
	out, err := h.vboxManage(ctx, "guestproperty", "enumerate", h.v.VM, "--patterns", vboxPropPrefix+"g/*")
	if err != nil {
		return nil, err
	}
	return parseHostEnumerate(out), nil
}

// listAll reads both ends' properties.
func (h *hostPropIO) listAll(ctx context.Context) (map[string]string, error) {
	out, err := h.vboxManage(ctx, "guestproperty", "enumerate", h.v.VM, "--patterns", vboxPropPrefix+"*")
	if err != nil {
		return nil, err
	}
	return parseHostEnumerate(out), nil
}

// parseHostEnumerate reads `VBoxManage guestproperty enumerate`: 7.0's
// table ("NAME = 'VALUE'   @ time flags", names padded) or the older
// "Name: N, value: V, timestamp: T, flags: F" lines. Our values hold no
// quote, so the value ends at the next one.
func parseHostEnumerate(out []byte) map[string]string {
	props := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for sc.Scan() {
		line := sc.Text()
		var name, value string
		if rest, ok := strings.CutPrefix(line, "Name: "); ok {
			n, r, ok := strings.Cut(rest, ", value: ")
			i := strings.LastIndex(r, ", timestamp: ")
			if !ok || i < 0 {
				continue
			}
			name, value = n, r[:i]
		} else {
			n, r, ok := strings.Cut(line, " = '")
			if !ok {
				continue
			}
			v, _, ok := strings.Cut(r, "'")
			if !ok {
				continue
			}
			name, value = strings.TrimSpace(n), v
		}
		if key, ok := strings.CutPrefix(name, vboxPropPrefix); ok && len(value) <= vboxMaxValue {
			props[key] = value
		}
	}
	return props
}

// wait returns when the guest changed one of its properties or after d.
// VBoxManage only sees changes made after it started listening; what
// happens in between is found by the caller's next read, at the latest
// after d.
func (h *hostPropIO) wait(ctx context.Context, d time.Duration) {
	_, err := h.vboxManage(ctx, "guestproperty", "wait", h.v.VM, vboxPropPrefix+"g/*", "--timeout", strconv.FormatInt(d.Milliseconds(), 10))
	if err != nil && ctx.Err() == nil {
		sleep(ctx, d) // failing fast must not spin
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
			sleep(b.ctx, b.poll)
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
			sleep(b.ctx, b.poll)
		}
	}
}
