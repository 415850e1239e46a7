package qmptest

import (
	"bufio"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// QEMUBinary is the emulator StartQEMU runs.
const QEMUBinary = "qemu-system-x86_64"

// QEMU is a real qemu-system-x86_64 started by StartQEMU: -machine pc, TCG,
// no disk and no kernel, so only SeaBIOS runs and no guest OS ever answers
// ACPI requests.
type QEMU struct {
	// Path is the QMP socket for the code under test.
	Path string
	// ControlPath is a second QMP socket for the test itself: QEMU serves
	// one client per socket, so the test cannot share Path.
	ControlPath string
	cmd         *exec.Cmd
	// exited is closed when QEMU has exited; err is its exit status.
	exited chan struct{}
	err    error
	stderr *lockedBuffer
}

// StartQEMU boots a real QEMU with "-smp smp" (e.g. "1,maxcpus=4") and
// waits for its QMP socket. QEMU is killed when the test ends. Tests in this project must
// not skip for a missing QEMU (CI installs it), so a missing binary fails
// the test with what to do.
func StartQEMU(t testing.TB, smp string) *QEMU {
	t.Helper()
	bin, err := exec.LookPath(QEMUBinary)
	if err != nil {
		t.Fatalf("%s not found (%v): install QEMU with `make deps` (Debian package qemu-system-x86)", QEMUBinary, err)
	}
	dir, err := os.MkdirTemp("", "qemu")
	if err != nil {
		t.Fatal(err)
	}
	q := &QEMU{
		Path:        filepath.Join(dir, "qmp.sock"),
		ControlPath: filepath.Join(dir, "ctl.sock"),
		exited:      make(chan struct{}),
		stderr:      &lockedBuffer{},
	}
	q.cmd = exec.Command(bin,
		"-accel", "tcg", "-machine", "pc", "-nodefaults", "-nographic", "-display", "none",
		"-smp", smp, "-m", "128",
		"-qmp", "unix:"+q.Path+",server=on,wait=off",
		"-qmp", "unix:"+q.ControlPath+",server=on,wait=off")
	q.cmd.Stdout = q.stderr
	q.cmd.Stderr = q.stderr
	if err := q.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		q.err = q.cmd.Wait()
		close(q.exited)
	}()
	t.Cleanup(func() {
		q.Kill()
		os.RemoveAll(dir)
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("unix", q.ControlPath)
		if err == nil {
			c.Close()
			return q
		}
		select {
		case <-q.exited:
			t.Fatalf("QEMU exited before opening %s: %v\n%s", q.Path, q.err, q.stderr)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("QEMU did not open its QMP socket %s within 20s\n%s", q.Path, q.stderr)
		}
	}
}

// EnableCPUHotUnplug does what a booting guest's ACPI code does: switch
// QEMU's CPU hotplug to the modern interface (qom-set cpu-hotplug-legacy
// false on the PIIX4_PM device). Without it QEMU refuses every CPU
// device_del; with it and no guest OS, device_del is accepted and never
// completes.
func (q *QEMU) EnableCPUHotUnplug(t testing.TB) {
	t.Helper()
	var pm string
	var list []struct{ Name, Type string }
	q.Control(t, `{"execute": "qom-list", "arguments": {"path": "/machine/unattached"}}`, &list)
	for _, e := range list {
		if e.Type == "child<PIIX4_PM>" {
			pm = "/machine/unattached/" + e.Name
		}
	}
	if pm == "" {
		t.Fatalf("QEMU %s: no PIIX4_PM device under /machine/unattached", q.ControlPath)
	}
	cmd, _ := json.Marshal(map[string]any{"execute": "qom-set", "arguments": map[string]any{"path": pm, "property": "cpu-hotplug-legacy", "value": false}})
	q.Control(t, string(cmd), nil)
}

// Control sends one raw QMP line on ControlPath, on a connection of its
// own, and decodes the "return" member into result. It negotiates
// capabilities first unless line is qmp_capabilities itself.
func (q *QEMU) Control(t testing.TB, line string, result any) {
	t.Helper()
	c, err := net.Dial("unix", q.ControlPath)
	if err != nil {
		t.Fatalf("QEMU control socket: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	read := func() map[string]json.RawMessage {
		for {
			b, err := r.ReadBytes('\n')
			if err != nil {
				t.Fatalf("QEMU control socket: %v", err)
			}
			var m map[string]json.RawMessage
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatalf("QEMU control socket: %q: %v", b, err)
			}
			if _, ev := m["event"]; !ev {
				return m
			}
		}
	}
	read() // greeting
	c.Write([]byte(`{"execute": "qmp_capabilities"}` + "\n"))
	read()
	if strings.Contains(line, `"qmp_capabilities"`) {
		return
	}
	c.Write([]byte(line + "\n"))
	m := read()
	if e, ok := m["error"]; ok {
		t.Fatalf("QEMU %s: %s: %s", q.ControlPath, line, e)
	}
	if result != nil {
		if err := json.Unmarshal(m["return"], result); err != nil {
			t.Fatalf("QEMU %s: %s: decode %s: %v", q.ControlPath, line, m["return"], err)
		}
	}
}

// Kill stops QEMU and waits for it to exit. It is idempotent.
func (q *QEMU) Kill() {
	select {
	case <-q.exited:
		return
	default:
	}
	q.cmd.Process.Kill()
	<-q.exited
}

// Exited is closed when QEMU has exited.
func (q *QEMU) Exited() <-chan struct{} { return q.exited }

// Output is what QEMU printed.
func (q *QEMU) Output() string { return q.stderr.String() }

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
