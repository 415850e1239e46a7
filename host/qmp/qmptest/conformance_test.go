package qmptest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"path"
	"reflect"
	"strings"
	"testing"
	"time"
)

// session is one scripted QMP exchange: each line is sent as is and the
// reply is recorded. It runs against the fake and against real QEMU, and
// TestConformance requires identical replies, so the fake cannot drift from
// QEMU unnoticed. "PM" is replaced by the PIIX4_PM path found by type with
// qom-list, "SB" by its parent, the PIIX3 southbridge.
var session = []string{
	`{"execute": "query-hotpluggable-cpus", "id": 1}`,
	`{"execute": "qmp_capabilities", "id": "cap"}`,
	`{"execute": "qmp_capabilities"}`,
	`{"execute": "query-hotpluggable-cpus", "id": {"any": ["json"]}}`,
	`{"execute": "query-cpus-fast"}`,
	`{"execute": "qom-get", "arguments": {"path": "/machine/unattached/device[0]", "property": "apic-id"}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "hpcpu-s0-c2-t0", "socket-id": 0, "core-id": 2, "thread-id": 0}, "id": 7}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "socket-id": 0, "core-id": 1, "thread-id": 0}}`,
	`{"execute": "query-cpus-fast"}`,
	`{"execute": "query-hotpluggable-cpus"}`,
	`{"execute": "qom-get", "arguments": {"path": "/machine/peripheral/hpcpu-s0-c2-t0", "property": "apic-id"}}`,
	`{"execute": "qom-get", "arguments": {"path": "/machine/peripheral-anon/device[0]", "property": "apic-id"}}`,
	// device_add errors, in QEMU's order of checks.
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "x", "socket-id": 0, "core-id": 1, "thread-id": 0}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "hpcpu-s0-c2-t0", "socket-id": 0, "core-id": 3, "thread-id": 0, "bogus": 1}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "9x", "socket-id": 0, "core-id": 3, "thread-id": 0, "bogus": 1}}`,
	// QEMU 10.0 no longer checks an id's syntax: "9x" passes, and so do
	// "" and "a/b" (named /machine/peripheral/ and .../a/b), which the
	// fake refuses rather than model.
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "9x", "socket-id": 0, "core-id": 9, "thread-id": 0}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "x", "socket-id": 0, "core-id": 9, "thread-id": 0, "bogus": 1}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "x", "socket-id": 0, "core-id": 9, "thread-id": 0}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "x", "socket-id": 1, "core-id": 3, "thread-id": 0}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "x", "socket-id": 0, "core-id": 3, "thread-id": 1}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "x", "socket-id": 0, "die-id": 1, "core-id": 3, "thread-id": 0}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "x", "core-id": 3}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "x", "socket-id": -1, "core-id": 3, "thread-id": 0}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "x", "socket-id": 0, "core-id": 3}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "x", "socket-id": true, "core-id": 3, "thread-id": 0}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "x", "socket-id": "x", "core-id": 3, "thread-id": 0}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "x", "socket-id": 0, "core-id": 3.5, "thread-id": 0}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "x", "socket-id": 0, "core-id": 3, "thread-id": 0, "node-id": "x"}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "x", "socket-id": 0, "core-id": 2147483648, "thread-id": 0}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "x", "socket-id": 0, "core-id": 1e3, "thread-id": 0}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "x", "socket-id": null, "core-id": 3, "thread-id": 0}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "x", "socket-id": 0, "core-id": 3, "thread-id": 0, "module-id": 1}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "x", "socket-id": 0, "core-id": 9, "thread-id": 0, "die-id": -1, "module-id": -1}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "x", "apic-id": "3"}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "x", "apic-id": -1}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "x", "apic-id": 4}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "x", "apic-id": 0, "core-id": 3}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "x", "apic-id": 3, "core-id": 2}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "x", "apic-id": 3, "core-id": -5}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "x", "apic-id": 3, "socket-id": 0, "thread-id": 1}}`,
	`{"execute": "device_add", "arguments": {"driver": "nosuch-cpu", "id": "x", "socket-id": 0, "core-id": 3, "thread-id": 0}}`,
	`{"execute": "device_add", "arguments": {"driver": 5}}`,
	`{"execute": "device_add", "arguments": {"driver": "host-x86_64-cpu", "id": "x", "socket-id": 0, "core-id": 3, "thread-id": 0}}`,
	`{"execute": "device_add", "arguments": {"id": "x", "socket-id": 0, "core-id": 3, "thread-id": 0}}`,
	`{"execute": "device_add"}`,
	// device_del before the guest enabled modern CPU hotplug.
	`{"execute": "device_del", "arguments": {"id": "/machine/unattached/device[0]"}}`,
	`{"execute": "device_del", "arguments": {"id": "hpcpu-s0-c2-t0"}}`,
	`{"execute": "device_del", "arguments": {"id": "/machine/peripheral-anon/device[0]"}}`,
	`{"execute": "device_del", "arguments": {"id": "nosuch"}}`,
	`{"execute": "device_del", "arguments": {"id": "/machine/peripheral/nosuch"}}`,
	`{"execute": "device_del", "arguments": {"id": "/machine"}}`,
	`{"execute": "device_del", "arguments": {}}`,
	`{"execute": "device_del"}`,
	`{"execute": "device_del", "arguments": {"id": 5}}`,
	`{"execute": "device_del", "arguments": {"id": "hpcpu-s0-c2-t0", "foo": 1}}`,
	`{"execute": "device_del", "arguments": {"id": "/machine/peripheral"}}`,
	`{"execute": "device_del", "arguments": {"id": "/machine/unattached/device[0]/lapic"}}`,
	`{"execute": "device_del", "arguments": {"id": "SB"}}`,
	`{"execute": "device_del", "arguments": {"id": "PM"}}`,
	// qom-get.
	`{"execute": "qom-get", "arguments": {"path": "/machine/peripheral/nosuch", "property": "apic-id"}}`,
	`{"execute": "qom-get", "arguments": {"path": "nosuch", "property": "apic-id"}}`,
	`{"execute": "qom-get", "arguments": {"path": "/machine/unattached/device[0]", "property": "nosuch"}}`,
	`{"execute": "qom-get", "arguments": {"path": "/machine", "property": "apic-id"}}`,
	`{"execute": "qom-get", "arguments": {"path": "/machine/unattached/device[0]"}}`,
	`{"execute": "qom-get", "arguments": {"path": "/machine", "property": "type"}}`,
	`{"execute": "qom-get", "arguments": {"path": "/machine/unattached/device[0]", "property": "type"}}`,
	`{"execute": "qom-get", "arguments": {"path": "/machine/unattached", "property": "x"}}`,
	`{"execute": "qom-get", "arguments": {"path": "/machine/unattached/device[0]/lapic", "property": "x"}}`,
	`{"execute": "qom-get", "arguments": {"path": "SB", "property": "type"}}`,
	`{"execute": "qom-get", "arguments": {"path": "SB", "property": "x"}}`,
	`{"execute": "qom-get", "arguments": {"path": "PM", "property": "type"}}`,
	`{"execute": "qom-get", "arguments": {"path": "PM", "property": "x"}}`,
	// qom-list: errors only, as the fake lists just what it models.
	`{"execute": "qom-list", "arguments": {"path": "/machine/nosuch"}}`,
	`{"execute": "qom-list", "arguments": {"path": "nosuch"}}`,
	`{"execute": "qom-list"}`,
	`{"execute": "qom-list", "arguments": {"path": "/machine", "x": 1}}`,
	`{"execute": "qom-list", "arguments": {"path": 5}}`,
	// Protocol errors.
	`{"execute": "nosuch-cmd", "id": 13}`,
	`{"execute": "query-hotpluggable-cpus", "arguments": {"x": 1}}`,
	`{"execute": "query-cpus-fast", "id": "s", "extra": 1}`,
	`{}`,
	`[1]`,
	`{"execute": 1}`,
	`{"execute": "device_del", "arguments": [1]}`,
	`{"execute": "query-status"}`,
	`{"execute": "query-kvm"}`,
	// Switch to the modern CPU hotplug interface as a booting guest would.
	`{"execute": "qom-get", "arguments": {"path": "PM", "property": "cpu-hotplug-legacy"}}`,
	`{"execute": "qom-set", "arguments": {"path": "PM", "property": "cpu-hotplug-legacy", "value": "x"}}`,
	`{"execute": "qom-set", "arguments": {"path": "PM", "property": "cpu-hotplug-legacy", "value": false}}`,
	`{"execute": "qom-get", "arguments": {"path": "PM", "property": "cpu-hotplug-legacy"}}`,
	`{"execute": "device_del", "arguments": {"id": "/machine/unattached/device[0]"}}`,
	`{"execute": "device_del", "arguments": {"id": "hpcpu-s0-c2-t0"}}`,
	`{"execute": "device_del", "arguments": {"id": "hpcpu-s0-c2-t0"}}`,
	`{"execute": "device_del", "arguments": {"id": "/machine/peripheral-anon/device[0]"}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "hpcpu-s0-c2-t0", "socket-id": 0, "core-id": 3, "thread-id": 0}}`,
	`{"execute": "query-hotpluggable-cpus"}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "hpcpu-s0-c3-t0", "socket-id": "0", "core-id": 3, "thread-id": 0, "node-id": 0}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "hpcpu-s0-c3-t0", "apic-id": 3, "node-id": 0}}`,
	`{"execute": "query-hotpluggable-cpus"}`,
	`{"execute": "query-cpus-fast"}`,
}

// TestConformance runs session against real QEMU and the fake and demands
// the same replies (thread ids aside, which are the host's).
func TestConformance(t *testing.T) {
	t.Parallel()
	real := StartQEMU(t, "1,maxcpus=4")
	// No guest: nothing ever completes an unplug or acknowledges a plug.
	fake := Start(t, &Config{NoGuest: true})
	compare(t, session, real, fake)
}

// topologySession checks die-id, threads and APIC ids on a VM with 2
// sockets × 2 dies × 1 core × 2 threads.
var topologySession = []string{
	`{"execute": "qmp_capabilities"}`,
	`{"execute": "query-hotpluggable-cpus"}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "a", "socket-id": 1, "die-id": 1, "core-id": 0, "thread-id": 1}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "b", "socket-id": 1, "core-id": 0, "thread-id": 0}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "b", "socket-id": 0, "die-id": 2, "core-id": 0, "thread-id": 0}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "b", "socket-id": 0, "die-id": 1, "core-id": 1, "thread-id": 0}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "b", "socket-id": 0, "die-id": 1, "core-id": 0, "thread-id": 0}}`,
	`{"execute": "query-hotpluggable-cpus"}`,
	`{"execute": "query-cpus-fast"}`,
	`{"execute": "qom-get", "arguments": {"path": "/machine/peripheral/a", "property": "apic-id"}}`,
	`{"execute": "qom-get", "arguments": {"path": "/machine/peripheral/b", "property": "apic-id"}}`,
	`{"execute": "qom-get", "arguments": {"path": "/machine/unattached/device[2]", "property": "apic-id"}}`,
}

// modulesSession checks module-id, new in QEMU 9, and topology ids derived
// from apic-id, on a VM with 2 sockets × 2 modules × 2 cores.
var modulesSession = []string{
	`{"execute": "qmp_capabilities"}`,
	`{"execute": "query-hotpluggable-cpus"}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "a", "socket-id": 1, "module-id": 1, "core-id": 1, "thread-id": 0}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "b", "socket-id": 0, "core-id": 0, "thread-id": 0}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "b", "socket-id": 0, "module-id": 2, "core-id": 0, "thread-id": 0}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "b", "apic-id": 5}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "c", "apic-id": 6, "module-id": 0}}`,
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "c", "apic-id": 9}}`,
	`{"execute": "query-hotpluggable-cpus"}`,
	`{"execute": "query-cpus-fast"}`,
	`{"execute": "qom-get", "arguments": {"path": "/machine/peripheral/a", "property": "apic-id"}}`,
	`{"execute": "qom-get", "arguments": {"path": "/machine/peripheral/b", "property": "apic-id"}}`,
	`{"execute": "qom-get", "arguments": {"path": "/machine/unattached/device[2]", "property": "apic-id"}}`,
}

func TestConformanceTopology(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		smp     string
		cfg     Config
		session []string
	}{
		{"dies", "2,sockets=2,dies=2,cores=1,threads=2,maxcpus=8",
			Config{BootCPUs: 2, Sockets: 2, Dies: 2, Cores: 1, Threads: 2, NoGuest: true}, topologySession},
		{"modules", "2,sockets=2,modules=2,cores=2,threads=1,maxcpus=8",
			Config{BootCPUs: 2, Sockets: 2, Modules: 2, Cores: 2, NoGuest: true}, modulesSession},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			real := StartQEMU(t, tt.smp)
			fake := Start(t, &tt.cfg)
			compare(t, tt.session, real, fake)
		})
	}
}

// TestConformanceReplug unplugs for real (the test plays the guest: EjectCPU
// on QEMU, EjectPending on the fake) and plugs again until TCG runs out of
// vCPU contexts: with -smp 1,maxcpus=3 two device_adds work, and QEMU
// 10.0.2 aborts in the third without replying.
func TestConformanceReplug(t *testing.T) {
	t.Parallel()
	real := StartQEMU(t, "1,maxcpus=3")
	fake := Start(t, &Config{MaxCPUs: 3, NoGuest: true})
	want := replugSession(t, real.Path, func() { real.EjectCPU(t, 1) })
	got := replugSession(t, fake.Path(), fake.EjectPending)
	compareReplies(t, got, want)
	select {
	case <-real.Exited():
		if out := real.Output(); !strings.Contains(out, "tcg_max_ctxs") {
			t.Errorf("QEMU died for another reason than TCG's contexts:\n%s", out)
		}
	case <-time.After(10 * time.Second):
		t.Error("QEMU still running after the device_add that should abort it")
	}
	if c, err := net.Dial("unix", fake.Path()); err == nil {
		c.Close()
		t.Error("fake still accepts connections after the simulated abort")
	}
}

func replugSession(t *testing.T, socket string, eject func()) []any {
	c := dialRaw(t, socket)
	defer c.close()
	c.exchange(`{"execute": "qmp_capabilities"}`)
	c.exchange(`{"execute": "qom-set", "arguments": {"path": "` + c.pm() + `", "property": "cpu-hotplug-legacy", "value": false}}`)
	for i := 0; i < 2; i++ {
		c.exchange(`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "cpu1", "socket-id": 0, "core-id": 1, "thread-id": 0}}`)
		c.exchange(`{"execute": "device_del", "arguments": {"id": "cpu1"}}`)
		eject()
		// The events the eject caused come before this reply.
		c.exchange(`{"execute": "query-hotpluggable-cpus"}`)
	}
	c.exchange(`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "cpu1", "socket-id": 0, "core-id": 1, "thread-id": 0}}`)
	return c.out
}

// TestConformanceLegacyAbort: QEMU cannot go back to legacy CPU hotplug;
// asking aborts it before it replies.
func TestConformanceLegacyAbort(t *testing.T) {
	t.Parallel()
	real := StartQEMU(t, "1,maxcpus=2")
	fake := Start(t, &Config{NoGuest: true})
	run := func(socket string) []any {
		c := dialRaw(t, socket)
		defer c.close()
		c.exchange(`{"execute": "qmp_capabilities"}`)
		c.exchange(`{"execute": "qom-set", "arguments": {"path": "` + c.pm() + `", "property": "cpu-hotplug-legacy", "value": true}}`)
		return c.out
	}
	compareReplies(t, run(fake.Path()), run(real.Path))
	select {
	case <-real.Exited():
	case <-time.After(10 * time.Second):
		t.Error("QEMU still running")
	}
}

func compare(t *testing.T, session []string, real *QEMU, fake *Server) {
	t.Helper()
	want := runSession(t, real.Path, session)
	got := runSession(t, fake.Path(), session)
	if len(got) != len(want) {
		t.Fatalf("fake gave %d replies, QEMU %d", len(got), len(want))
	}
	t.Logf("comparing %d replies", len(got))
	for i := range got {
		if !reflect.DeepEqual(got[i], want[i]) {
			g, _ := json.Marshal(got[i])
			w, _ := json.Marshal(want[i])
			sent := "(greeting)"
			if i > 0 {
				sent = session[i-1]
			}
			t.Errorf("%s\n fake: %s\n qemu: %s", sent, g, w)
		}
	}
	if fake.PMPath() != pmPathOf(t, real.Path) {
		t.Errorf("fake PMPath %s, QEMU's PIIX4_PM is %s", fake.PMPath(), pmPathOf(t, real.Path))
	}
}

// compareReplies compares the records of two rawConns.
func compareReplies(t *testing.T, got, want []any) {
	t.Helper()
	g, _ := json.MarshalIndent(got, "", " ")
	w, _ := json.MarshalIndent(want, "", " ")
	if !reflect.DeepEqual(got, want) {
		t.Errorf("fake:\n%s\nqemu:\n%s", g, w)
	}
}

// runSession returns the greeting followed by one normalised reply per
// session line. Events are not expected and fail the test.
func runSession(t *testing.T, socket string, session []string) []any {
	t.Helper()
	c := dialRaw(t, socket)
	defer c.close()
	pm := ""
	for _, line := range session {
		if strings.Contains(line, `"PM"`) || strings.Contains(line, `"SB"`) {
			if pm == "" {
				pm = c.pm()
			}
			line = strings.ReplaceAll(line, `"PM"`, `"`+pm+`"`)
			line = strings.ReplaceAll(line, `"SB"`, `"`+path.Dir(pm)+`"`)
		}
		c.send(line)
		v := c.read()
		if _, ok := v["event"]; ok {
			t.Fatalf("%s: unexpected event %v after %s", socket, v, line)
		}
		c.out = append(c.out, normalise(v))
	}
	return c.out
}

// rawConn is a QMP connection that records what it reads, the same way on
// QEMU and on the fake.
type rawConn struct {
	t      *testing.T
	socket string
	nc     net.Conn
	r      *bufio.Reader
	// out starts with the greeting; exchange appends to it.
	out []any
}

func dialRaw(t *testing.T, socket string) *rawConn {
	t.Helper()
	nc, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	c := &rawConn{t: t, socket: socket, nc: nc, r: bufio.NewReader(nc)}
	c.out = append(c.out, c.read())
	return c
}

func (c *rawConn) close() { c.nc.Close() }

func (c *rawConn) send(line string) {
	c.t.Helper()
	if _, err := c.nc.Write([]byte(line + "\n")); err != nil {
		c.t.Fatalf("%s: %v", c.socket, err)
	}
}

func (c *rawConn) read() map[string]any {
	c.t.Helper()
	line, err := c.r.ReadBytes('\n')
	if err != nil {
		c.t.Fatalf("%s: read: %v", c.socket, err)
	}
	var v map[string]any
	if err := json.Unmarshal(line, &v); err != nil {
		c.t.Fatalf("%s: %q: %v", c.socket, line, err)
	}
	return v
}

// exchange sends line and records every event before the reply (without
// its timestamp) and the reply, or "closed" when the connection ends
// instead.
func (c *rawConn) exchange(line string) {
	c.t.Helper()
	c.send(line)
	for {
		b, err := c.r.ReadBytes('\n')
		if err != nil {
			c.out = append(c.out, "closed")
			return
		}
		var v map[string]any
		if err := json.Unmarshal(b, &v); err != nil {
			c.t.Fatalf("%s: %q: %v", c.socket, b, err)
		}
		delete(v, "timestamp")
		c.out = append(c.out, normalise(v))
		if _, ok := v["event"]; !ok {
			return
		}
	}
}

// pm finds the PIIX4_PM device on a negotiated connection; what it reads
// is not recorded.
func (c *rawConn) pm() string {
	c.t.Helper()
	pm, err := findPM(func(path string) ([]qomEntry, error) {
		cmd, _ := json.Marshal(map[string]any{"execute": "qom-list", "arguments": map[string]any{"path": path}})
		c.send(string(cmd))
		v := c.read()
		if e, ok := v["error"]; ok {
			return nil, fmt.Errorf("%v", e)
		}
		b, _ := json.Marshal(v["return"])
		var list []qomEntry
		err := json.Unmarshal(b, &list)
		return list, err
	})
	if err != nil {
		c.t.Fatalf("%s: %v", c.socket, err)
	}
	return pm
}

func pmPathOf(t *testing.T, socket string) string {
	c := dialRaw(t, socket)
	defer c.close()
	c.exchange(`{"execute": "qmp_capabilities"}`)
	return c.pm()
}

// normalise zeroes host thread ids, the one thing that must differ.
func normalise(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if k == "thread-id" {
				if _, isCPU := x["cpu-index"]; isCPU {
					x[k] = 0.0
					continue
				}
			}
			x[k] = normalise(e)
		}
	case []any:
		for i := range x {
			x[i] = normalise(x[i])
		}
	}
	return v
}
