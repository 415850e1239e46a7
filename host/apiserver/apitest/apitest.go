// Package apitest serves the API over a real actuator whose VMs are
// qmptest QEMU doubles with fake guests, for the tests of the API, the
// dashboard (in a browser) and the CLI. The fake guest follows the
// actuator's own tests (host/actuator/fakeagent_test.go): it speaks the
// real protocol over a net.Pipe, onlines and offlines CPUs on command,
// and reports whatever demand the test sets.
package apitest

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotplugheaven/hotplug/host/actuator"
	"github.com/hotplugheaven/hotplug/host/actuator/fakeguest"
	"github.com/hotplugheaven/hotplug/host/api"
	"github.com/hotplugheaven/hotplug/host/apiserver"
	"github.com/hotplugheaven/hotplug/host/channel"
	"github.com/hotplugheaven/hotplug/host/engine"
	"github.com/hotplugheaven/hotplug/host/eventlog"
	"github.com/hotplugheaven/hotplug/host/hypervisor"
	"github.com/hotplugheaven/hotplug/host/memory"
	"github.com/hotplugheaven/hotplug/host/qmp/qmptest"
)

// Spec describes one VM of a rig.
type Spec struct {
	Name string
	// Boot and Max are the vCPUs plugged at start and the hot-plug slots
	// (default 1 and 4).
	Boot, Max int
	// Interval is the report interval (default 100 ms).
	Interval time.Duration
	// Policy adjusts the fast test policy.
	Policy func(*engine.Policy)
	// Demand is the initial CPUs' worth of work the guest reports.
	Demand float64
	// App makes the guest report one application with an SLA.
	App bool
	// Channel, when set, is the VM's agent channel and no fake guest
	// runs: the test plays the guest (e.g. a hostile one) on it.
	Channel channel.Channel
	// CommandTimeout bounds the wait for the agent's Ack (default 5 s).
	CommandTimeout time.Duration
	// Memory, when set, is the VM's memory policy, and its QEMU has a
	// virtio-mem device of 1 GiB whose guest plugs what is asked.
	Memory *memory.Policy
}

// Rig is an actuator with fake VMs and the API served on a unix socket.
type Rig struct {
	t        testing.TB
	Act      *actuator.Actuator
	Hub      *apiserver.Hub
	Metrics  *apiserver.Metrics
	Server   *apiserver.Server
	EventLog string
	// Socket is the unix socket the API is served on.
	Socket string
	VMs    map[string]*VM

	events *eventlog.Log
	cancel context.CancelFunc
	done   chan struct{}
}

// VM is one fake VM.
type VM struct {
	Name  string
	QMP   *qmptest.Server
	Guest *fakeguest.Guest
}

// FastPolicy decides quickly: 2 of 3 samples, no cooldowns.
func FastPolicy(interval time.Duration) engine.Policy {
	p := engine.DefaultPolicy()
	p.Interval = engine.Duration(interval)
	p.MinVCPUs, p.MaxVCPUs = 1, 4
	p.K, p.N, p.Window, p.DownSamples = 2, 3, 6, 3
	p.CooldownUp, p.CooldownDown = 0, 0
	return p
}

// Start runs an actuator over the specs and serves the API on a unix
// socket in a temporary directory. Everything stops at the test's end.
func Start(t testing.TB, specs ...Spec) *Rig {
	t.Helper()
	dir := t.TempDir()
	r := &Rig{t: t, EventLog: filepath.Join(dir, "events.jsonl"), VMs: map[string]*VM{}, done: make(chan struct{}),
		Hub: apiserver.NewHub(), Metrics: apiserver.NewMetrics()}
	var err error
	if r.events, err = eventlog.Open(r.EventLog); err != nil {
		t.Fatal(err)
	}
	logger := hclog.New(&hclog.LoggerOptions{Level: hclog.Info, Output: testWriter{t}})
	var cfgs []actuator.VMConfig
	type guestRun struct {
		g        *fakeguest.Guest
		ch       *fakeguest.PipeChannel
		interval time.Duration
	}
	var runs []guestRun
	hostile := map[string]bool{} // VMs whose guest the test plays
	for _, s := range specs {
		if s.Boot == 0 {
			s.Boot = 1
		}
		if s.Max == 0 {
			s.Max = 4
		}
		if s.Interval == 0 {
			s.Interval = 100 * time.Millisecond
		}
		if s.CommandTimeout == 0 {
			s.CommandTimeout = 5 * time.Second
		}
		qc := &qmptest.Config{MaxCPUs: s.Max, BootCPUs: s.Boot, Accel: "kvm"}
		if s.Memory != nil {
			qc.VirtioMem = &qmptest.VirtioMem{Max: 1 << 30, Guest: true}
		}
		srv := qmptest.Start(t, qc)
		var ch channel.Channel = s.Channel
		g := fakeguest.New(srv)
		if ch == nil {
			pipe := fakeguest.NewPipeChannel()
			ch = pipe
			g.SetDemand(s.Demand)
			g.SetApp(s.App)
			runs = append(runs, guestRun{g, pipe, s.Interval})
		} else {
			hostile[s.Name] = true
		}
		p := FastPolicy(s.Interval)
		if s.Policy != nil {
			s.Policy(&p)
		}
		vc := actuator.VMConfig{Name: s.Name, Policy: p, Channel: ch, CommandTimeout: s.CommandTimeout,
			RecheckInterval: 300 * time.Millisecond,
			Hypervisor:      hypervisor.NewQEMU(srv.Path(), hypervisor.QEMUOptions{UnplugTimeout: 5 * time.Second, Logger: logger})}
		if s.Memory != nil {
			vc.Memory = *s.Memory
		}
		cfgs = append(cfgs, vc)
		r.VMs[s.Name] = &VM{Name: s.Name, QMP: srv, Guest: g}
	}
	if r.Act, err = actuator.New(cfgs, r.events, 0, logger, r.Hub, r.Metrics); err != nil {
		t.Fatal(err)
	}
	if r.Server, err = apiserver.New(apiserver.Options{Actuator: r.Act, Hub: r.Hub, Metrics: r.Metrics, EventLog: r.EventLog,
		Version: "test", Logger: logger}); err != nil {
		t.Fatal(err)
	}
	// Unix socket paths are limited to 108 bytes; test temp dirs can be
	// longer.
	sockDir, err := shortTempDir(t)
	if err != nil {
		t.Fatal(err)
	}
	r.Socket = filepath.Join(sockDir, "api.sock")
	ln, err := apiserver.ListenUnix(r.Socket, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	served := make(chan struct{})
	go func() { r.Server.Serve(ctx, ln, apiserver.Listen{}); close(served) }()
	go func() { r.Act.Run(ctx); close(r.done) }()
	for _, gr := range runs {
		go gr.g.Run(ctx, gr.ch.Dial, gr.interval)
	}
	t.Cleanup(func() {
		cancel()
		r.Server.Shutdown()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Error("actuator did not stop within 10 s")
		}
		<-served
		r.events.Close()
	})
	// Tests act on VMs at once: wait until every agent is connected and
	// has reported.
	WaitFor(t, 10*time.Second, "every fake agent to connect and report", func() bool {
		for _, v := range r.Act.VMs() {
			if hostile[v.Name()] {
				continue
			}
			if st := v.Status(); !st.Agent.Connected || st.Agent.Reports == 0 {
				return false
			}
		}
		return true
	})
	return r
}

// HTTPClient is an http.Client that dials the rig's unix socket; use it
// with URLs like http://actuator/v1/vms.
func (r *Rig) HTTPClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", r.Socket)
		}}}
}

// Client is an API client on the rig's socket.
func (r *Rig) Client() *api.Client { return api.NewUnixClient(r.Socket) }

// WaitFor polls cond every 20 ms for up to d.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// shortTempDir makes a directory with a short path (unix socket paths
// are limited to 108 bytes) and removes it at the test's end.
func shortTempDir(t testing.TB) (string, error) {
	dir, err := os.MkdirTemp("", "hp")
	if err != nil {
		return "", err
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir, nil
}

// ServeTCP serves the rig's API on a TCP port of 127.0.0.1 with the
// token (and TLS, when given) until the test ends, and returns its base
// URL.
func (r *Rig) ServeTCP(t testing.TB, token string, tlsCfg *tls.Config) string {
	t.Helper()
	tok, err := apiserver.NewToken(token)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { r.Server.Serve(ctx, ln, apiserver.Listen{Token: tok, TLS: tlsCfg}); close(served) }()
	t.Cleanup(func() { stop(); <-served })
	scheme := "http"
	if tlsCfg != nil {
		scheme = "https"
	}
	return scheme + "://" + ln.Addr().String()
}
