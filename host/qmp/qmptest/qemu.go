package qmptest

import (
	"bufio"
	"encoding/json"
	"fmt"
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
	return StartQEMUWith(t, smp, "128")
}

// StartQEMUWith is StartQEMU with QEMU's -m (e.g. "size=128M,maxmem=1G")
// and extra arguments (memory devices).
func StartQEMUWith(t testing.TB, smp, mem string, extra ...string) *QEMU {
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
	q.cmd = exec.Command(bin, append([]string{
		"-accel", "tcg", "-machine", "pc", "-nodefaults", "-nographic", "-display", "none",
		"-smp", smp, "-m", mem,
		"-qmp", "unix:" + q.Path + ",server=on,wait=off",
		"-qmp", "unix:" + q.ControlPath + ",server=on,wait=off"}, extra...)...)
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
// completes unless the test plays the guest with EjectCPU.
func (q *QEMU) EnableCPUHotUnplug(t testing.TB) {
	t.Helper()
	cmd, _ := json.Marshal(map[string]any{"execute": "qom-set", "arguments": map[string]any{"path": q.PMPath(t), "property": "cpu-hotplug-legacy", "value": false}})
	q.Control(t, string(cmd), nil)
}

// PMPath finds the VM's PIIX4_PM device, which owns cpu-hotplug-legacy, by
// its type (see findPM): QEMU 7.2 had it at /machine/unattached/device[17+N]
// and 10.0 at /machine/unattached/device[2+N]/pm for -smp N.
func (q *QEMU) PMPath(t testing.TB) string {
	t.Helper()
	c := q.dialControl(t)
	defer c.close()
	pm, err := findPM(func(path string) ([]qomEntry, error) {
		var list []qomEntry
		cmd, _ := json.Marshal(map[string]any{"execute": "qom-list", "arguments": map[string]any{"path": path}})
		c.exec(t, string(cmd), &list)
		return list, nil
	})
	if err != nil {
		t.Fatalf("QEMU %s: %v", q.ControlPath, err)
	}
	return pm
}

// EjectCPU does what a Linux guest's ACPI _EJ0 method does once it has
// offlined a CPU, without a guest: through HMP's "o" (I/O port write) it
// selects the CPU in slot (QEMU's possible_cpus index, i.e. ascending APIC
// id: hypervisor.Slot.Index) in the modern CPU hotplug register block and
// sets its eject bit (QEMU docs/specs/acpi_cpu_hotplug.rst). QEMU runs the
// same register handler as for the guest's write, unplugs the CPU and sends
// DEVICE_DELETED; it sends no ACPI_DEVICE_OST, which a guest's _OST would
// cause. It needs EnableCPUHotUnplug first (the legacy interface has no eject
// register) and the default multi-threaded TCG: with -accel
// tcg,thread=single QEMU 10.0.2 deadlocks on it.
func (q *QEMU) EjectCPU(t testing.TB, slot int) {
	t.Helper()
	c := q.dialControl(t)
	defer c.close()
	for _, hmp := range []string{
		fmt.Sprintf("o /w 0x%x %d", cpuHotplugIOBase+cpuSelectorOffset, slot),
		fmt.Sprintf("o /b 0x%x 0x%x", cpuHotplugIOBase+cpuFlagsOffset, cpuFlagEject),
	} {
		var out string
		cmd, _ := json.Marshal(map[string]any{"execute": "human-monitor-command", "arguments": map[string]any{"command-line": hmp}})
		c.exec(t, string(cmd), &out)
		if out != "" {
			t.Fatalf("QEMU %s: HMP %q: %s", q.ControlPath, hmp, out)
		}
	}
}

// QEMU's modern ACPI CPU hotplug registers on -machine pc
// (PIIX4_CPU_HOTPLUG_IO_BASE; docs/specs/acpi_cpu_hotplug.rst): a 32-bit CPU
// selector, then a byte of flags whose bit 3 ejects the selected CPU.
const (
	cpuHotplugIOBase  = 0xaf00
	cpuSelectorOffset = 0
	cpuFlagsOffset    = 4
	cpuFlagEject      = 1 << 3
)

// qomEntry is one entry of qom-list: a property, or a child object when
// Type is "child<TYPE>".
type qomEntry struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// pmType is the QOM type of -machine pc's ACPI power-management function.
const pmType = "PIIX4_PM"

// findPM walks the QOM tree from /machine breadth first, one list (qom-list)
// per object, and returns the path of the PIIX4_PM device. It searches by
// type because the device's place is not stable across QEMU releases. IRQs
// and memory regions, hundreds of leaves, are not entered: on QEMU 10.0.2
// the walk takes about 30 qom-lists.
func findPM(list func(path string) ([]qomEntry, error)) (string, error) {
	queue := []string{"/machine"}
	for len(queue) > 0 {
		path := queue[0]
		queue = queue[1:]
		entries, err := list(path)
		if err != nil {
			return "", fmt.Errorf("qom-list %s: %w", path, err)
		}
		for _, e := range entries {
			typ, ok := strings.CutPrefix(e.Type, "child<")
			if !ok {
				continue
			}
			child := path + "/" + e.Name
			switch strings.TrimSuffix(typ, ">") {
			case pmType:
				return child, nil
			case "irq", "memory-region":
			default:
				queue = append(queue, child)
			}
		}
	}
	return "", fmt.Errorf("no %s device under /machine (is this -machine pc?)", pmType)
}

// Control sends one raw QMP line on ControlPath, on a connection of its
// own, and decodes the "return" member into result. It negotiates
// capabilities first unless line is qmp_capabilities itself.
func (q *QEMU) Control(t testing.TB, line string, result any) {
	t.Helper()
	if strings.Contains(line, `"qmp_capabilities"`) {
		q.dialControl(t).close()
		return
	}
	c := q.dialControl(t)
	defer c.close()
	c.exec(t, line, result)
}

// control is a negotiated connection to ControlPath.
type control struct {
	q  *QEMU
	nc net.Conn
	r  *bufio.Reader
}

func (q *QEMU) dialControl(t testing.TB) *control {
	t.Helper()
	nc, err := net.Dial("unix", q.ControlPath)
	if err != nil {
		t.Fatalf("QEMU control socket: %v", err)
	}
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	c := &control{q: q, nc: nc, r: bufio.NewReader(nc)}
	c.read(t) // greeting
	c.exec(t, `{"execute": "qmp_capabilities"}`, nil)
	return c
}

func (c *control) close() { c.nc.Close() }

// read returns the next message that is not an event.
func (c *control) read(t testing.TB) map[string]json.RawMessage {
	t.Helper()
	for {
		b, err := c.r.ReadBytes('\n')
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

func (c *control) exec(t testing.TB, line string, result any) {
	t.Helper()
	if _, err := c.nc.Write([]byte(line + "\n")); err != nil {
		t.Fatalf("QEMU control socket: %v", err)
	}
	m := c.read(t)
	if e, ok := m["error"]; ok {
		t.Fatalf("QEMU %s: %s: %s", c.q.ControlPath, line, e)
	}
	if result != nil {
		if err := json.Unmarshal(m["return"], result); err != nil {
			t.Fatalf("QEMU %s: %s: decode %s: %v", c.q.ControlPath, line, m["return"], err)
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
