// Package propbridge carries a byte stream — our normal proto frames —
// through VirtualBox guest properties, for VMs with neither virtio-serial
// nor vsock. The guest end (guest/transport, through VBoxControl) and the
// host end (host/channel, through VBoxManage) run the same protocol, here.
//
// Properties, under Prefix (names stay under the service's 64 bytes,
// values under its 1024, NUL included):
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
// A sender has at most Window chunks unacknowledged, so a slot is
// rewritten only after its chunk was consumed; a receiver takes chunks in
// SEQ order and ignores chunks of other sessions and SEQs it has already
// consumed, so nothing is applied twice. Each side learns of the other's
// changes by waiting on the namespace and re-reading it all; a change
// missed between the two is picked up at the wait's timeout.
//
// It is a transport, with goroutines and timers, so it lives beside the
// wire contract (proto), not in it; like proto it imports nothing of ours.
package propbridge

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Protocol constants.
const (
	Prefix = "/HotplugHeaven/"
	Window = 8
	// MaxValue is the longest value the guest property service takes
	// (GUEST_PROP_MAX_VALUE_LEN 1024 with the NUL, VirtualBox 6.1 and
	// later).
	MaxValue = 1023
)

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// IO is one end's access to the property store: VBoxControl in the guest,
// VBoxManage on the host. Names are relative to Prefix.
type IO interface {
	// List returns every property under Prefix, by relative name.
	List(ctx context.Context) (map[string]string, error)
	// Set writes one property ("" deletes it).
	Set(ctx context.Context, name, value string) error
	// Wait returns when something under Prefix may have changed, or after
	// d at the latest.
	Wait(ctx context.Context, d time.Duration)
}

// bridge runs one session: user is the connection handed out (one end
// of a net.Pipe, so deadlines work); the pumps move bytes between the
// other end and the properties.
type bridge struct {
	io         IO
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

// New starts a session's pumps over io and returns the connection its
// user reads and writes: own and peer are "g" and "h" (guest) or "h" and
// "g" (host); maxValue caps the values written; poll bounds each wait.
func New(io IO, sess, own, peer string, maxValue int, poll time.Duration) *Conn {
	// "S.SEQ." with a 20-digit SEQ, then base64 (4 chars per 3 bytes).
	room := maxValue - len(sess) - 22
	b := &bridge{io: io, sess: sess, own: own, peer: peer, chunk: room / 4 * 3, poll: poll}
	b.cond, b.inCond = sync.NewCond(&b.mu), sync.NewCond(&b.mu)
	b.user, b.pump = net.Pipe()
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.done.Add(3)
	go b.receive()
	go b.deliver()
	go b.send()
	return &Conn{Conn: b.user, b: b}
}

// Conn is the user's end; Close also ends the session.
type Conn struct {
	net.Conn
	b *bridge
}

// Close ends the session: the pumps stop and the other end is told.
func (c *Conn) Close() error {
	c.Conn.Close()
	c.b.shutdown(nil, true)
	return nil
}

// Read is the pipe's, except that a session ended by a protocol error
// reports that error instead of EOF.
func (c *Conn) Read(p []byte) (int, error) {
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
func (c *Conn) Session() string { return c.b.sess }

// shutdown stops the pumps and, with notify, tells the peer the session is
// over (not needed when the peer ended it). The user's end sees EOF, or the
// protocol error that ended the session.
func (b *bridge) shutdown(protoErr error, notify bool) {
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
				b.io.Set(ctx, "g/sess", "")
			} else {
				b.io.Set(ctx, "h/sess", "-"+b.sess)
			}
		}
	})
}

// receive reads the peer's properties, hands its chunks to the user in
// order, acknowledges them, and notes the peer's acknowledgements.
func (b *bridge) receive() {
	defer b.done.Done()
	var next uint64 = 1 // next chunk expected
	acked := uint64(0)  // what we last told the peer
	for b.ctx.Err() == nil {
		props, err := b.io.List(b.ctx)
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
			if err := b.io.Set(b.ctx, b.own+"/ack", fmt.Sprintf("%s.%d", b.sess, next-1)); err == nil {
				acked = next - 1
			}
		}
		switch {
		case full: // the user is behind: give it time, not the peer
			sleep(b.ctx, 20*time.Millisecond)
		case !progressed:
			b.io.Wait(b.ctx, b.poll)
		}
	}
}

// enqueue adds data to the inbox unless that would exceed inboxMax.
func (b *bridge) enqueue(data []byte) bool {
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
func (b *bridge) deliver() {
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
func (b *bridge) sameSession(v string) bool { return v == b.sess }

func (b *bridge) parseAck(v string) (uint64, bool) {
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
func (b *bridge) chunkFor(props map[string]string, seq uint64) ([]byte, uint64, error) {
	v := props[fmt.Sprintf("%s/d%d", b.peer, (seq-1)%Window)]
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
	case got+Window == seq: // the previous round in this slot
		return nil, 0, nil
	default:
		return nil, 0, fmt.Errorf("session %s: chunk %d in the slot of chunk %d", b.sess, got, seq)
	}
	if len(payload) > MaxValue {
		return nil, 0, fmt.Errorf("session %s: chunk %d is %d bytes", b.sess, seq, len(payload))
	}
	data, err := base64.StdEncoding.DecodeString(payload)
	if err != nil || len(data) == 0 {
		return nil, 0, fmt.Errorf("session %s: chunk %d does not decode: %v", b.sess, seq, err)
	}
	return data, seq, nil
}

// send cuts what the user writes into chunks and writes them to our slots,
// at most Window ahead of the peer's acknowledgement.
func (b *bridge) send() {
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
		for seq > b.peerAck+Window && b.ctx.Err() == nil {
			b.cond.Wait()
		}
		b.mu.Unlock()
		value := fmt.Sprintf("%s.%d.%s", b.sess, seq, base64.StdEncoding.EncodeToString(buf[:n]))
		for {
			err := b.io.Set(b.ctx, fmt.Sprintf("%s/d%d", b.own, (seq-1)%Window), value)
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
