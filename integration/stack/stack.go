// Package stack runs the whole product for end-to-end tests and the demo: a
// real QEMU guest (integration/testvm) with the static hotplug-agent started
// by its init, and the hotplug-actuator binary on the host driving it over
// QMP and virtio-serial. It observes from the outside — the guest's sysfs
// through the control shell, QEMU's state through the test QMP socket, the
// event log file — never through the actuator's memory.
//
// It is test and demo support: no shipped binary imports it.
package stack

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotplugheaven/hotplug/host/eventlog"
	"github.com/hotplugheaven/hotplug/host/qmp"
	"github.com/hotplugheaven/hotplug/integration/testvm"
	"github.com/hotplugheaven/hotplug/proto"
)

// Options configures a stack. Zero fields take defaults.
type Options struct {
	// Dir holds binaries, configuration, event log and guest logs.
	Dir string
	// MaxCPUs is the guest's hot-plug slot count (default 4).
	MaxCPUs int
	// Policy is the [vm.policy] table of the actuator configuration, TOML.
	Policy string
	// AgentArgs are extra hotplug-agent flags.
	AgentArgs string
	// NoAgent boots the guest without the agent; its init onlines
	// hot-added CPUs itself, as a udev rule would (black-box tests).
	NoAgent bool
	// VMKeys are extra TOML lines for the actuator's [[vm]] table.
	VMKeys string
	// Files are put into the guest's initramfs, next to the agent.
	Files map[string]testvm.File
	// Before are shell lines run in the guest before the agent starts.
	Before string
	// ActuatorLog receives the actuator's log (default: a file in Dir).
	ActuatorLog io.Writer
	// Logf reports progress (default: discard).
	Logf func(format string, args ...any)
	// Dashboard also serves the API on a free loopback TCP port with a
	// fresh token (see Stack.DashboardURL).
	Dashboard bool
	// Memory, when set, is the [vm.memory] table (TOML) and gives the
	// guest a virtio-mem device of MemoryDeviceMB (default 2048) beside its
	// 512 MiB of boot memory, and a balloon; the kernel onlines what the
	// device adds as movable memory, so that it can be unplugged again.
	Memory         string
	MemoryDeviceMB int
	// Config is extra TOML for the actuator configuration's top level
	// (e.g. host_memory_budget).
	Config string
}

// BootMemoryMB is the guest's boot memory.
const BootMemoryMB = 512

// DefaultPolicy is quick enough for a test under TCG emulation and still
// the engine's real rules: 1 s samples, 3 of 5 above 80 %, scale down after
// 5 low samples, 5 s cooldowns.
const DefaultPolicy = `
min_vcpus = 1
max_vcpus = 4
interval = "1s"
k = 3
n = 5
window = 10
down_samples = 5
cooldown_up = "5s"
cooldown_down = "5s"
`

// udevOnline does what the udev rule SUBSYSTEM=="cpu", ACTION=="add",
// ATTR{online}="1" does on a full distribution: online a CPU when it
// appears. Only CPUs new since the last look are touched, so a CPU the
// kernel is offlining for an ACPI eject is left alone.
const udevOnline = `seen=" "
for d in /sys/devices/system/cpu/cpu[0-9]*; do seen="$seen${d##*cpu} "; done
while :; do
	for d in /sys/devices/system/cpu/cpu[0-9]*; do
		n=${d##*cpu}
		case "$seen" in *" $n "*) continue ;; esac
		seen="$seen$n "
		[ -f "$d/online" ] && [ "$(cat "$d/online")" = 0 ] && echo 1 > "$d/online" && echo "udev-like: onlined cpu$n"
	done
	# forget CPUs that went away, so a re-plugged one is onlined again
	for n in $seen; do [ -d /sys/devices/system/cpu/cpu$n ] || seen=$(echo "$seen" | sed "s/ $n / /"); done
	sleep 0.3
done
`

// Stack is a running guest and actuator.
type Stack struct {
	VM       *testvm.VM
	EventLog string
	Config   string
	opts     Options

	actuator    *exec.Cmd
	actuatorBin string
	actDone     chan error
	logFile     *os.File

	qmpMu sync.Mutex
	qmp   *qmp.Client

	loadMu sync.Mutex
	load   []testvm.Job

	// APIBase and APIToken are the TCP API (Options.Dashboard), else empty.
	APIBase, APIToken string
}

// DashboardURL opens the live dashboard already authorised: the token
// rides in the URL's fragment, which browsers never send to the server (so
// it is in no server or proxy log), and the page moves it into its
// session storage and drops it from the address bar and history at once.
func (s *Stack) DashboardURL() string {
	if s.APIBase == "" {
		return ""
	}
	return s.APIBase + "/#token=" + s.APIToken
}

// RepoRoot finds the module root by walking up to go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.Contains(b, []byte("module github.com/hotplugheaven/hotplug")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the hotplugheaven repository (no go.mod found)")
		}
		dir = parent
	}
}

// Build compiles the two static binaries into dir.
func Build(ctx context.Context, dir string) (agent, actuator string, err error) {
	root, err := RepoRoot()
	if err != nil {
		return "", "", err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	agent, actuator = filepath.Join(dir, "hotplug-agent"), filepath.Join(dir, "hotplug-actuator")
	for bin, pkg := range map[string]string{agent: "./guest/cmd/hotplug-agent", actuator: "./host/cmd/hotplug-actuator"} {
		cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-ldflags", "-X main.version=e2e", "-o", bin, pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	return agent, actuator, nil
}

// Start builds the binaries, boots the guest with the agent and starts the
// actuator. Stop it with Stop.
func Start(ctx context.Context, opts Options) (*Stack, error) {
	if opts.MaxCPUs == 0 {
		opts.MaxCPUs = 4
	}
	if opts.Policy == "" {
		opts.Policy = DefaultPolicy
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	s := &Stack{opts: opts, EventLog: filepath.Join(opts.Dir, "events.jsonl"), Config: filepath.Join(opts.Dir, "actuator.toml")}
	agentBin, actuatorBin, err := Build(ctx, opts.Dir)
	if err != nil {
		return nil, err
	}
	opts.Logf("built hotplug-agent and hotplug-actuator")
	kernel, err := testvm.EnsureKernel(ctx, "")
	if err != nil {
		return nil, err
	}
	// The agent logs to the console so a failed test shows what it did.
	start := fmt.Sprintf("exec /usr/bin/hotplug-agent --transport virtio-serial --interval 1s --log-level debug %s 2>&1\n", opts.AgentArgs)
	if opts.NoAgent {
		start = udevOnline
	}
	files := map[string]testvm.File{
		"/usr/bin/hotplug-agent": {HostPath: agentBin, Mode: 0o755},
		"/etc/testvm/start.sh":   {Data: []byte(opts.Before + "\n" + start), Mode: 0o755},
	}
	for p, f := range opts.Files {
		files[p] = f
	}
	vmCfg := testvm.Config{Name: "hotplug-e2e", Kernel: kernel, CPUs: 1, MaxCPUs: opts.MaxCPUs, MemoryMB: BootMemoryMB}
	var modules []string
	if opts.Memory != "" {
		if opts.MemoryDeviceMB == 0 {
			opts.MemoryDeviceMB = 2048
		}
		modules = []string{"virtio_mem", "virtio_balloon"}
		vmCfg.MaxMemoryMB = BootMemoryMB + opts.MemoryDeviceMB
		vmCfg.KernelArgs = "memhp_default_state=online_movable"
		vmCfg.ExtraArgs = []string{"-object", fmt.Sprintf("memory-backend-ram,id=vmem0,size=%dM,reserve=off", opts.MemoryDeviceMB),
			"-device", "virtio-mem-pci,id=vm0,memdev=vmem0,block-size=2M,requested-size=0",
			"-device", "virtio-balloon-pci,id=balloon0,free-page-reporting=on"}
		files["/etc/testvm/start.sh"] = testvm.File{Data: []byte("modprobe virtio_mem; modprobe virtio_balloon\n" + opts.Before + "\n" + start), Mode: 0o755}
	}
	img, err := testvm.BuildInitramfs(ctx, testvm.InitramfsOptions{Kernel: kernel, Files: files, Modules: modules})
	if err != nil {
		return nil, err
	}
	vmDir := filepath.Join(opts.Dir, "vm")
	if err := os.MkdirAll(vmDir, 0o755); err != nil {
		return nil, err
	}
	vmCfg.Initramfs, vmCfg.Dir = img, vmDir
	s.VM, err = testvm.Start(ctx, vmCfg)
	if err != nil {
		return nil, err
	}
	bootStart := time.Now()
	if err := s.VM.WaitReady(ctx); err != nil {
		s.VM.Stop()
		return nil, err
	}
	opts.Logf("guest booted in %v (kernel %s, %d hot-plug slots)", time.Since(bootStart).Round(100*time.Millisecond), kernel.Version, opts.MaxCPUs)

	apiTCP := ""
	if opts.Dashboard {
		if apiTCP, err = s.dashboardAPI(opts.Dir); err != nil {
			s.VM.Stop()
			return nil, err
		}
	}
	cfg := fmt.Sprintf(`event_log = %q
log_level = "debug"
%s

[api]
socket = %q
%s

[[vm]]
name = "guest"
qmp = %q
unplug_timeout = "60s"
command_timeout = "60s"
%s

[vm.channel]
type = "virtio-serial"
path = %q

[vm.policy]
%s
%s`, s.EventLog, opts.Config, filepath.Join(opts.Dir, "api.sock"), apiTCP, s.VM.QMPSocket(), opts.VMKeys, s.VM.AgentSocket(), opts.Policy, memoryTable(opts.Memory))
	if err := os.WriteFile(s.Config, []byte(cfg), 0o644); err != nil {
		s.VM.Stop()
		return nil, err
	}
	s.actuatorBin = actuatorBin
	if err := s.startActuator(); err != nil {
		s.VM.Stop()
		return nil, err
	}
	opts.Logf("actuator started (config %s)", s.Config)
	return s, nil
}

func memoryTable(body string) string {
	if body == "" {
		return ""
	}
	return "\n[vm.memory]\n" + body + "\n"
}

// startActuator runs hotplug-actuator on the stack's configuration,
// logging to Options.ActuatorLog or, appending, to actuator.log in Dir.
func (s *Stack) startActuator() error {
	logOut := s.opts.ActuatorLog
	if logOut == nil {
		if s.logFile == nil {
			f, err := os.OpenFile(filepath.Join(s.opts.Dir, "actuator.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			if err != nil {
				return err
			}
			s.logFile = f
		}
		logOut = s.logFile
	}
	s.actuator = exec.Command(s.actuatorBin, "run", "--config", s.Config)
	s.actuator.Stdout, s.actuator.Stderr = logOut, logOut
	s.actuator.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.actuator.Start(); err != nil {
		return fmt.Errorf("starting hotplug-actuator: %w", err)
	}
	s.actDone = make(chan error, 1)
	go func() { s.actDone <- s.actuator.Wait() }()
	return nil
}

// KillActuator kills the actuator with SIGKILL (no deferred code runs)
// and waits for it to be gone.
func (s *Stack) KillActuator() {
	if s.actuator == nil || s.actuator.Process == nil {
		return
	}
	s.actuator.Process.Signal(syscall.SIGKILL)
	<-s.actDone
	s.actuator = nil
}

// RestartActuator starts the actuator again on the same configuration,
// event log and guest.
func (s *Stack) RestartActuator() error { return s.startActuator() }

// QMP runs one command on the test QMP socket (e.g. "stop" and "cont" to
// freeze the guest).
func (s *Stack) QMP(ctx context.Context, cmd string, args any) error {
	s.qmpMu.Lock()
	defer s.qmpMu.Unlock()
	if s.qmp == nil {
		c, err := qmp.Dial(ctx, s.VM.TestQMPSocket(), hclog.NewNullLogger())
		if err != nil {
			return err
		}
		s.qmp = c
	}
	return s.qmp.Execute(ctx, cmd, args, nil)
}

// QEMUMemory is what QEMU says of the virtio-mem device, over the test QMP
// socket: the VM's memory (boot plus plugged) and what was requested, in
// bytes.
func (s *Stack) QEMUMemory(ctx context.Context) (total, requested uint64, err error) {
	s.qmpMu.Lock()
	defer s.qmpMu.Unlock()
	if s.qmp == nil {
		c, err := qmp.Dial(ctx, s.VM.TestQMPSocket(), hclog.NewNullLogger())
		if err != nil {
			return 0, 0, err
		}
		s.qmp = c
	}
	var devs []struct {
		Type string `json:"type"`
		Data struct {
			Size      uint64 `json:"size"`
			Requested uint64 `json:"requested-size"`
		} `json:"data"`
	}
	if err := s.qmp.Execute(ctx, "query-memory-devices", nil, &devs); err != nil {
		s.qmp.Close()
		s.qmp = nil
		return 0, 0, err
	}
	for _, d := range devs {
		if d.Type == "virtio-mem" {
			return BootMemoryMB<<20 + d.Data.Size, BootMemoryMB<<20 + d.Data.Requested, nil
		}
	}
	return 0, 0, errors.New("QEMU has no virtio-mem device")
}

// dashboardAPI picks a free loopback port, writes a fresh token to a
// file only its owner reads and returns the [api] lines for both.
func (s *Stack) dashboardAPI(dir string) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("finding a free port for the dashboard: %w", err)
	}
	addr := ln.Addr().String()
	ln.Close() // the actuator binds it in a moment
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	s.APIToken, s.APIBase = hex.EncodeToString(b), "http://"+addr
	tokenFile := filepath.Join(dir, "api.token")
	if err := os.WriteFile(tokenFile, []byte(s.APIToken+"\n"), 0o600); err != nil {
		return "", err
	}
	return fmt.Sprintf("listen = %q\ntoken_file = %q", addr, tokenFile), nil
}

// ActuatorExited delivers the actuator process's exit status if it ends.
func (s *Stack) ActuatorExited() <-chan error { return s.actDone }

// Stop stops the actuator (SIGTERM, then SIGKILL) and the guest. Idempotent.
func (s *Stack) Stop() {
	s.qmpMu.Lock()
	if s.qmp != nil {
		s.qmp.Close()
		s.qmp = nil
	}
	s.qmpMu.Unlock()
	if s.actuator != nil && s.actuator.Process != nil {
		s.actuator.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.actDone:
		case <-time.After(5 * time.Second):
			s.actuator.Process.Kill()
			<-s.actDone
		}
		s.actuator = nil
	}
	if s.logFile != nil {
		s.logFile.Close()
		s.logFile = nil
	}
	if s.VM != nil {
		s.VM.Stop()
	}
}

// GuestOnline reads the guest's online CPU set through the control shell.
func (s *Stack) GuestOnline(ctx context.Context) (proto.CPUSet, error) {
	out, status, err := s.VM.Run(ctx, "cat /sys/devices/system/cpu/online")
	if err != nil || status != 0 {
		return proto.CPUSet{}, fmt.Errorf("reading guest online CPUs: status %d, %v: %s", status, err, out)
	}
	return proto.ParseCPUList(out)
}

// GuestBusy returns the guest's aggregate CPU busy jiffies and total
// jiffies from /proc/stat, for a utilisation figure between two calls.
func (s *Stack) GuestBusy(ctx context.Context) (busy, total uint64, err error) {
	out, status, err := s.VM.Run(ctx, "head -1 /proc/stat")
	if err != nil || status != 0 {
		return 0, 0, fmt.Errorf("reading guest /proc/stat: %v", err)
	}
	f := strings.Fields(out)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("unexpected /proc/stat line %q", out)
	}
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total, nil
}

// QEMUPlugged counts the CPUs QEMU reports plugged, over the test QMP
// socket.
func (s *Stack) QEMUPlugged(ctx context.Context) (int, error) {
	s.qmpMu.Lock()
	defer s.qmpMu.Unlock()
	if s.qmp == nil {
		c, err := qmp.Dial(ctx, s.VM.TestQMPSocket(), hclog.NewNullLogger())
		if err != nil {
			return 0, err
		}
		s.qmp = c
	}
	var cpus []struct {
		QOMPath string `json:"qom-path"`
	}
	if err := s.qmp.Execute(ctx, "query-hotpluggable-cpus", nil, &cpus); err != nil {
		s.qmp.Close()
		s.qmp = nil
		return 0, err
	}
	n := 0
	for _, c := range cpus {
		if c.QOMPath != "" {
			n++
		}
	}
	return n, nil
}

// StartLoad starts n CPU burners in the guest.
func (s *Stack) StartLoad(ctx context.Context, n int) error {
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	for i := 0; i < n; i++ {
		j, err := s.VM.Spawn(ctx, "while :; do :; done")
		if err != nil {
			return err
		}
		s.load = append(s.load, j)
	}
	return nil
}

// StopLoad kills every burner.
func (s *Stack) StopLoad(ctx context.Context) error {
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	var errs []error
	for _, j := range s.load {
		errs = append(errs, s.VM.Kill(ctx, j))
	}
	s.load = nil
	return errors.Join(errs...)
}

// Events reads the event log.
func (s *Stack) Events() ([]eventlog.Event, error) {
	evs, _, err := eventlog.ReadFile(s.EventLog, eventlog.Filter{})
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return evs, err
}
