package channel

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotplugheaven/hotplug/internal/propbridge"
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

const vboxPropPrefix = propbridge.Prefix

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
	if v.MaxValue <= 0 || v.MaxValue > propbridge.MaxValue {
		v.MaxValue = propbridge.MaxValue
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
			if err := Sleep(ctx, backoff(failures, 5*time.Second)); err != nil {
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
			hio.Set(ctx, "h/sess", "-"+sess)
		default:
			if err := hio.Set(ctx, "h/ack", sess+".0"); err != nil {
				return nil, err
			}
			if err := hio.Set(ctx, "h/sess", sess); err != nil {
				return nil, err
			}
			return propbridge.New(hio, sess, "h", "g", v.MaxValue, v.PollWait), nil
		}
		hio.Wait(ctx, v.PollWait)
	}
}

func sleepShort(ctx context.Context) { Sleep(ctx, 20*time.Millisecond) }

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

func (h *hostPropIO) Set(ctx context.Context, name, value string) error {
	args := []string{"guestproperty", "set", h.v.VM, vboxPropPrefix + name}
	if value != "" {
		args = append(args, value, "--flags", "TRANSIENT")
	}
	_, err := h.vboxManage(ctx, args...)
	return err
}

// list reads the guest's properties (g/*), keyed without the prefix.
func (h *hostPropIO) List(ctx context.Context) (map[string]string, error) {
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
		if key, ok := strings.CutPrefix(name, vboxPropPrefix); ok && len(value) <= propbridge.MaxValue {
			props[key] = value
		}
	}
	return props
}

// wait returns when the guest changed one of its properties or after d.
// VBoxManage only sees changes made after it started listening; what
// happens in between is found by the caller's next read, at the latest
// after d.
func (h *hostPropIO) Wait(ctx context.Context, d time.Duration) {
	_, err := h.vboxManage(ctx, "guestproperty", "wait", h.v.VM, vboxPropPrefix+"g/*", "--timeout", strconv.FormatInt(d.Milliseconds(), 10))
	if err != nil && ctx.Err() == nil {
		Sleep(ctx, d) // failing fast must not spin
	}
}
