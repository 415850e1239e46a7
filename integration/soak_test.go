package integration_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/host/eventlog"
)

// TestSoak runs one actuator process with 200 VMs — fake QEMUs and fake
// agents over TCP — under random load and random faults (agent restarts,
// QMP connections dropped, slow guests, guests that do not eject) and
// checks that it does not grow (goroutines, file descriptors, memory),
// that every action it starts it also finishes, and that its event log
// agrees with every hypervisor's final state.
//
// HOTPLUG_SOAK sets the duration (default 60s in CI; the release check
// runs 10m). HOTPLUG_SOAK_VMS sets the VM count (default 200).
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak test; skipped with -short")
	}
	dur := 60 * time.Second
	if s := os.Getenv("HOTPLUG_SOAK"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("HOTPLUG_SOAK: %v", err)
		}
		dur = d
	}
	n := 200
	if s := os.Getenv("HOTPLUG_SOAK_VMS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	r := newProcRig(t, n, "")
	r.start()
	api := filepath.Join(r.dir, "api.sock")
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", api)
		}}}
	r.waitFor(60*time.Second, "all agents connected", func() bool {
		for _, v := range r.vms {
			if v.guest.Sessions() == 0 {
				return false
			}
		}
		return true
	})

	rng := rand.New(rand.NewPCG(42, uint64(n)))
	var samples []procSample
	start := time.Now()
	faults := map[string]int{}
	for time.Since(start) < dur {
		for i := 0; i < n/10; i++ {
			v := r.vms[rng.IntN(n)]
			v.guest.SetDemand(rng.Float64() * 3.5)
		}
		v := r.vms[rng.IntN(n)]
		switch rng.IntN(8) {
		case 0:
			v.cancel()
			r.startAgent(v)
			faults["agent restarted"]++
		case 1:
			v.qmp.CloseConnections()
			faults["QMP connection dropped"]++
		case 2:
			v.guest.SetCommandDelay(time.Duration(rng.IntN(2000)) * time.Millisecond)
			faults["slow guest"]++
		case 3:
			v.qmp.SetGuestIgnoresUnplug(rng.IntN(2) == 0)
			faults["guest ignores unplug (toggled)"]++
		}
		if s, err := scrape(client); err == nil {
			s.at = time.Since(start)
			samples = append(samples, s)
		} else {
			t.Fatalf("scraping the actuator's metrics: %v", err)
		}
		time.Sleep(time.Second)
	}
	t.Logf("%d VMs for %v; faults injected: %v", n, dur, faults)

	// Quiesce: no more faults, steady demand, guests eject again.
	for _, v := range r.vms {
		v.guest.SetCommandDelay(0)
		v.qmp.SetGuestIgnoresUnplug(false)
		v.guest.SetDemand(1)
	}
	r.waitFor(60*time.Second, "every action finished and every VM consistent", func() bool {
		for _, v := range r.vms {
			if v.qmp.Plugged() != v.guest.OnlineCount() {
				return false
			}
		}
		all := r.checkLog()
		for _, v := range r.vms {
			if len(eventlog.Unfinished(all, v.name)) > 0 {
				return false
			}
		}
		return true
	})
	// The log's last word on each VM is the hypervisor's final state.
	final := map[string]int{}
	for _, ev := range r.checkLog() {
		if ev.Outcome != eventlog.OutcomeStarted {
			final[ev.VM] = ev.Result
		}
	}
	actions := 0
	for _, v := range r.vms {
		if res, ok := final[v.name]; ok {
			actions++
			if res != v.qmp.Plugged() {
				t.Errorf("%s: event log says %d vCPUs, QEMU has %d", v.name, res, v.qmp.Plugged())
			}
		}
	}
	if actions < n/2 {
		t.Fatalf("only %d of %d VMs were ever scaled: the load did not drive the actuator", actions, n)
	}

	// Growth: compare the last quarter of the run with the second quarter.
	q := len(samples) / 4
	if q < 2 {
		t.Fatalf("only %d samples", len(samples))
	}
	early, late := maxOf(samples[q:2*q]), maxOf(samples[3*q:])
	t.Logf("actuator, second quarter → last quarter: goroutines %.0f → %.0f, open fds %.0f → %.0f, RSS %.1f → %.1f MiB, heap %.1f → %.1f MiB",
		early.goroutines, late.goroutines, early.fds, late.fds, early.rss/(1<<20), late.rss/(1<<20), early.heap/(1<<20), late.heap/(1<<20))
	// Cost per VM (issue 15's figures): CPU per accepted report over the
	// run, scrapes of /metrics every second included, and heap per VM.
	first, last := samples[0], samples[len(samples)-1]
	if dr := last.reports - first.reports; dr > 0 {
		mins := (last.at - first.at).Minutes()
		t.Logf("cost per VM: %.3f ms of actuator CPU per report (%.0f reports, %.1f CPU s in %.1f min: %.3f CPU s per VM per minute), heap %.0f KB per VM",
			1000*(last.cpu-first.cpu)/dr, dr, last.cpu-first.cpu, mins, (last.cpu-first.cpu)/float64(n)/mins, late.heap/float64(n)/1000)
	}
	if late.goroutines > early.goroutines*1.2+50 {
		t.Errorf("goroutines grew: %.0f → %.0f", early.goroutines, late.goroutines)
	}
	if late.fds > early.fds*1.2+20 {
		t.Errorf("file descriptors grew: %.0f → %.0f", early.fds, late.fds)
	}
	if late.heap > early.heap*1.5+16<<20 {
		t.Errorf("heap grew: %.1f → %.1f MiB", early.heap/(1<<20), late.heap/(1<<20))
	}
}

type procSample struct {
	at                         time.Duration
	goroutines, fds, rss, heap float64
	// cpu is the actuator's CPU seconds, reports the reports it accepted
	// (summed over VMs), both since it started.
	cpu, reports float64
}

func maxOf(s []procSample) procSample {
	var m procSample
	for _, x := range s {
		m.goroutines = max(m.goroutines, x.goroutines)
		m.fds = max(m.fds, x.fds)
		m.rss = max(m.rss, x.rss)
		m.heap = max(m.heap, x.heap)
	}
	return m
}

// scrape reads the actuator's own process figures from its /metrics.
func scrape(c *http.Client) (procSample, error) {
	resp, err := c.Get("http://actuator/metrics")
	if err != nil {
		return procSample{}, err
	}
	defer resp.Body.Close()
	var s procSample
	found := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "go_goroutines":
			s.goroutines, found = v, found+1
		case "process_open_fds":
			s.fds, found = v, found+1
		case "process_resident_memory_bytes":
			s.rss, found = v, found+1
		case "go_memstats_heap_inuse_bytes":
			s.heap, found = v, found+1
		case "process_cpu_seconds_total":
			s.cpu = v
		}
		if strings.HasPrefix(f[0], "hotplug_vm_reports_total{") {
			s.reports += v
		}
	}
	if found < 4 {
		return s, fmt.Errorf("only %d of 4 process metrics in /metrics", found)
	}
	return s, sc.Err()
}
