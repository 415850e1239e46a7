package testvm

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Port names of the guest's virtio-serial ports.
const (
	AgentPortName   = "org.hotplugheaven.0"
	ControlPortName = "org.hotplugheaven.test"
)

// Config describes one guest.
type Config struct {
	// Name is the guest's hostname and appears in errors; default "testvm".
	Name string
	// Kernel and Initramfs come from EnsureKernel and BuildInitramfs.
	Kernel    Kernel
	Initramfs string
	// CPUs at boot (default 1) and hot-plug slots in total (default CPUs).
	CPUs, MaxCPUs int
	// MemoryMB defaults to 256.
	MemoryMB int
	// MaxMemoryMB, when above MemoryMB, is the most memory devices may
	// add (QEMU's maxmem): room for a virtio-mem device in ExtraArgs.
	MaxMemoryMB int
	// Dir receives the console log, QEMU's own log and, when the path is
	// short enough, the sockets. "" means a new temporary directory that
	// Stop removes unless HOTPLUG_TESTVM_KEEP is set.
	Dir string
	// KernelArgs are appended to the kernel command line.
	KernelArgs string
	// Accel is "tcg" or "kvm"; "" means $HOTPLUG_QEMU_ACCEL, else "tcg"
	// (standard kernels hang at boot under KVM on some hosts).
	Accel string
	// ExtraArgs are appended to QEMU's command line.
	ExtraArgs []string
}

// maxSocketPath keeps unix socket paths inside sun_path (108 bytes with the
// terminating NUL) with a margin.
const maxSocketPath = 100

// VM is a running QEMU guest. Its methods are safe for concurrent use.
type VM struct {
	cfg       Config
	dir       string
	sockDir   string
	removeDir []string // directories Stop deletes
	args      []string

	cmd     *exec.Cmd
	exited  chan struct{} // closed once QEMU has been reaped
	waitErr error         // valid after exited is closed

	stopOnce sync.Once
	stopErr  error

	ctl controlConn
}

// Start launches QEMU and returns once it is running and its QMP sockets
// exist. The guest is still booting: call WaitReady before Run. Always call
// Stop (t.Cleanup(func() { vm.Stop() })).
func Start(ctx context.Context, cfg Config) (*VM, error) {
	qemu, err := lookTool("qemu-system-x86_64", "qemu-system-x86")
	if err != nil {
		return nil, err
	}
	if cfg.Name == "" {
		cfg.Name = "testvm"
	}
	if strings.ContainsAny(cfg.Name, " \t\n,=/") {
		return nil, fmt.Errorf("testvm: Name %q: no spaces, commas, slashes or '='", cfg.Name)
	}
	if cfg.CPUs <= 0 {
		cfg.CPUs = 1
	}
	if cfg.MaxCPUs < cfg.CPUs {
		cfg.MaxCPUs = cfg.CPUs
	}
	if cfg.MemoryMB <= 0 {
		cfg.MemoryMB = 256
	}
	if cfg.Accel == "" {
		cfg.Accel = os.Getenv("HOTPLUG_QEMU_ACCEL")
	}
	if cfg.Accel == "" {
		cfg.Accel = "tcg"
	}
	for _, f := range []struct{ what, path string }{{"kernel", cfg.Kernel.Vmlinuz}, {"initramfs", cfg.Initramfs}} {
		if f.path == "" {
			return nil, fmt.Errorf("testvm %s: no %s given (EnsureKernel, BuildInitramfs)", cfg.Name, f.what)
		}
		if _, err := os.Stat(f.path); err != nil {
			return nil, fmt.Errorf("testvm %s: %s: %w", cfg.Name, f.what, err)
		}
	}

	v := &VM{cfg: cfg, exited: make(chan struct{})}
	if err := v.makeDirs(); err != nil {
		return nil, err
	}
	v.args = v.qemuArgs()
	if err := v.launch(qemu); err != nil {
		v.cleanupDirs()
		return nil, err
	}
	if err := v.waitSockets(ctx); err != nil {
		v.Stop()
		return nil, err
	}
	return v, nil
}

func (v *VM) makeDirs() error {
	v.dir = v.cfg.Dir
	if v.dir == "" {
		d, err := os.MkdirTemp("", "testvm-"+v.cfg.Name+"-")
		if err != nil {
			return fmt.Errorf("testvm %s: %w", v.cfg.Name, err)
		}
		v.dir = d
		if os.Getenv("HOTPLUG_TESTVM_KEEP") == "" {
			v.removeDir = append(v.removeDir, d)
		}
	} else if err := os.MkdirAll(v.dir, 0o755); err != nil {
		return fmt.Errorf("testvm %s: %w", v.cfg.Name, err)
	}
	abs, err := filepath.Abs(v.dir)
	if err != nil {
		return fmt.Errorf("testvm %s: %w", v.cfg.Name, err)
	}
	v.dir = abs
	v.sockDir = v.dir
	if len(filepath.Join(v.dir, "control.sock")) > maxSocketPath-4 {
		d, err := os.MkdirTemp("/tmp", "tvm")
		if err != nil {
			return fmt.Errorf("testvm %s: short socket dir: %w", v.cfg.Name, err)
		}
		v.sockDir = d
		v.removeDir = append(v.removeDir, d)
	}
	// Stale sockets from a previous run in the same Dir would make the
	// readiness check below pass too early.
	for _, s := range []string{v.QMPSocket(), v.TestQMPSocket(), v.AgentSocket(), v.controlSocket()} {
		os.Remove(s)
	}
	os.Remove(v.ConsoleLog())
	return nil
}

func (v *VM) cleanupDirs() {
	for _, d := range v.removeDir {
		os.RemoveAll(d)
	}
}

// qemuArgs is the full command line after the binary name.
func (v *VM) qemuArgs() []string {
	c := v.cfg
	sock := func(id, path string) string {
		return "socket,id=" + id + ",path=" + path + ",server=on,wait=off"
	}
	append_ := "console=ttyS0 panic=-1 testvm.name=" + c.Name
	if c.KernelArgs != "" {
		append_ += " " + c.KernelArgs
	}
	args := []string{
		"-name", c.Name + ",debug-threads=on",
		"-machine", "pc",
		"-accel", c.Accel,
		"-m", memArg(c),
		"-smp", fmt.Sprintf("%d,maxcpus=%d", c.CPUs, c.MaxCPUs),
		"-nodefaults", "-nographic", "-display", "none", "-no-reboot",
		"-kernel", c.Kernel.Vmlinuz,
		"-initrd", c.Initramfs,
		"-append", append_,
		"-serial", "file:" + v.ConsoleLog(),
		"-qmp", "unix:" + v.QMPSocket() + ",server=on,wait=off",
		"-qmp", "unix:" + v.TestQMPSocket() + ",server=on,wait=off",
		"-device", "virtio-serial-pci,id=vser0",
		"-chardev", sock("agent", v.AgentSocket()),
		"-device", "virtserialport,bus=vser0.0,chardev=agent,name=" + AgentPortName,
		"-chardev", sock("control", v.controlSocket()),
		"-device", "virtserialport,bus=vser0.0,chardev=control,name=" + ControlPortName,
	}
	return append(args, c.ExtraArgs...)
}

// launch starts QEMU from a goroutine that keeps its OS thread locked for
// QEMU's whole life. Pdeathsig fires when the *thread* that forked the child
// exits (go.dev/issue/27505), and the Go runtime may end an idle thread;
// pinning the goroutine to its thread until Wait returns means QEMU is
// killed when the test binary dies and not before.
func (v *VM) launch(qemu string) error {
	logf, err := os.OpenFile(v.QEMULog(), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("testvm %s: %w", v.cfg.Name, err)
	}
	v.cmd = exec.Command(qemu, v.args...)
	v.cmd.Dir = v.dir
	v.cmd.Stdout = logf
	v.cmd.Stderr = logf
	v.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}

	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer logf.Close()
		if err := v.cmd.Start(); err != nil {
			started <- err
			close(v.exited)
			return
		}
		started <- nil
		v.waitErr = v.cmd.Wait()
		close(v.exited)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("testvm %s: start %s: %w", v.cfg.Name, qemu, err)
	}
	return nil
}

// waitSockets returns once QEMU has created its QMP sockets, i.e. parsed its
// command line and set up its devices.
func (v *VM) waitSockets(ctx context.Context) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ok := true
		for _, s := range []string{v.QMPSocket(), v.TestQMPSocket(), v.controlSocket()} {
			if _, err := os.Stat(s); err != nil {
				ok = false
			}
		}
		if ok {
			return nil
		}
		select {
		case <-v.exited:
			return v.exitError("exited during start-up")
		case <-ctx.Done():
			return fmt.Errorf("testvm %s: waiting for QEMU's sockets: %w\n%s", v.cfg.Name, ctx.Err(), v.diagnostics())
		case <-tick.C:
		}
	}
}

// exitError describes an unexpected QEMU exit with its logs.
func (v *VM) exitError(when string) error {
	return fmt.Errorf("testvm %s: QEMU %s (%s)\n%s", v.cfg.Name, when, v.exitStatus(), v.diagnostics())
}

// exitStatus describes how QEMU ended; call it only after exited is closed.
func (v *VM) exitStatus() string {
	if v.waitErr == nil {
		return "exit status 0"
	}
	return v.waitErr.Error()
}

// diagnostics is QEMU's own output and the console tail, for error messages.
func (v *VM) diagnostics() string {
	var b strings.Builder
	if q, err := os.ReadFile(v.QEMULog()); err == nil && len(strings.TrimSpace(string(q))) > 0 {
		fmt.Fprintf(&b, "--- QEMU output (%s) ---\n%s\n", v.QEMULog(), strings.TrimSpace(tailLines(string(q), 20)))
	}
	fmt.Fprintf(&b, "--- console, last 40 lines (full log: %s) ---\n%s", v.ConsoleLog(), v.ConsoleTail(40))
	return b.String()
}

// PID is QEMU's process id.
func (v *VM) PID() int { return v.cmd.Process.Pid }

// QMPSocket is the QMP socket for the code under test (the actuator).
func (v *VM) QMPSocket() string { return filepath.Join(v.sockDir, "qmp.sock") }

// TestQMPSocket is a second QMP monitor reserved for the test itself.
func (v *VM) TestQMPSocket() string { return filepath.Join(v.sockDir, "qmp-test.sock") }

// AgentSocket is the host end of the guest's org.hotplugheaven.0 port. QEMU
// listens; the actuator connects to it as a client.
func (v *VM) AgentSocket() string { return filepath.Join(v.sockDir, "agent.sock") }

func (v *VM) controlSocket() string { return filepath.Join(v.sockDir, "control.sock") }

// ConsoleLog is the path of the guest's ttyS0 output.
func (v *VM) ConsoleLog() string { return filepath.Join(v.dir, "console.log") }

// QEMULog is the path of QEMU's own stdout and stderr.
func (v *VM) QEMULog() string { return filepath.Join(v.dir, "qemu.log") }

// Dir is the directory holding the logs.
func (v *VM) Dir() string { return v.dir }

// Args is QEMU's command line, binary name excluded.
func (v *VM) Args() []string { return append([]string(nil), v.args...) }

// Exited is closed once QEMU has exited and been reaped.
func (v *VM) Exited() <-chan struct{} { return v.exited }

// ConsoleTail returns the last n lines of the console log, for failure
// messages.
func (v *VM) ConsoleTail(n int) string {
	b, err := os.ReadFile(v.ConsoleLog())
	if err != nil {
		return fmt.Sprintf("(no console log: %v)", err)
	}
	if len(b) == 0 {
		return "(console log is empty: the kernel printed nothing)"
	}
	return tailLines(string(b), n)
}

// tailLines returns the last n lines of s.
func tailLines(s string, n int) string {
	s = strings.TrimRight(s, "\n")
	if n <= 0 {
		return ""
	}
	i := len(s)
	for ; n > 0; n-- {
		j := strings.LastIndexByte(s[:i], '\n')
		if j < 0 {
			return s
		}
		i = j
	}
	return s[i+1:]
}

// Stop ends the guest: "quit" over the test QMP socket, then SIGKILL to
// QEMU's process group if it has not exited within a few seconds. It always
// reaps QEMU, removes the directories it created, and is idempotent.
func (v *VM) Stop() error {
	v.stopOnce.Do(func() {
		// The control connection is closed only after QEMU is gone: a
		// Run in progress holds its lock and returns once QEMU exits.
		defer v.ctl.close()
		select {
		case <-v.exited:
		default:
			if err := v.qmpQuit(2 * time.Second); err == nil {
				select {
				case <-v.exited:
				case <-time.After(5 * time.Second):
				}
			}
			select {
			case <-v.exited:
			default:
				// Negative pid: the whole group (Setpgid made QEMU
				// its leader).
				if err := syscall.Kill(-v.cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
					v.stopErr = fmt.Errorf("testvm %s: kill QEMU (pid %d): %w", v.cfg.Name, v.cmd.Process.Pid, err)
				}
				<-v.exited
			}
		}
		v.cleanupDirs()
	})
	return v.stopErr
}

// qmpQuit sends "quit" on the test QMP socket. It is the one QMP command
// this package speaks. If the test holds that socket, QEMU will not serve a
// second client and this times out; Stop then kills QEMU.
func (v *VM) qmpQuit(timeout time.Duration) error {
	conn, err := net.DialTimeout("unix", v.TestQMPSocket(), timeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	r := bufio.NewReader(conn)
	if _, err := r.ReadBytes('\n'); err != nil { // greeting
		return err
	}
	for _, cmd := range []string{"qmp_capabilities", "quit"} {
		req, _ := json.Marshal(map[string]string{"execute": cmd})
		if _, err := conn.Write(append(req, '\n')); err != nil {
			return err
		}
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				return err
			}
			var msg struct {
				Return json.RawMessage `json:"return"`
				Error  json.RawMessage `json:"error"`
			}
			if json.Unmarshal(line, &msg) == nil && (msg.Return != nil || msg.Error != nil) {
				if msg.Error != nil {
					return fmt.Errorf("qmp %s: %s", cmd, msg.Error)
				}
				break
			}
		}
	}
	return nil
}

// memArg is QEMU's -m: the boot memory, and maxmem when memory devices
// may add more.
func memArg(c Config) string {
	if c.MaxMemoryMB > c.MemoryMB {
		return fmt.Sprintf("size=%dM,maxmem=%dM", c.MemoryMB, c.MaxMemoryMB)
	}
	return strconv.Itoa(c.MemoryMB)
}
