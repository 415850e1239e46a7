package testvm

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// maxReply bounds one command's output held in memory.
const maxReply = 16 << 20

// ErrBadReply: the control shell sent something that is not a reply.
var ErrBadReply = errors.New("malformed control shell reply")

// consoleFailures are console lines after which the guest will never
// answer, so WaitReady stops waiting at once.
var consoleFailures = []string{"testvm: FATAL", "Kernel panic"}

// controlConn is the host end of the control port. One connection lives as
// long as the VM: if the host hung up mid-command, the guest's next write
// would block until a host returned, so the connection is kept even when a
// caller's context ends and stale output is skipped by reply id instead.
type controlConn struct {
	mu      sync.Mutex // serialises commands; guards the fields below
	conn    net.Conn
	pending []byte
	closed  bool
}

func (c *controlConn) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// WaitReady returns once the guest's control shell answers. It fails early,
// with the console tail, when QEMU exits or the console shows a panic or an
// init failure.
func (v *VM) WaitReady(ctx context.Context) error {
	start := time.Now()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go v.watchConsole(ctx, cancel)
	_, _, err := v.Run(ctx, "true")
	if err == nil {
		return nil
	}
	// Name the root cause when there is one: a console failure or QEMU's
	// exit says more than the socket error they caused.
	var why []string
	if line := v.consoleFailure(); line != "" {
		why = append(why, fmt.Sprintf("console shows %q", line))
	}
	select {
	case <-v.exited:
		why = append(why, "QEMU exited ("+v.exitStatus()+")")
	default:
	}
	if len(why) == 0 {
		why = append(why, err.Error())
	}
	reason := strings.Join(why, "; ")
	return fmt.Errorf("testvm %s: guest not ready after %s: %s\n%s",
		v.cfg.Name, time.Since(start).Round(time.Millisecond), reason, v.diagnostics())
}

// watchConsole cancels ctx when the console log shows a failure. It returns
// when ctx ends; WaitReady owns it.
func (v *VM) watchConsole(ctx context.Context, cancel context.CancelCauseFunc) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if line := v.consoleFailure(); line != "" {
			cancel(fmt.Errorf("console shows %q", line))
			return
		}
	}
}

// consoleFailure returns the first console line showing the guest will
// never answer, or "".
func (v *VM) consoleFailure() string {
	b, _ := os.ReadFile(v.ConsoleLog())
	for _, f := range consoleFailures {
		if i := bytes.Index(b, []byte(f)); i >= 0 {
			line, _, _ := strings.Cut(string(b[i:]), "\n")
			return strings.TrimSpace(line)
		}
	}
	return ""
}

// Run executes cmd with /bin/sh in the guest and returns its combined
// stdout and stderr and its exit status. err is non-nil only when the
// command could not be run or its result not read (ctx ended, QEMU
// exited); a failing command is a non-zero status. Calls are serialised.
//
// If ctx ends while cmd runs, cmd keeps running in the guest and later
// calls wait behind it.
func (v *VM) Run(ctx context.Context, cmd string) (output string, status int, err error) {
	c := &v.ctl
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return "", -1, fmt.Errorf("testvm %s: run %q: VM stopped", v.cfg.Name, short(cmd))
	}
	fail := func(err error) (string, int, error) {
		// A broken socket usually means QEMU is exiting; give it a moment
		// to be reaped so the error can say so.
		wait := time.Second
		if isTimeout(err) {
			wait = 0
		}
		grace := time.NewTimer(wait)
		defer grace.Stop()
		select {
		case <-v.exited:
			return "", -1, v.exitError(fmt.Sprintf("exited while running %q", short(cmd)))
		case <-grace.C:
		}
		if ctx.Err() != nil {
			err = context.Cause(ctx)
		}
		return "", -1, fmt.Errorf("testvm %s: run %q: %w", v.cfg.Name, short(cmd), err)
	}
	if err := v.dialControl(ctx); err != nil {
		return fail(err)
	}
	conn := c.conn
	conn.SetDeadline(time.Time{})
	// Unblock conn when ctx ends or QEMU exits. Run waits for this
	// goroutine, so a late deadline cannot hit the next command.
	done, watched := make(chan struct{}), make(chan struct{})
	defer func() { close(done); <-watched }()
	go func() {
		defer close(watched)
		select {
		case <-ctx.Done():
		case <-v.exited:
		case <-done:
			return
		}
		conn.SetDeadline(time.Now())
	}()

	id := newID()
	line := id + " " + base64.StdEncoding.EncodeToString([]byte(cmd)) + "\n"
	if _, err := conn.Write([]byte(line)); err != nil {
		v.dropControl()
		return fail(err)
	}
	buf := make([]byte, 64<<10)
	for {
		out, st, used, ok, err := parseReply(c.pending, id)
		if err != nil {
			v.dropControl()
			return fail(err)
		}
		if ok {
			c.pending = append(c.pending[:0], c.pending[used:]...)
			return string(out), st, nil
		}
		if len(c.pending) > maxReply {
			v.dropControl()
			return fail(fmt.Errorf("reply longer than %d bytes", maxReply))
		}
		n, err := conn.Read(buf)
		c.pending = append(c.pending, buf[:n]...)
		if err != nil {
			if !isTimeout(err) {
				v.dropControl()
			}
			return fail(err)
		}
	}
}

// dialControl connects to the control socket once. QEMU creates it at
// start-up, so a refusal means QEMU is gone or going.
func (v *VM) dialControl(ctx context.Context) error {
	c := &v.ctl
	if c.conn != nil {
		return nil
	}
	var d net.Dialer
	for {
		conn, err := d.DialContext(ctx, "unix", v.controlSocket())
		if err == nil {
			c.conn = conn
			c.pending = nil
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("connect control socket %s: %w", v.controlSocket(), err)
		case <-v.exited:
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// dropControl forgets a connection that broke; the next Run redials.
func (v *VM) dropControl() {
	if v.ctl.conn != nil {
		v.ctl.conn.Close()
		v.ctl.conn = nil
	}
	v.ctl.pending = nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// parseReply finds the reply to command id in buf (see init.sh):
//
//	TESTVM-BEGIN <id>\n<output>\nTESTVM-END <id> <status>\n
//
// Anything before the BEGIN line is output of an earlier, abandoned command
// and is skipped. ok is false while the reply is incomplete; used is how
// many bytes of buf the reply took.
func parseReply(buf []byte, id string) (out []byte, status, used int, ok bool, err error) {
	begin := []byte("TESTVM-BEGIN " + id + "\n")
	b := bytes.Index(buf, begin)
	if b < 0 {
		return nil, 0, 0, false, nil
	}
	start := b + len(begin)
	endMark := []byte("\nTESTVM-END " + id + " ")
	e := bytes.Index(buf[start:], endMark)
	if e < 0 {
		return nil, 0, 0, false, nil
	}
	e += start
	rest := buf[e+len(endMark):]
	nl := bytes.IndexByte(rest, '\n')
	if nl < 0 {
		if len(rest) > 12 {
			return nil, 0, 0, false, fmt.Errorf("%w: status %q", ErrBadReply, truncate(string(rest), 20))
		}
		return nil, 0, 0, false, nil
	}
	status, err = strconv.Atoi(string(rest[:nl]))
	if err != nil || status < 0 || status > 255 {
		return nil, 0, 0, false, fmt.Errorf("%w: status %q", ErrBadReply, truncate(string(rest[:nl]), 20))
	}
	return buf[start:e], status, e + len(endMark) + nl + 1, true, nil
}

func newID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// short shortens a command for error messages.
func short(cmd string) string {
	cmd = strings.Join(strings.Fields(cmd), " ")
	return truncate(cmd, 60)
}

// Job is a command running in the background in the guest.
type Job struct {
	// PID is the job's process id in the guest; it leads its own session
	// and process group, so Kill reaches its children too.
	PID int
	// Log is the guest path of the job's combined output.
	Log string
}

// Spawn starts cmd in the background in the guest (setsid sh, stdin from
// /dev/null, output to Job.Log) and returns at once. Use it for CPU burners
// and other load: `while :; do :; done`.
func (v *VM) Spawn(ctx context.Context, cmd string) (Job, error) {
	id := newID()
	dir := "/tmp/testvm/jobs"
	script := fmt.Sprintf(`mkdir -p %[1]s
cat >%[1]s/%[2]s.sh <<'TESTVM_EOF_%[2]s'
%[3]s
TESTVM_EOF_%[2]s
setsid sh %[1]s/%[2]s.sh </dev/null >%[1]s/%[2]s.log 2>&1 &
echo $!
`, dir, id, cmd)
	out, st, err := v.Run(ctx, script)
	if err != nil {
		return Job{}, err
	}
	pid, perr := strconv.Atoi(strings.TrimSpace(out))
	if st != 0 || perr != nil || pid <= 1 {
		return Job{}, fmt.Errorf("testvm %s: spawn %q: status %d, output %q", v.cfg.Name, short(cmd), st, truncate(out, 200))
	}
	return Job{PID: pid, Log: dir + "/" + id + ".log"}, nil
}

// Kill sends SIGKILL to the job's process group. A job that already ended
// is not an error.
func (v *VM) Kill(ctx context.Context, j Job) error {
	if j.PID <= 1 {
		return fmt.Errorf("testvm %s: kill: bad pid %d", v.cfg.Name, j.PID)
	}
	_, _, err := v.Run(ctx, fmt.Sprintf("kill -KILL -- -%[1]d 2>/dev/null || kill -KILL %[1]d 2>/dev/null; true", j.PID))
	return err
}
