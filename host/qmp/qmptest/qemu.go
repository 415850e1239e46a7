package qmptest

import (
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
	// Path is the QMP socket.
	Path string
	cmd  *exec.Cmd
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
	q := &QEMU{Path: filepath.Join(dir, "qmp.sock"), exited: make(chan struct{}), stderr: &lockedBuffer{}}
	q.cmd = exec.Command(bin,
		"-accel", "tcg", "-machine", "pc", "-nodefaults", "-nographic", "-display", "none",
		"-smp", smp, "-m", "128",
		"-qmp", "unix:"+q.Path+",server=on,wait=off")
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
		c, err := net.Dial("unix", q.Path)
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
