package qmptest

import (
	"bufio"
	"encoding/json"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"
)

// session is one scripted QMP exchange: each line is sent as is and the
// reply is recorded. It runs against the fake and against real QEMU, and
// TestConformance requires identical replies, so the fake cannot drift from
// QEMU unnoticed. pm is replaced by the PIIX4_PM path found with qom-list.
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
	`{"execute": "device_add", "arguments": {"driver": "qemu64-x86_64-cpu", "id": "", "socket-id": 0, "core-id": 3, "thread-id": 0}}`,
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
	// qom-get.
	`{"execute": "qom-get", "arguments": {"path": "/machine/peripheral/nosuch", "property": "apic-id"}}`,
	`{"execute": "qom-get", "arguments": {"path": "nosuch", "property": "apic-id"}}`,
	`{"execute": "qom-get", "arguments": {"path": "/machine/unattached/device[0]", "property": "nosuch"}}`,
	`{"execute": "qom-get", "arguments": {"path": "/machine", "property": "apic-id"}}`,
	`{"execute": "qom-get", "arguments": {"path": "/machine/unattached/device[0]"}}`,
	// Protocol errors.
	`{"execute": "nosuch-cmd", "id": 13}`,
	`{"execute": "query-hotpluggable-cpus", "arguments": {"x": 1}}`,
	`{"execute": "query-cpus-fast", "id": "s", "extra": 1}`,
	`{}`,
	`[1]`,
	`{"execute": 1}`,
	`{"execute": "device_del", "arguments": [1]}`,
	`{"execute": "query-status"}`,
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

func TestConformanceTopology(t *testing.T) {
	t.Parallel()
	real := StartQEMU(t, "2,sockets=2,dies=2,cores=1,threads=2,maxcpus=8")
	fake := Start(t, &Config{BootCPUs: 2, Sockets: 2, Dies: 2, Cores: 1, Threads: 2, NoGuest: true})
	compare(t, topologySession, real, fake)
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

// runSession returns the greeting followed by one normalised reply per
// session line. Events are not expected and fail the test.
func runSession(t *testing.T, path string, session []string) []any {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	read := func() map[string]any {
		line, err := r.ReadBytes('\n')
		if err != nil {
			t.Fatalf("%s: read: %v", path, err)
		}
		var v map[string]any
		if err := json.Unmarshal(line, &v); err != nil {
			t.Fatalf("%s: %q: %v", path, line, err)
		}
		return v
	}
	out := []any{read()}
	pm := ""
	for _, line := range session {
		if strings.Contains(line, `"PM"`) {
			if pm == "" {
				pm = findPM(t, c, read)
			}
			line = strings.ReplaceAll(line, `"PM"`, `"`+pm+`"`)
		}
		if _, err := c.Write([]byte(line + "\n")); err != nil {
			t.Fatal(err)
		}
		v := read()
		if _, ok := v["event"]; ok {
			t.Fatalf("%s: unexpected event %v after %s", path, v, line)
		}
		out = append(out, normalise(v))
	}
	return out
}

func findPM(t *testing.T, c net.Conn, read func() map[string]any) string {
	c.Write([]byte(`{"execute": "qom-list", "arguments": {"path": "/machine/unattached"}}` + "\n"))
	v := read()
	list, _ := v["return"].([]any)
	for _, e := range list {
		m, _ := e.(map[string]any)
		if m["type"] == "child<PIIX4_PM>" {
			return "/machine/unattached/" + m["name"].(string)
		}
	}
	t.Fatalf("no PIIX4_PM in qom-list /machine/unattached: %v", v)
	return ""
}

func pmPathOf(t *testing.T, path string) string {
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	read := func() map[string]any {
		line, err := r.ReadBytes('\n')
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		json.Unmarshal(line, &v)
		return v
	}
	read()
	c.Write([]byte(`{"execute": "qmp_capabilities"}` + "\n"))
	read()
	return findPM(t, c, read)
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
