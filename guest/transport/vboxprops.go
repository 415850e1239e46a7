package transport

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hotplugheaven/hotplug/internal/propbridge"
)

// The VirtualBox guest-property bridge (proto/propbridge) carries the
// agent's proto frames through guest properties; this is its guest end,
// on VBoxControl.

// VBoxPropPrefix is where the bridge's properties live.
const VBoxPropPrefix = propbridge.Prefix

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
	if v.MaxValue <= 0 || v.MaxValue > propbridge.MaxValue {
		v.MaxValue = propbridge.MaxValue
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
	if err := pio.Set(ctx, "g/ack", sess+".0"); err != nil {
		return nil, err
	}
	if err := pio.Set(ctx, "g/sess", sess); err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, v.DialTimeout)
	defer cancel()
	for {
		props, err := pio.List(dctx)
		if err == nil {
			switch props["h/sess"] {
			case sess:
				return propbridge.New(pio, sess, "g", "h", v.MaxValue, v.PollWait), nil
			case "-" + sess:
				pio.Set(context.Background(), "g/sess", "")
				return nil, fmt.Errorf("vbox guest properties: the actuator refused session %s", sess)
			}
		}
		if dctx.Err() != nil {
			pio.Set(context.Background(), "g/sess", "")
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("vbox guest properties: no actuator accepted session %s within %v (is hotplug-actuator running with a virtualbox channel for this VM?)", sess, v.DialTimeout)
		}
		if err != nil {
			return nil, err
		}
		pio.Wait(dctx, v.PollWait)
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

func (g *guestPropIO) Set(ctx context.Context, name, value string) error {
	args := []string{"guestproperty", "set", VBoxPropPrefix + name}
	if value != "" {
		args = append(args, value, "--flags", "TRANSIENT")
	}
	_, err := g.vboxControl(ctx, args...)
	return err
}

// list reads the host's properties (h/*), keyed without the prefix.
func (g *guestPropIO) List(ctx context.Context) (map[string]string, error) {
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
		if key, ok := strings.CutPrefix(name, VBoxPropPrefix); ok && len(rest[:i]) <= propbridge.MaxValue {
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
func (g *guestPropIO) Wait(ctx context.Context, d time.Duration) {
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
