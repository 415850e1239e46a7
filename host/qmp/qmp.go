// Package qmp is a small client for the QEMU Machine Protocol (QMP) on a unix
// socket: the handshake, commands with a context each, typed errors, and
// QEMU's asynchronous events for those who subscribe.
//
// It follows docs/interop/qmp-spec.rst. One goroutine per Client reads the
// socket and routes each reply to its caller by the "id" the Client puts on
// every command; events go to subscribers without ever blocking that reader,
// so a slow subscriber loses events (counted and logged) instead of stalling
// every caller.
//
// QEMU is trusted less than this process and more than a guest: no reply,
// however malformed, makes this package panic, and a reply with an unknown id
// is logged and dropped.
//
// This package knows QMP, not CPUs: it must not interpret command names or
// results (that is host/hypervisor's job) and must not import anything from
// host/ or guest/.
package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hashicorp/go-hclog"
)

// ErrClosed is wrapped by every error from a Client whose connection is
// gone: closed by Close, by QEMU exiting, or by a broken stream. Dial again.
var ErrClosed = errors.New("qmp: connection closed")

// Error is an error reply from QEMU, e.g. {"class": "GenericError", "desc":
// "Duplicate device ID 'cpu1'"}. Use errors.As to inspect it.
type Error struct {
	// Class is QEMU's error class: GenericError, CommandNotFound,
	// DeviceNotFound, ...
	Class string `json:"class"`
	// Desc is QEMU's human-readable text. It is not a stable interface;
	// callers that must tell errors apart say so in a comment naming the
	// QEMU version they checked.
	Desc string `json:"desc"`
}

func (e *Error) Error() string { return fmt.Sprintf("QEMU %s: %s", e.Class, e.Desc) }

// Greeting is the first message QEMU sends on a QMP connection.
type Greeting struct {
	Version struct {
		QEMU struct {
			Major int `json:"major"`
			Minor int `json:"minor"`
			Micro int `json:"micro"`
		} `json:"qemu"`
		Package string `json:"package"`
	} `json:"version"`
	Capabilities []string `json:"capabilities"`
}

// String is QEMU's version as "10.0.2".
func (g Greeting) String() string {
	v := g.Version.QEMU
	return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro)
}

// Event is an asynchronous QMP event such as DEVICE_DELETED.
type Event struct {
	// Name is the event name, e.g. "DEVICE_DELETED".
	Name string
	// Data is the event's "data" member, nil when absent.
	Data json.RawMessage
	// Time is QEMU's timestamp, zero when absent or invalid.
	Time time.Time
}

// reply is what the reader hands a waiting Execute.
type reply struct {
	ret json.RawMessage
	err *Error
}

// Client is one QMP connection. Its methods are safe for concurrent use.
type Client struct {
	path     string
	conn     net.Conn
	dec      *json.Decoder
	lim      *limitReader
	log      hclog.Logger
	greeting Greeting

	// sendSem serialises writes; a channel rather than a mutex so a caller
	// waiting behind a stalled write still honours its context.
	sendSem chan struct{}

	nextID atomic.Uint64

	mu      sync.Mutex
	pending map[uint64]chan reply
	subs    map[*Subscription]struct{}
	err     error // set once, when the connection ends

	done       chan struct{}
	readerDone chan struct{}
	closeOnce  sync.Once
}

// Dial connects to the QMP socket at path, reads QEMU's greeting and
// negotiates capabilities. ctx bounds the whole handshake. A nil logger
// discards logs.
func Dial(ctx context.Context, path string, logger hclog.Logger) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp: connect to QEMU monitor socket %s: %w", path, err)
	}
	c, err := newClient(ctx, conn, path, logger)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

func newClient(ctx context.Context, conn net.Conn, path string, logger hclog.Logger) (*Client, error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	c := &Client{
		path:       path,
		conn:       conn,
		lim:        &limitReader{r: bufio.NewReader(conn), max: MaxMessageSize},
		log:        logger.With("qmp_socket", path),
		sendSem:    make(chan struct{}, 1),
		pending:    make(map[uint64]chan reply),
		subs:       make(map[*Subscription]struct{}),
		done:       make(chan struct{}),
		readerDone: make(chan struct{}),
	}
	c.dec = json.NewDecoder(c.lim)
	if err := c.handshake(ctx); err != nil {
		return nil, fmt.Errorf("qmp: handshake on %s (is this a QEMU -qmp socket?): %w", path, err)
	}
	go c.read()
	return c, nil
}

// handshake runs before the reader starts, so it reads the socket itself.
// Deadlines carry ctx into the blocking reads and writes.
func (c *Client) handshake(ctx context.Context) error {
	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	ctxErr := func(err error) error {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// Only ctx sets deadlines here, so ctx is ending; the timer
			// behind ctx.Err may lag the socket's by a moment.
			<-ctx.Done()
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return err
	}

	raw, err := c.next()
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// QEMU serves one client per -qmp socket and leaves the next
			// connected but unanswered until the first hangs up.
			return ctxErr(fmt.Errorf("no greeting from QEMU: another client may be holding this QMP socket (QEMU serves one at a time; give each client its own -qmp socket): %w", err))
		}
		return ctxErr(fmt.Errorf("read greeting: %w", err))
	}
	m, err := parseMessage(raw)
	if err != nil {
		return fmt.Errorf("read greeting: %w", err)
	}
	if m.kind != kindGreeting {
		return fmt.Errorf("%w: first message is not a QMP greeting: %.200q", ErrProtocol, raw)
	}
	c.greeting = m.greeting

	id := c.nextID.Add(1)
	b, err := encode(id, "qmp_capabilities", nil)
	if err != nil {
		return err
	}
	if _, err := c.conn.Write(b); err != nil {
		return ctxErr(fmt.Errorf("send qmp_capabilities: %w", err))
	}
	for {
		raw, err := c.next()
		if err != nil {
			return ctxErr(fmt.Errorf("read qmp_capabilities reply: %w", err))
		}
		m, err := parseMessage(raw)
		if err != nil {
			c.log.Warn("skipping malformed message during handshake", "error", err)
			continue
		}
		if m.kind != kindReply || !m.hasID || m.id != id {
			// QEMU sends no events before negotiation, but a message we
			// cannot use is no reason to fail.
			continue
		}
		if m.err != nil {
			return m.err
		}
		break
	}
	if err := c.conn.SetDeadline(time.Time{}); err != nil {
		return err
	}
	if !stop() {
		// ctx ended while we finished; the AfterFunc may have set a past
		// deadline after we cleared it.
		return ctx.Err()
	}
	return nil
}

// MaxMessageSize bounds one message from QEMU. The largest QEMU sends in
// practice, query-qmp-schema, is a few hundred KiB; a CPU list is far
// smaller. Past the bound the connection ends rather than buffer without
// limit.
const MaxMessageSize = 16 << 20

// next reads one JSON value from QEMU.
func (c *Client) next() (json.RawMessage, error) {
	c.lim.allow(c.dec.InputOffset())
	var raw json.RawMessage
	if err := c.dec.Decode(&raw); err != nil {
		return nil, err
	}
	return raw, nil
}

// errTooLarge ends a connection whose message exceeds MaxMessageSize.
var errTooLarge = fmt.Errorf("%w: message larger than %d bytes", ErrProtocol, MaxMessageSize)

// limitReader fails once the decoder has read max bytes past the start of
// the message it is decoding. The decoder reads ahead, so the bound is
// approximate by at most one read buffer.
type limitReader struct {
	r     io.Reader
	max   int64
	read  int64 // total bytes handed to the decoder
	limit int64 // read may not pass this
}

func (l *limitReader) allow(offset int64) { l.limit = offset + l.max }

func (l *limitReader) Read(p []byte) (int, error) {
	if l.read >= l.limit {
		return 0, errTooLarge
	}
	if rest := l.limit - l.read; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := l.r.Read(p)
	l.read += int64(n)
	return n, err
}

// command is what goes on the wire; QEMU echoes ID in the reply.
type command struct {
	Execute   string `json:"execute"`
	Arguments any    `json:"arguments,omitempty"`
	ID        uint64 `json:"id"`
}

// encode renders one command line.
func encode(id uint64, cmd string, args any) ([]byte, error) {
	b, err := json.Marshal(command{Execute: cmd, Arguments: args, ID: id})
	if err != nil {
		return nil, fmt.Errorf("qmp %s: encode arguments: %w", cmd, err)
	}
	return append(b, '\n'), nil
}

// Greeting is what QEMU said when the connection opened.
func (c *Client) Greeting() Greeting { return c.greeting }

// PeerPID returns the process id of the QEMU at the other end of the
// socket (SO_PEERCRED), or 0 when the kernel does not say.
func (c *Client) PeerPID() int {
	uc, ok := c.conn.(*net.UnixConn)
	if !ok {
		return 0
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0
	}
	pid := 0
	raw.Control(func(fd uintptr) {
		if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
			pid = int(cred.Pid)
		}
	})
	return pid
}

// Execute runs a QMP command and decodes its "return" member into result
// (skipped when result is nil). args is marshalled as "arguments"; nil sends
// none. A QEMU error reply is returned as *Error. If ctx ends first the
// command may still run in QEMU; its late reply is discarded.
func (c *Client) Execute(ctx context.Context, cmd string, args any, result any) error {
	if err := c.Err(); err != nil {
		return fmt.Errorf("qmp %s: %w", cmd, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("qmp %s on %s: %w", cmd, c.path, err)
	}
	id := c.nextID.Add(1)
	line, err := encode(id, cmd, args)
	if err != nil {
		return err
	}
	ch := make(chan reply, 1)
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return fmt.Errorf("qmp %s: %w", cmd, c.err)
	}
	c.pending[id] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}()

	if err := c.send(ctx, cmd, line); err != nil {
		return err
	}

	select {
	case r := <-ch:
		if r.err != nil {
			return r.err
		}
		if result == nil {
			return nil
		}
		if err := json.Unmarshal(r.ret, result); err != nil {
			return fmt.Errorf("qmp %s on %s: decode reply %.200q: %w: %v", cmd, c.path, r.ret, ErrProtocol, err)
		}
		return nil
	case <-c.done:
		return fmt.Errorf("qmp %s: %w", cmd, c.Err())
	case <-ctx.Done():
		return fmt.Errorf("qmp %s on %s: %w", cmd, c.path, ctx.Err())
	}
}

// send writes one command line. A write that fails or is interrupted
// part-way leaves the stream in an unknown state, so it ends the connection.
func (c *Client) send(ctx context.Context, cmd string, line []byte) error {
	select {
	case c.sendSem <- struct{}{}:
	case <-c.done:
		return fmt.Errorf("qmp %s: %w", cmd, c.Err())
	case <-ctx.Done():
		return fmt.Errorf("qmp %s on %s: waiting to send: %w", cmd, c.path, ctx.Err())
	}
	defer func() { <-c.sendSem }()

	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetWriteDeadline(dl)
		defer c.conn.SetWriteDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { c.conn.SetWriteDeadline(time.Unix(1, 0)) })
	_, err := c.conn.Write(line)
	stop()
	if err == nil {
		return nil
	}
	c.shutdown(fmt.Errorf("write %s: %w", cmd, err))
	if errors.Is(err, os.ErrDeadlineExceeded) {
		<-ctx.Done() // only ctx sets write deadlines
	}
	if ctx.Err() != nil {
		return fmt.Errorf("qmp %s on %s: %w (connection closed: the command may be half-written)", cmd, c.path, ctx.Err())
	}
	return fmt.Errorf("qmp %s: %w", cmd, c.Err())
}

// read is the Client's only reader. It runs until the connection ends.
func (c *Client) read() {
	defer close(c.readerDone)
	for {
		raw, err := c.next()
		if err != nil {
			var syn *json.SyntaxError
			switch {
			case errors.Is(err, io.EOF):
				err = errors.New("QEMU closed the connection (did QEMU exit?)")
			case errors.Is(err, errTooLarge):
			case errors.As(err, &syn):
				// After a syntax error the decoder cannot find the next
				// object, so the stream is lost.
				err = fmt.Errorf("%w: invalid JSON at offset %d: %v", ErrProtocol, syn.Offset, err)
			}
			c.shutdown(err)
			return
		}
		m, err := parseMessage(raw)
		if err != nil {
			c.log.Warn("ignoring malformed message from QEMU", "error", err)
			continue
		}
		switch m.kind {
		case kindReply:
			c.deliver(m, raw)
		case kindEvent:
			c.publish(m.event)
		case kindGreeting:
			c.log.Warn("ignoring second QMP greeting", "message", string(raw))
		}
	}
}

func (c *Client) deliver(m message, raw json.RawMessage) {
	c.mu.Lock()
	ch, ok := c.pending[m.id]
	if ok {
		delete(c.pending, m.id)
	}
	c.mu.Unlock()
	if !m.hasID || !ok {
		// Normal after a caller's context ended; otherwise QEMU answered
		// something we did not ask (e.g. a parse error, which has no id).
		c.log.Debug("dropping reply with unknown id", "message", truncate(raw, 200))
		return
	}
	ch <- reply{ret: m.ret, err: m.err} // buffered, never blocks
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}

// shutdown ends the connection once, recording why. Pending and later calls
// fail with an error wrapping ErrClosed; subscription channels close.
func (c *Client) shutdown(cause error) {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.err = fmt.Errorf("%w: %s: %v", ErrClosed, c.path, cause)
		subs := c.subs
		c.subs = nil
		for s := range subs {
			s.closeLocked()
		}
		c.mu.Unlock()
		c.conn.Close()
		close(c.done)
		if !errors.Is(cause, errClosedByUser) {
			c.log.Warn("QMP connection lost", "error", cause)
		}
	})
}

var errClosedByUser = errors.New("closed by Close")

// Close ends the connection and waits for the reader goroutine to exit.
// Calls in flight fail with an error wrapping ErrClosed.
func (c *Client) Close() error {
	c.shutdown(errClosedByUser)
	<-c.readerDone
	return nil
}

// Done is closed when the connection has ended, for whatever reason.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is nil while the connection is up, then why it ended (wrapping
// ErrClosed).
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}
