package agent

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Pressure tells the sampler when the guest is short of CPU, so that it
// reports at a quarter of its interval while that lasts (issue: load onset
// to new vCPUs online within a second and a half). Wait blocks until
// pressure is seen (true) or timeout passes (false).
type Pressure interface {
	Wait(ctx context.Context, timeout time.Duration) (bool, error)
	Close() error
}

// PSI stall threshold of the trigger the agent arms: some task waited for
// a CPU for psiStall out of every psiWindow (10 %), the kernel's own
// detection (Documentation/accounting/psi.rst, "Monitoring for pressure
// thresholds"). The window is the kernel's minimum allowed for root.
const (
	psiStall  = 50 * time.Millisecond
	psiWindow = 500 * time.Millisecond
)

// psiTrigger is a PSI trigger on /proc/pressure/cpu: a write of
// "some STALL_US WINDOW_US" arms it, and poll() reports POLLPRI each time
// the stall in a window passes the threshold (at most once per window).
//
// The file is held as a raw descriptor, not an *os.File: Go would register
// an *os.File with its own epoll, whose polls could consume the trigger's
// one-shot event before ours sees it.
type psiTrigger struct {
	fd int
}

// openPSITrigger arms a trigger on procRoot/pressure/cpu. It refuses a
// file not on procfs (a fixture tree), which cannot be a trigger.
func openPSITrigger(procRoot string) (*psiTrigger, error) {
	path := filepath.Join(procRoot, "pressure", "cpu")
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return nil, fmt.Errorf("PSI: %w", err)
	}
	if st.Type != unix.PROC_SUPER_MAGIC {
		return nil, fmt.Errorf("PSI: %s is not on procfs", path)
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("PSI trigger: open %s: %w", path, err)
	}
	arm := fmt.Sprintf("some %d %d", psiStall.Microseconds(), psiWindow.Microseconds())
	if _, err := unix.Write(fd, []byte(arm+"\x00")); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("PSI trigger %q on %s: write %s: %w", arm, path, path, err)
	}
	return &psiTrigger{fd: fd}, nil
}

// Wait implements Pressure: poll() with the timeout, in slices of at most
// a second so that ctx ends it promptly.
func (p *psiTrigger) Wait(ctx context.Context, timeout time.Duration) (bool, error) {
	deadline := time.Now().Add(timeout)
	for {
		if ctx.Err() != nil {
			return false, nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return false, nil
		}
		fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLPRI}}
		n, err := unix.Poll(fds, int(min(left, time.Second).Milliseconds())+1)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return false, fmt.Errorf("PSI trigger: poll: %w", err)
		case n == 0:
			continue
		case fds[0].Revents&unix.POLLERR != 0:
			return false, errors.New("PSI trigger: poll: the kernel dropped the trigger (POLLERR)")
		case fds[0].Revents&unix.POLLPRI != 0:
			return true, nil
		default:
			return false, fmt.Errorf("PSI trigger: poll returned events %#x, not a pressure event", fds[0].Revents)
		}
	}
}

// Close implements Pressure.
func (p *psiTrigger) Close() error { return unix.Close(p.fd) }

// fastInterval is the sampling interval while under pressure.
func fastInterval(interval time.Duration) time.Duration {
	return max(interval/4, 100*time.Millisecond)
}

// pressureLoop marks the agent as under pressure each time the trigger
// fires, for two of its windows (or two fast intervals, if longer), and
// nudges the sampler at once: the first fast sample is taken at the
// onset, not an interval later.
func (a *Agent) pressureLoop(ctx context.Context, p Pressure) {
	defer p.Close()
	for ctx.Err() == nil {
		fired, err := p.Wait(ctx, time.Minute)
		if err != nil {
			a.log.Warn("CPU pressure trigger failed; reporting at the configured interval only", "error", err)
			return
		}
		if !fired {
			continue
		}
		a.log.Trace("CPU pressure event")
		hold := max(2*psiWindow, 2*fastInterval(a.getInterval()))
		a.intervalMu.Lock()
		was := time.Now().Before(a.fastUntil)
		a.fastUntil = time.Now().Add(hold)
		a.intervalMu.Unlock()
		if !was {
			a.log.Debug("CPU pressure: sampling at the fast interval", "interval", fastInterval(a.getInterval()))
			select {
			case a.intervalCh <- struct{}{}:
			default:
			}
		}
	}
}

// nextSample is how long the sampler waits: a quarter interval while
// under pressure, the interval otherwise.
func (a *Agent) nextSample(now time.Time) time.Duration {
	a.intervalMu.Lock()
	defer a.intervalMu.Unlock()
	if now.Before(a.fastUntil) {
		return fastInterval(a.interval)
	}
	return a.interval
}
