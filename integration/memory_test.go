package integration_test

import (
	"bufio"
	"context"
	"encoding/json"

	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/host/api"
	"github.com/hotplugheaven/hotplug/host/eventlog"
	"github.com/hotplugheaven/hotplug/integration/stack"
	"github.com/hotplugheaven/hotplug/integration/testvm"
)

// memoryPolicy sizes memory quickly enough for a test under TCG, with the
// real rules: grow at once on pressure or a 25 % headroom, shrink after
// 10 s of calm by a quarter, resizes give up after 10 s.
const memoryPolicy = `mode = "pressure"
min = "512MiB"
max = "2560MiB"
headroom = 0.25
shrink_step = 0.25
quiet = "10s"
swap_hold = "1m"
resize_timeout = "10s"
`

// oneVCPU keeps the CPU where it is, so that the memory test measures
// memory actions only.
const oneVCPU = `min_vcpus = 1
max_vcpus = 1
interval = "1s"
`

// buildStatic builds a package of the repository into dir.
func buildStatic(ctx context.Context, t testing.TB, dir, name, pkg string) string {
	t.Helper()
	root, err := stack.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	out := filepath.Join(dir, name)
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", pkg, err, b)
	}
	return out
}

// memSample is one second of the test: QEMU's view and the workload's.
type memSample struct {
	at               time.Duration
	total, requested uint64
}

// TestMemoryElasticity: a real guest (Debian cloud kernel, virtio-mem) with
// the agent runs a phased memory workload, 0.3 → 1.2 → 0.5 GiB resident,
// touched continuously; the actuator grows the VM's memory as the working
// set grows and shrinks it after the drop. Nothing is OOM-killed, and at
// the end the guest's MemTotal, QEMU's device and the event log agree.
// Then an actuator killed with SIGKILL in the middle of a shrink that
// cannot complete (memory held in tmpfs): the next one finds the request
// outstanding, sets it to what the guest has and says so in the log, and a
// shrink the guest can only partly make ends at what it reached.
func TestMemoryElasticity(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	dir := t.TempDir()
	memload := buildStatic(ctx, t, dir, "memload", "./integration/testdata/memload")
	s, err := stack.Start(ctx, stack.Options{Dir: dir, MaxCPUs: 1, Policy: oneVCPU, Memory: memoryPolicy,
		Files: map[string]testvm.File{"/usr/bin/memload": {HostPath: memload, Mode: 0o755}}, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	defer func() {
		if t.Failed() {
			t.Logf("guest console tail:\n%s", s.VM.ConsoleTail(60))
			if b, err := os.ReadFile(filepath.Join(dir, "actuator.log")); err == nil {
				lines := strings.Split(string(b), "\n")
				t.Logf("actuator log tail:\n%s", strings.Join(lines[max(0, len(lines)-60):], "\n"))
			}
		}
	}()
	client := api.NewUnixClient(filepath.Join(dir, "api.sock"))
	waitFor(ctx, t, 90*time.Second, "the agent to connect", func() bool {
		v, err := client.VM(ctx, "guest")
		return err == nil && v.Connected && v.Memory != nil && v.Memory.Device == "virtio-mem"
	})
	bootGuestTotal := guestMemTotal(ctx, t, s.VM)

	// The phases: 300 MiB for 15 s, a 30 s ramp to 1.2 GiB held 25 s, a
	// drop to 500 MiB held 45 s.
	job, err := s.VM.Spawn(ctx, "exec memload -phases 300M/0/15,1200M/30/25,500M/0/45")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var samples []memSample
	for {
		total, req, err := s.QEMUMemory(ctx)
		if err != nil {
			t.Fatal(err)
		}
		samples = append(samples, memSample{time.Since(start), total, req})
		out, _, _ := s.VM.Run(ctx, "tail -1 "+job.Log)
		if strings.Contains(out, "DONE") || strings.HasPrefix(strings.TrimSpace(out), "FAIL") {
			break
		}
		if time.Since(start) > 4*time.Minute {
			t.Fatalf("memload did not finish: %s", out)
		}
		time.Sleep(time.Second)
	}
	log, _, _ := s.VM.Run(ctx, "cat "+job.Log)
	rates := touchRates(log)
	if !strings.Contains(log, "DONE") {
		t.Fatalf("memload did not complete:\n%s", log)
	}
	if oom := strings.TrimSpace(mustGuest(ctx, t, s.VM, "awk '$1==\"oom_kill\"{print $2}' /proc/vmstat")); oom != "0" {
		t.Fatalf("%s OOM kills in the guest", oom)
	}
	peak, end := uint64(0), samples[len(samples)-1].total
	for _, sm := range samples {
		peak = max(peak, sm.total)
	}
	t.Logf("VM memory: peak %d MiB, at the end %d MiB (boot 512, device up to 2048 more)", peak>>20, end>>20)
	if peak < 1536<<20 {
		t.Errorf("peak %d MiB: a 1.2 GiB working set needs more than 1.5 GiB of VM memory", peak>>20)
	}
	if end >= peak {
		t.Errorf("no shrink after the drop to 500 MiB: %d MiB at the end, peak %d", end>>20, peak>>20)
	}

	// Reaction: from the first second the workload's target exceeded the
	// VM's memory less its headroom to the grow event after it.
	evs, err := s.Events()
	if err != nil {
		t.Fatal(err)
	}
	var grows, shrinks []eventlog.Event
	for _, ev := range evs {
		if ev.Outcome == eventlog.OutcomeStarted {
			continue
		}
		switch ev.Kind {
		case eventlog.KindMemoryGrow:
			grows = append(grows, ev)
		case eventlog.KindMemoryShrink:
			shrinks = append(shrinks, ev)
		}
	}
	if len(grows) == 0 || len(shrinks) == 0 {
		t.Fatalf("%d grow and %d shrink events", len(grows), len(shrinks))
	}
	var resizeMS []string
	for _, ev := range append(grows, shrinks...) {
		if ev.Outcome != eventlog.OutcomeOK {
			t.Errorf("event %d %s %d→%d: %s (%v)", ev.Seq, ev.Kind, ev.From, ev.To, ev.Outcome, ev.Steps)
		}
		for _, st := range ev.Steps {
			if st.Name == eventlog.StepResize {
				resizeMS = append(resizeMS, fmt.Sprintf("%.0f", st.DurationMS))
			}
		}
	}
	t.Logf("%d grows (rules %s), %d shrinks; resize step ms: %s", len(grows), rulesOf(grows), len(shrinks), strings.Join(resizeMS, " "))
	// Reaction: from the start of the report interval that showed the
	// pressure (its arrival less the 1 s interval) to the grow confirmed
	// by the guest's MemTotal (the event's end).
	var reactions []string
	for _, ev := range grows {
		var sig struct {
			ReportAt time.Time `json:"report_at"`
		}
		if json.Unmarshal(ev.Signals, &sig) == nil && !sig.ReportAt.IsZero() {
			end := ev.Time.Add(time.Duration(ev.DurationMS * float64(time.Millisecond)))
			reactions = append(reactions, fmt.Sprintf("%.2f", end.Sub(sig.ReportAt.Add(-time.Second)).Seconds()))
		}
	}
	t.Logf("reaction, pressure interval start → memory online in the guest (s): %s", strings.Join(reactions, " "))
	t.Logf("touch rate (pages/s, median per phase): 300M %.0f, ramp %.0f, 1.2G %.0f, 500M %.0f",
		median(rates, 1, 15), median(rates, 16, 45), median(rates, 46, 70), median(rates, 71, 115))

	// Agreement: QEMU, the guest and the event log, once no action is in
	// flight (pause: an action in flight finishes, no new one starts).
	if _, err := client.Pause(ctx, "guest"); err != nil {
		t.Fatal(err)
	}
	var total, req, guest uint64
	var last eventlog.Event
	agree := func() bool {
		total, req, _ = s.QEMUMemory(ctx)
		guest = guestMemTotal(ctx, t, s.VM)
		last = lastMemoryEvent(t, s)
		return total == req && guest-bootGuestTotal == total-512<<20 && uint64(last.Result)<<20 == total
	}
	if !agree() {
		time.Sleep(10 * time.Second) // a confirm in flight
		if !agree() {
			t.Fatalf("QEMU %d MiB (request %d), guest MemTotal %+d MiB over boot, last event %s result %d MiB",
				total>>20, req>>20, int64(guest-bootGuestTotal)>>20, last.Kind, last.Result)
		}
	}
	t.Logf("agreement: QEMU %d MiB, guest MemTotal +%d MiB over boot, event log %d MiB", total>>20, (guest-bootGuestTotal)>>20, last.Result)

	// Kill -9 during a resize the guest cannot make: its vCPUs are
	// stopped (QMP stop), so the device does not move.
	if err := s.QMP(ctx, "stop", nil); err != nil {
		t.Fatal(err)
	}
	want := total + 512<<20
	go client.SetMemory(context.Background(), "guest", api.MemoryRequest{Bytes: want}) // answered by no one: the actuator dies
	waitFor(ctx, t, 20*time.Second, "the grow to be asked of QEMU", func() bool {
		_, r, err := s.QEMUMemory(ctx)
		return err == nil && r == want
	})
	time.Sleep(time.Second)
	s.KillActuator()
	killedAt, killedReq, _ := s.QEMUMemory(ctx)
	if killedReq == killedAt {
		t.Fatalf("the grow %d → %d MiB finished with the guest stopped", total>>20, want>>20)
	}
	t.Logf("killed during the grow %d → %d MiB, at %d MiB", total>>20, want>>20, killedAt>>20)
	if err := s.RestartActuator(); err != nil {
		t.Fatal(err)
	}
	var recovered eventlog.Event
	waitFor(ctx, t, 60*time.Second, "a memory_recover event", func() bool {
		evs, _ := s.Events()
		for _, ev := range evs {
			if ev.Kind == eventlog.KindMemoryRecover {
				recovered = ev
				return true
			}
		}
		return false
	})
	t.Logf("recover: %s", recovered.Reason)
	now, nowReq, _ := s.QEMUMemory(ctx)
	if now != nowReq || now != killedAt || !strings.Contains(recovered.Reason, "actuator stopped during memory_grow") || recovered.Action == 0 {
		t.Fatalf("after the restart QEMU is at %d MiB with request %d MiB; recover event %+v", now>>20, nowReq>>20, recovered)
	}

	// The restarted actuator, the guest still stopped: a resize it cannot
	// make ends at what it reached (nothing), with the request set back
	// and an event saying so.
	_, err = client.SetMemory(ctx, "guest", api.MemoryRequest{Bytes: want})
	after, afterReq, _ := s.QEMUMemory(ctx)
	last = lastMemoryEvent(t, s)
	if err == nil || !strings.Contains(err.Error(), "reached") || after != afterReq || after != now ||
		last.Outcome != eventlog.OutcomeFailed || uint64(last.Result)<<20 != after || !strings.Contains(last.Steps[0].Error, "the request is now") {
		t.Fatalf("set-memory on a stopped guest: %v; QEMU %d MiB (request %d); event %s %s result %d %v",
			err, after>>20, afterReq>>20, last.Kind, last.Outcome, last.Result, last.Steps)
	}
	t.Logf("resize of a stopped guest: %v", err)
	if err := s.QMP(ctx, "cont", nil); err != nil {
		t.Fatal(err)
	}
	// Going on, the guest takes the memory it is given.
	waitFor(ctx, t, 60*time.Second, "the agent to reconnect", func() bool {
		v, err := client.VM(ctx, "guest")
		return err == nil && v.Connected
	})
	if _, err := client.SetMemory(ctx, "guest", api.MemoryRequest{Bytes: want}); err != nil {
		t.Fatalf("set-memory once the guest runs again: %v", err)
	}
	if got := guestMemTotal(ctx, t, s.VM); got-bootGuestTotal != want-512<<20 {
		t.Fatalf("guest MemTotal %+d MiB over boot, QEMU %d MiB", int64(got-bootGuestTotal)>>20, want>>20)
	}
	if oom := strings.TrimSpace(mustGuest(ctx, t, s.VM, "awk '$1==\"oom_kill\"{print $2}' /proc/vmstat")); oom != "0" {
		t.Fatalf("%s OOM kills in the guest", oom)
	}
}

func lastMemoryEvent(t *testing.T, s *stack.Stack) eventlog.Event {
	t.Helper()
	evs, err := s.Events()
	if err != nil {
		t.Fatal(err)
	}
	for i := len(evs) - 1; i >= 0; i-- {
		if eventlog.IsMemory(evs[i].Kind) && evs[i].Outcome != eventlog.OutcomeStarted {
			return evs[i]
		}
	}
	t.Fatal("no memory event")
	return eventlog.Event{}
}

func rulesOf(evs []eventlog.Event) string {
	n := map[string]int{}
	for _, ev := range evs {
		n[ev.Rule]++
	}
	var out []string
	for r, c := range n {
		out = append(out, fmt.Sprintf("%s×%d", r, c))
	}
	return strings.Join(out, " ")
}

// touchRates maps memload's seconds to its pages touched in them.
func touchRates(log string) map[int]float64 {
	out := map[int]float64{}
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 8 && f[0] == "T" {
			sec, _ := strconv.Atoi(f[1])
			n, _ := strconv.ParseFloat(f[7], 64)
			out[sec] = n
		}
	}
	return out
}

// median of rates over seconds [from, to].
func median(rates map[int]float64, from, to int) float64 {
	var v []float64
	for s := from; s <= to; s++ {
		if r, ok := rates[s]; ok {
			v = append(v, r)
		}
	}
	if len(v) == 0 {
		return 0
	}
	for i := range v {
		for j := i + 1; j < len(v); j++ {
			if v[j] < v[i] {
				v[i], v[j] = v[j], v[i]
			}
		}
	}
	return v[len(v)/2]
}
