package agent

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/go-hclog"
)

// firing is a Pressure that fires when told to.
type firing chan struct{}

func (f firing) Wait(ctx context.Context, timeout time.Duration) (bool, error) {
	select {
	case <-f:
		return true, nil
	case <-time.After(timeout):
		return false, nil
	case <-ctx.Done():
		return false, nil
	}
}
func (f firing) Close() error { return nil }

// While pressure lasts the sampler is due every quarter interval, and it
// is nudged at once; after two trigger windows without a new event it is
// back at the interval.
func TestPressureSwitchesToTheFastInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := &Agent{log: hclog.NewNullLogger(), interval: time.Second, intervalCh: make(chan struct{}, 1)}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		fire := make(firing)
		go a.pressureLoop(ctx, fire)
		if got := a.nextSample(time.Now()); got != time.Second {
			t.Fatalf("calm: next sample in %v, want the 1 s interval", got)
		}
		fire <- struct{}{}
		synctest.Wait()
		select {
		case <-a.intervalCh:
		default:
			t.Fatal("pressure did not nudge the sampler")
		}
		if got := a.nextSample(time.Now()); got != 250*time.Millisecond {
			t.Fatalf("under pressure: next sample in %v, want 250 ms", got)
		}
		time.Sleep(900 * time.Millisecond) // one more event within the hold keeps it fast
		fire <- struct{}{}
		synctest.Wait()
		time.Sleep(900 * time.Millisecond)
		if got := a.nextSample(time.Now()); got != 250*time.Millisecond {
			t.Fatalf("pressure renewed 0.9 s ago: next sample in %v, want 250 ms", got)
		}
		time.Sleep(200 * time.Millisecond)
		if got := a.nextSample(time.Now()); got != time.Second {
			t.Fatalf("calm for two windows: next sample in %v, want the 1 s interval", got)
		}
	})
}

// On this machine's kernel the trigger either arms and fires when
// runnable tasks outnumber the CPUs, or is refused with an error naming
// the file and the trigger (some kernels, like this test-bed's host, refuse
// every trigger with EINVAL; the agent then samples at its interval). The
// guest kernel's triggers are exercised end to end (integration).
func TestPSITriggerFiresOnThisKernel(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("arming a PSI trigger with a 500 ms window needs root (the agent runs as root)")
	}
	if _, err := openPSITrigger(t.TempDir()); err == nil {
		t.Fatal("a trigger armed outside procfs")
	}
	p, err := openPSITrigger("/proc")
	if err != nil {
		if !strings.Contains(err.Error(), "/proc/pressure/cpu") || !strings.Contains(err.Error(), "some 50000 500000") {
			t.Fatalf("refused without saying what: %v", err)
		}
		t.Logf("this kernel refuses PSI triggers: %v", err)
		return
	}
	defer p.Close()
	var burners []*exec.Cmd
	defer func() {
		for _, c := range burners {
			c.Process.Kill()
			c.Wait()
		}
	}()
	for range 6 {
		c := exec.Command("sh", "-c", "while :; do :; done")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		burners = append(burners, c)
	}
	start := time.Now()
	fired, err := p.Wait(context.Background(), 30*time.Second)
	if err != nil || !fired {
		t.Fatalf("six CPU burners on this machine: trigger fired %v, err %v after %v", fired, err, time.Since(start))
	}
	t.Logf("trigger fired %v after six burners started", time.Since(start).Round(time.Millisecond))
}
