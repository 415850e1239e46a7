// Package agent is the in-guest side of Hot-Plug Heaven: it samples the
// guest every interval, sends Reports to the actuator over a transport,
// carries out the actuator's Commands (online/offline CPUs, change the
// interval) and onlines hot-added CPUs as a udev rule would.
//
// Sampling never waits for the network: reports go through a bounded queue
// and the connection is re-established with backoff. The agent trusts the
// actuator's commands only as far as the kernel lets it: cpu0 and CPUs the
// kernel cannot remove are never offlined.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotplugheaven/hotplug/guest/collector"
	"github.com/hotplugheaven/hotplug/guest/cpu"
	"github.com/hotplugheaven/hotplug/guest/transport"
	"github.com/hotplugheaven/hotplug/proto"
)

// Config is the agent's behaviour; zero fields take defaults.
type Config struct {
	// Interval between samples (default 5 s); the actuator may change it.
	Interval time.Duration
	// AutoOnline onlines CPUs that become present (hot-added), as the udev
	// rule `SUBSYSTEM=="cpu", ACTION=="add", ATTR{online}="1"` would.
	AutoOnline bool
	// OnlineTimeout bounds how long a command waits for a hot-added CPU to
	// appear in sysfs (default 20 s; slow under emulation).
	OnlineTimeout time.Duration
	// EjectTimeout bounds how long an offline waits for the kernel to
	// finish ejecting the CPU, on a VirtualBox guest (default 10 s).
	EjectTimeout time.Duration
	// QueueSize is how many unsent reports are kept (default 12).
	QueueSize int
	// Version is reported in Hello.
	Version string
	// Roots of /proc, /sys, /etc (tests use fixture trees), and the
	// sources beyond the collector's (Collector.Extra: run-queue latency,
	// application logs), which run in the sampling loop after the
	// collector's and must not block.
	Collector collector.Options
	// Apps names the applications whose statistics the extras put in
	// reports (apps.d): they are announced in Hello, and the actuator
	// refuses a report naming any other.
	Apps []string
	// StatusFile, if not nil, is rewritten every sample (status.go).
	StatusFile *StatusWriter
	// Pressure, if not nil, says when to sample at the fast interval; nil
	// arms a PSI trigger on Collector.ProcRoot/pressure/cpu when the
	// kernel allows (without one, the agent samples at Interval only).
	Pressure Pressure
}

// Agent runs the sampling loop and the connection to the actuator.
type Agent struct {
	cfg     Config
	log     hclog.Logger
	dialer  transport.Dialer
	sampler *collector.Sampler
	cpus    *cpu.Controller
	queue   *queue
	// eject: the guest runs on VirtualBox, whose unplugcpu completes only
	// once the guest has ejected the CPU (DMI, read once: it does not
	// change while the guest runs).
	eject bool

	intervalMu sync.Mutex
	interval   time.Duration
	intervalCh chan struct{} // nudges the sampler after an interval change
	fastUntil  time.Time     // under CPU pressure until then (pressure.go)

	statusMu sync.Mutex
	status   Status
}

// Status is what the agent sees locally, for `hotplug-agent status`.
type Status struct {
	Connected  bool
	Transport  string
	LastReport *proto.Report
	LastError  string
	Sent       uint64
	Dropped    uint64
}

// New prepares an agent. It reads nothing from the network yet.
func New(cfg Config, dialer transport.Dialer, logger hclog.Logger) (*Agent, error) {
	if cfg.Interval == 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.Interval < proto.MinInterval || cfg.Interval > proto.MaxInterval {
		return nil, fmt.Errorf("interval %v outside [%v, %v]", cfg.Interval, proto.MinInterval, proto.MaxInterval)
	}
	// The Hello that announces them must be valid, or no actuator would
	// ever take this agent.
	if err := (&proto.Hello{MinVersion: proto.MinVersion, MaxVersion: proto.MaxVersion, Apps: cfg.Apps,
		IntervalNanos: int64(cfg.Interval)}).Validate(); err != nil {
		return nil, fmt.Errorf("applications: %w", err)
	}
	if cfg.OnlineTimeout <= 0 {
		cfg.OnlineTimeout = 20 * time.Second
	}
	if cfg.EjectTimeout <= 0 {
		cfg.EjectTimeout = 10 * time.Second
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 12
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	s, err := collector.New(cfg.Collector)
	if err != nil {
		return nil, err
	}
	sysRoot := cfg.Collector.SysRoot
	// A partly unreadable identity (product_uuid needs root) still has
	// the DMI names, which every user may read.
	id, _ := collector.ReadIdentity(cfg.Collector)
	if id.VirtualBox() {
		logger.Info("VirtualBox guest (DMI): CPUs offlined for an unplug are ejected through ACPI",
			"sys_vendor", id.SysVendor, "product_name", id.ProductName)
	}
	return &Agent{
		cfg: cfg, log: logger, dialer: dialer, sampler: s, eject: id.VirtualBox(),
		cpus:       cpu.NewController(sysRoot),
		queue:      newQueue(cfg.QueueSize),
		interval:   cfg.Interval,
		intervalCh: make(chan struct{}, 1),
		status:     Status{Transport: dialer.String()},
	}, nil
}

// Status returns a snapshot of the agent's state.
func (a *Agent) Status() Status {
	a.statusMu.Lock()
	defer a.statusMu.Unlock()
	return a.status
}

func (a *Agent) setStatus(f func(*Status)) {
	a.statusMu.Lock()
	f(&a.status)
	a.statusMu.Unlock()
}

func (a *Agent) getInterval() time.Duration {
	a.intervalMu.Lock()
	defer a.intervalMu.Unlock()
	return a.interval
}

func (a *Agent) setInterval(d time.Duration) {
	a.intervalMu.Lock()
	changed := d != a.interval
	a.interval = d
	a.intervalMu.Unlock()
	if changed {
		a.log.Info("sampling interval changed", "interval", d)
		select {
		case a.intervalCh <- struct{}{}:
		default:
		}
	}
}

// Run samples and serves the actuator until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	p := a.cfg.Pressure
	if p == nil {
		procRoot := a.cfg.Collector.ProcRoot
		if procRoot == "" {
			procRoot = "/proc" // as the collector defaults it
		}
		t, err := openPSITrigger(procRoot)
		if err != nil {
			a.log.Info("no CPU pressure trigger; reporting at the configured interval only", "reason", err)
		} else {
			p = t
		}
	}
	if p != nil {
		wg.Add(1)
		go func() { defer wg.Done(); a.pressureLoop(ctx, p) }()
	}
	wg.Add(2)
	go func() { defer wg.Done(); a.sampleLoop(ctx) }()
	go func() { defer wg.Done(); a.hotplugLoop(ctx) }()
	a.connectLoop(ctx)
	wg.Wait()
	return nil
}

// logSources logs every source's state after the first Sample (which
// reads them all), then each change of a source's state: once per
// distinct message, however often the source fails.
func (a *Agent) logSources(was []collector.SourceState) []collector.SourceState {
	now := a.sampler.Sources()
	for i, s := range now {
		if errors.Is(s.Err, collector.ErrNotSampled) {
			continue
		}
		first := i >= len(was) || errors.Is(was[i].Err, collector.ErrNotSampled)
		if !first && was[i].InUse == s.InUse && errText(was[i].Err) == errText(s.Err) {
			continue
		}
		switch {
		case s.InUse && s.Err != nil:
			a.log.Warn("source in use, degraded", "source", s.Name, "path", s.Path, "reason", s.Err)
		case s.InUse && first:
			a.log.Info("source in use", "source", s.Name, "path", s.Path)
		case s.InUse:
			a.log.Info("source recovered", "source", s.Name, "path", s.Path)
		case first:
			a.log.Warn("source not available", "source", s.Name, "path", s.Path, "reason", s.Err)
		default:
			a.log.Warn("source failed", "source", s.Name, "path", s.Path, "reason", s.Err)
		}
	}
	return now
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// sampleLoop samples every interval and queues the report.
func (a *Agent) sampleLoop(ctx context.Context) {
	var seq uint64
	var was []collector.SourceState // as logged
	sample := func() {
		defer a.cfg.StatusFile.write(a)
		r, err := a.sampler.Sample()
		was = a.logSources(was)
		switch {
		case errors.Is(err, collector.ErrNoBaseline), errors.Is(err, collector.ErrTooSoon):
			return
		case err != nil:
			a.log.Error("sample failed", "error", err)
			a.setStatus(func(s *Status) { s.LastError = err.Error() })
			return
		}
		seq++
		r.Seq = seq
		a.queue.push(r)
		a.setStatus(func(s *Status) { s.LastReport = r })
	}
	sample()
	last := time.Now()
	t := time.NewTimer(a.nextSample(last))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.intervalCh:
			// A new interval, or pressure began: the next sample is due
			// that much after the last one (at once if that has passed).
		case <-t.C:
			sample()
			last = time.Now()
		}
		t.Stop()
		t.Reset(max(time.Until(last.Add(a.nextSample(time.Now()))), 0))
	}
}

// hotplugLoop onlines CPUs that became present since the last look. It
// polls the one-line present file twice a second, which costs less than
// listening to kernel uevents and needs no privileges beyond sysfs.
func (a *Agent) hotplugLoop(ctx context.Context) {
	if !a.cfg.AutoOnline {
		return
	}
	prev, err := a.cpus.Present()
	if err != nil {
		a.log.Warn("cannot watch for hot-added CPUs", "error", err)
		return
	}
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		present, err := a.cpus.Present()
		if err != nil {
			continue
		}
		for _, c := range present.Difference(prev).Slice() {
			octx, cancel := context.WithTimeout(ctx, a.cfg.OnlineTimeout)
			err := a.cpus.Online(octx, c)
			cancel()
			if err != nil {
				a.log.Warn("hot-added CPU could not be onlined", "cpu", c, "error", err)
			} else {
				a.log.Info("hot-added CPU onlined", "cpu", c)
			}
		}
		prev = present
	}
}

// connectLoop keeps a session with the actuator, reconnecting with backoff.
func (a *Agent) connectLoop(ctx context.Context) {
	failures := 0
	for ctx.Err() == nil {
		conn, err := a.dialer.Dial(ctx)
		if err == nil {
			start := time.Now()
			err = a.session(ctx, conn)
			conn.Close()
			if time.Since(start) > time.Minute {
				failures = 0 // a long session: the next drop is news
			}
		}
		a.setStatus(func(s *Status) {
			s.Connected = false
			if err != nil {
				s.LastError = err.Error()
			}
		})
		if ctx.Err() != nil {
			return
		}
		failures++
		wait := min(250*time.Millisecond<<min(failures, 5), 5*time.Second)
		if failures == 1 || failures%60 == 0 {
			a.log.Warn("no session with the actuator; retrying", "transport", a.dialer.String(), "error", err, "retry_in", wait)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// session runs one connection: Hello, Welcome, then reports out and
// commands in until either side fails.
func (a *Agent) session(ctx context.Context, conn io.ReadWriteCloser) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Closing the connection is the only way to unblock its reads and
	// writes (a virtio-serial write blocks while the host is away).
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	w := proto.NewWriter(conn)
	r := proto.NewReader(conn, 0)
	hello, err := a.hello()
	if err != nil {
		return err
	}
	if err := w.Write(hello); err != nil {
		return fmt.Errorf("sending Hello: %w", err)
	}
	m, err := r.Next()
	if err != nil {
		return fmt.Errorf("waiting for Welcome: %w", err)
	}
	welcome, ok := m.(*proto.Welcome)
	if !ok {
		return fmt.Errorf("actuator sent %v instead of Welcome", m.Type())
	}
	if welcome.Error != "" {
		return fmt.Errorf("actuator refused the connection: %s", welcome.Error)
	}
	if welcome.IntervalNanos != 0 {
		a.setInterval(time.Duration(welcome.IntervalNanos))
	}
	a.log.Info("connected to actuator", "transport", a.dialer.String(), "vm", welcome.VM, "protocol", welcome.Version)
	a.setStatus(func(s *Status) { s.Connected, s.LastError = true, "" })

	sendErr := make(chan error, 1)
	go func() { sendErr <- a.sendLoop(ctx, w) }()
	readErr := a.commandLoop(ctx, r, w)
	cancel()
	if err := <-sendErr; readErr == nil || errors.Is(readErr, context.Canceled) {
		readErr = err
	}
	return readErr
}

// hello describes the guest as it is now.
func (a *Agent) hello() (*proto.Hello, error) {
	h := &proto.Hello{MinVersion: proto.MinVersion, MaxVersion: proto.MaxVersion,
		AgentVersion: a.cfg.Version, IntervalNanos: int64(a.getInterval()), Apps: a.cfg.Apps}
	id, err := collector.ReadIdentity(a.cfg.Collector)
	if err != nil {
		a.log.Debug("identity partly unreadable", "error", err)
	}
	h.MachineID, h.ProductUUID, h.Hostname = id.MachineID, id.ProductUUID, id.Hostname
	if h.Possible, err = a.cpus.Possible(); err != nil {
		return nil, err
	}
	if h.Present, err = a.cpus.Present(); err != nil {
		return nil, err
	}
	if h.Online, err = a.cpus.OnlineCPUs(); err != nil {
		return nil, err
	}
	if topo, err := collector.ReadTopology(a.cfg.Collector); err == nil {
		h.Topology = topo
	}
	// The three lists are read one after the other; a hotplug in between
	// could make them disagree, which Validate would refuse.
	h.Present = h.Present.Union(h.Online)
	h.Possible = h.Possible.Union(h.Present)
	return h, nil
}

// sendLoop writes queued reports until ctx ends or a write fails. Reports
// older than three intervals are dropped rather than sent: the actuator
// stamps reports with their arrival time, and stale ones would pass for
// fresh.
func (a *Agent) sendLoop(ctx context.Context, w *proto.Writer) error {
	for {
		r, dropped, ok := a.queue.pop(ctx, 3*a.getInterval())
		if !ok {
			return ctx.Err()
		}
		r.Dropped = dropped
		if err := w.Write(r); err != nil {
			a.queue.unpop(r)
			return fmt.Errorf("sending report %d: %w", r.Seq, err)
		}
		a.setStatus(func(s *Status) { s.Sent++; s.Dropped += dropped })
	}
}

// commandLoop executes commands and acknowledges them.
func (a *Agent) commandLoop(ctx context.Context, r *proto.Reader, w *proto.Writer) error {
	for {
		m, err := r.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("actuator closed the connection")
			}
			return err
		}
		c, ok := m.(*proto.Command)
		if !ok {
			return fmt.Errorf("actuator sent %v, expected Command", m.Type())
		}
		ack := a.execute(ctx, c)
		if err := w.Write(ack); err != nil {
			return fmt.Errorf("sending ack %d: %w", ack.ID, err)
		}
	}
}
