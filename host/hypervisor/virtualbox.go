package hypervisor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// What the VirtualBox backend relies on, from the VirtualBox 7.0 manual and
// the sources of VBoxManage and Main (VirtualBox cannot run on our build
// hosts, so none of it was checked against a running VirtualBox; see
// README.md in this directory):
//
//   - `VBoxManage showvminfo VM --machinereadable` prints key=value lines
//     (strings quoted), among them cpus=N (with CPU hot-plug: the most CPUs
//     the VM can have), VMState="running" and CfgFile="…vbox". 7.0 also
//     prints a bare "Encryption:     disabled" line in this mode.
//   - Which CPUs are plugged is not in that output. VirtualBox saves the
//     machine settings on every hot-plug while the VM runs (MachineImpl.cpp
//     hotPlugCPU/hotUnplugCPU), and the settings file has them: <CPU
//     count="N" hotplug="true"><CpuTree><Cpu id="0"/>…</CpuTree></CPU>.
//   - `controlvm VM plugcpu N` / `unplugcpu N` (N ≥ 1; CPU 0 is never
//     removed). Unplug asks the guest to eject the CPU (the Linux Guest
//     Additions' VBoxService does it) and, if the guest has not ejected it,
//     aborts with "Hot-Remove was aborted because the CPU may still be used
//     by the guest" (VBOX_E_VM_ERROR): unlike QEMU the CPU then stays.
//   - Errors: "VBoxManage: error: <text>" lines on stderr, exit status 1
//     (2 for syntax errors); a stopped VM gives "Machine 'VM' is not
//     currently running.", a VM without hot-plug "CPU hotplug is not
//     enabled", an unknown one "Could not find a registered machine named
//     'VM'".
//   - APIC ids: VirtualBox's ACPI tables give CPU n the APIC id n (DevACPI's
//     MADT); the backend reports that.

// VirtualBoxOptions configures NewVirtualBox. The zero value means defaults.
type VirtualBoxOptions struct {
	// VBoxManage is the program to run. Default "VBoxManage" from PATH.
	VBoxManage string
	// Env is added to VBoxManage's environment (tests point it at the
	// fake's state; VBOX_USER_HOME selects another user's VMs).
	Env []string
	// Logger, nil to discard.
	Logger hclog.Logger
}

// maxToolOutput bounds what is read from VBoxManage and the settings file.
const maxToolOutput = 4 << 20

// VirtualBox drives one VirtualBox VM's vCPUs with VBoxManage.
type VirtualBox struct {
	vm    string
	opts  VirtualBoxOptions
	log   hclog.Logger
	opSem chan struct{}
}

var _ Hypervisor = (*VirtualBox)(nil)

// NewVirtualBox returns a backend for the VM named (or with UUID) vm.
func NewVirtualBox(vm string, opts VirtualBoxOptions) *VirtualBox {
	if opts.VBoxManage == "" {
		opts.VBoxManage = "VBoxManage"
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	return &VirtualBox{vm: vm, opts: opts, log: opts.Logger.With("vbox_vm", vm), opSem: make(chan struct{}, 1)}
}

func (vb *VirtualBox) String() string { return fmt.Sprintf("VirtualBox VM %q", vb.vm) }

// Close releases nothing: every call runs its own VBoxManage.
func (vb *VirtualBox) Close() error { return nil }

// toolError is a failed VBoxManage run: its exit status and the messages it
// printed after "VBoxManage: error: ".
type toolError struct {
	Args     []string
	Status   int
	Messages []string
}

func (e *toolError) Error() string {
	msg := "no message"
	if len(e.Messages) > 0 {
		msg = strings.Join(e.Messages, "; ")
	}
	return fmt.Sprintf("VBoxManage %s exited with status %d: %s", strings.Join(e.Args, " "), e.Status, msg)
}

// has reports whether any message contains s.
func (e *toolError) has(s string) bool {
	for _, m := range e.Messages {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

// parseToolErrors picks the messages out of a VBoxManage/VBoxControl
// stderr: lines "<prog>: error: <text>", without the Details: and
// Context: lines that follow each COM error.
func parseToolErrors(stderr []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(stderr))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for sc.Scan() {
		_, msg, ok := strings.Cut(sc.Text(), ": error: ")
		if !ok || strings.HasPrefix(msg, "Details: ") || strings.HasPrefix(msg, "Context: ") {
			continue
		}
		out = append(out, strings.TrimSpace(msg))
	}
	return out
}

// runTool runs prog with args under ctx and returns its stdout; a non-zero
// exit becomes *toolError, a missing program ErrUnavailable. Output beyond
// maxToolOutput is an error, not a truncation.
func runTool(ctx context.Context, prog string, env []string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, prog, args...)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	var stdout, stderr limitedBuffer
	stdout.max, stderr.max = maxToolOutput, 64<<10
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if stdout.overflow {
		return nil, fmt.Errorf("%s %s: output longer than %d bytes", prog, strings.Join(args, " "), maxToolOutput)
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return stdout.Bytes(), nil
	case ctx.Err() != nil:
		return nil, fmt.Errorf("%s %s: %w", prog, strings.Join(args, " "), ctx.Err())
	case errors.As(err, &ee) && ee.ExitCode() > 0:
		return stdout.Bytes(), &toolError{Args: args, Status: ee.ExitCode(), Messages: parseToolErrors(stderr.Bytes())}
	case errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("%w: %s not found (install VirtualBox, or set the path of VBoxManage): %v", ErrUnavailable, prog, err)
	}
	return nil, fmt.Errorf("%s %s: %w", prog, strings.Join(args, " "), err)
}

// limitedBuffer keeps at most max bytes and notes that more came.
type limitedBuffer struct {
	bytes.Buffer
	max      int
	overflow bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if b.Len()+len(p) > b.max {
		b.overflow = true
		p = p[:max(0, b.max-b.Len())]
	}
	b.Buffer.Write(p)
	return len(p), nil // keep the tool from dying of a broken pipe
}

// manage runs VBoxManage and classifies errors common to every command.
func (vb *VirtualBox) manage(ctx context.Context, args ...string) ([]byte, error) {
	out, err := runTool(ctx, vb.opts.VBoxManage, vb.opts.Env, args...)
	var te *toolError
	if errors.As(err, &te) {
		switch {
		case te.has("Could not find a registered machine"):
			return nil, fmt.Errorf("%w: %s is not registered with VirtualBox for this user (VBoxManage list vms): %v", ErrUnavailable, vb, err)
		case te.has("is not currently running"):
			return nil, fmt.Errorf("%w: %s is not running (VBoxManage startvm %s --type headless): %v", ErrUnavailable, vb, vb.vm, err)
		}
	}
	if err != nil {
		return out, fmt.Errorf("hypervisor: %s: %w", vb, err)
	}
	return out, nil
}

// vboxInfo is what State needs from showvminfo.
type vboxInfo struct {
	state    string
	cpus     int
	cfgFile  string
	hotplug  string // "on"/"off" if showvminfo printed it, else ""
	settings vboxSettingsCPU
}

// parseShowVMInfo reads `showvminfo --machinereadable` output. Lines that
// are not key=value (7.0's "Encryption:" line) are skipped.
func parseShowVMInfo(out []byte) (vboxInfo, error) {
	var info vboxInfo
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	seen := map[string]bool{}
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		if uq, err := strconv.Unquote(val); err == nil {
			val = uq
		}
		switch key {
		case "VMState":
			info.state = val
		case "cpus":
			n, err := strconv.Atoi(val)
			if err != nil || n < 1 || n > 1024 {
				return info, fmt.Errorf("showvminfo: cpus=%q is not a CPU count", val)
			}
			info.cpus = n
		case "CfgFile":
			info.cfgFile = val
		case "cpuhotplug":
			info.hotplug = val
		default:
			continue
		}
		seen[key] = true
	}
	if err := sc.Err(); err != nil {
		return info, fmt.Errorf("showvminfo: %w", err)
	}
	for _, k := range []string{"VMState", "cpus", "CfgFile"} {
		if !seen[k] {
			return info, fmt.Errorf("showvminfo --machinereadable printed no %s", k)
		}
	}
	return info, nil
}

// vboxSettingsCPU is the <CPU> element of a .vbox settings file.
type vboxSettingsCPU struct {
	Count   int    `xml:"count,attr"`
	Hotplug string `xml:"hotplug,attr"`
	CPUs    []struct {
		ID int `xml:"id,attr"`
	} `xml:"CpuTree>Cpu"`
}

// parseVBoxSettingsCPU finds the <CPU> element of a machine settings file,
// wherever the release puts it under <Machine>.
func parseVBoxSettingsCPU(doc []byte) (vboxSettingsCPU, error) {
	dec := xml.NewDecoder(bytes.NewReader(doc))
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return vboxSettingsCPU{}, errors.New("settings file has no <CPU> element")
		}
		if err != nil {
			return vboxSettingsCPU{}, fmt.Errorf("settings file: %w", err)
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "CPU" {
			var c vboxSettingsCPU
			if err := dec.DecodeElement(&c, &se); err != nil {
				return vboxSettingsCPU{}, fmt.Errorf("settings file <CPU>: %w", err)
			}
			return c, nil
		}
	}
}

// info runs showvminfo and reads the settings file it names.
func (vb *VirtualBox) info(ctx context.Context) (vboxInfo, error) {
	out, err := vb.manage(ctx, "showvminfo", vb.vm, "--machinereadable")
	if err != nil {
		return vboxInfo{}, err
	}
	info, err := parseShowVMInfo(out)
	if err != nil {
		return info, fmt.Errorf("hypervisor: %s: %w", vb, err)
	}
	f, err := os.Open(info.cfgFile)
	if err != nil {
		return info, fmt.Errorf("hypervisor: %s: reading its settings file for the plugged CPUs (this user must be able to read it): %w", vb, err)
	}
	defer f.Close()
	doc, err := io.ReadAll(io.LimitReader(f, maxToolOutput+1))
	if err != nil || len(doc) > maxToolOutput {
		return info, fmt.Errorf("hypervisor: %s: settings file %s unreadable or over %d bytes: %v", vb, info.cfgFile, maxToolOutput, err)
	}
	if info.settings, err = parseVBoxSettingsCPU(doc); err != nil {
		return info, fmt.Errorf("hypervisor: %s: %s: %w", vb, info.cfgFile, err)
	}
	return info, nil
}

// slotsOf turns the VM's info into slots: CPU ids 0..cpus-1, plugged as the
// settings' CpuTree says (all of them without CPU hot-plug), removable when
// plugged, hot-plug is on and the id is not 0.
func slotsOf(info vboxInfo) (State, bool) {
	hotplug := info.settings.Hotplug == "true"
	if info.hotplug != "" {
		hotplug = info.hotplug == "on"
	}
	attached := map[int]bool{}
	for _, c := range info.settings.CPUs {
		attached[c.ID] = true
	}
	st := State{Slots: make([]Slot, info.cpus)}
	for i := range st.Slots {
		plugged := !hotplug || attached[i] || i == 0
		s := Slot{Index: i, Plugged: plugged, APICID: -1}
		if plugged {
			s.Ref, s.APICID = strconv.Itoa(i), i
			s.Removable = hotplug && i != 0
		}
		st.Slots[i] = s
	}
	return st, hotplug
}

// state reads the VM's CPUs; a VM that is not running is unavailable.
func (vb *VirtualBox) state(ctx context.Context) (State, bool, error) {
	info, err := vb.info(ctx)
	if err != nil {
		return State{}, false, err
	}
	if info.state != "running" && info.state != "paused" {
		return State{}, false, fmt.Errorf("%w: %s is %s, not running (VBoxManage startvm %s --type headless)", ErrUnavailable, vb, info.state, vb.vm)
	}
	st, hotplug := slotsOf(info)
	return st, hotplug, nil
}

// State reads which CPU ids are plugged. Index and Ref are VirtualBox's CPU
// number (the argument of controlvm plugcpu/unplugcpu).
func (vb *VirtualBox) State(ctx context.Context) (State, error) {
	st, _, err := vb.state(ctx)
	return st, err
}

// Plug plugs the lowest free CPU with controlvm plugcpu and returns its slot
// as VirtualBox then reports it.
func (vb *VirtualBox) Plug(ctx context.Context) (Slot, State, error) {
	if err := acquire(ctx, vb.opSem); err != nil {
		return Slot{}, State{}, fmt.Errorf("hypervisor: %s: plug: %w", vb, err)
	}
	defer func() { <-vb.opSem }()
	st, hotplug, err := vb.state(ctx)
	if err != nil {
		return Slot{}, State{}, err
	}
	if !hotplug {
		return Slot{}, State{}, fmt.Errorf("%w: CPU hot-plug is not enabled for %s (power it off, then VBoxManage modifyvm %s --cpuhotplug on --cpus N)",
			ErrNoFreeSlot, vb, vb.vm)
	}
	free := -1
	for _, s := range st.Slots {
		if !s.Plugged {
			free = s.Index
			break
		}
	}
	if free < 0 {
		return Slot{}, State{}, fmt.Errorf("%w: all %d CPUs of %s are plugged (raise --cpus while it is off)", ErrNoFreeSlot, st.Max(), vb)
	}
	vb.log.Debug("plugging CPU", "cpu", free)
	if _, err := vb.manage(ctx, "controlvm", vb.vm, "plugcpu", strconv.Itoa(free)); err != nil {
		return Slot{}, State{}, fmt.Errorf("%w (CPU %d; re-read State: another client may have plugged it)", err, free)
	}
	after, _, err := vb.state(ctx)
	if err != nil {
		return Slot{}, State{}, fmt.Errorf("hypervisor: %s: CPU %d was plugged but reading it back failed: %w", vb, free, err)
	}
	if s := after.Slots[free]; s.Plugged {
		vb.log.Info("plugged CPU", "cpu", free)
		return s, after, nil
	}
	return Slot{}, State{}, fmt.Errorf("hypervisor: %s: plugcpu %d succeeded but the settings file does not list the CPU", vb, free)
}

// Unplug removes the CPU in slot with controlvm unplugcpu. VirtualBox itself
// waits for the guest to eject it and aborts if it does not: the CPU then
// stays plugged, and the error wraps ErrUnplugTimeout.
func (vb *VirtualBox) Unplug(ctx context.Context, slot Slot) (State, error) {
	if err := acquire(ctx, vb.opSem); err != nil {
		return State{}, fmt.Errorf("hypervisor: %s: unplug CPU %d: %w", vb, slot.Index, err)
	}
	defer func() { <-vb.opSem }()
	if slot.Ref == "" {
		return State{}, fmt.Errorf("%w: slot %d of %s holds no CPU", ErrNotUnpluggable, slot.Index, vb)
	}
	if slot.Index == 0 {
		return State{}, fmt.Errorf("%w: CPU 0 of %s is never removed (VirtualBox: \"It is not possible to detach CPU 0\")", ErrNotUnpluggable, vb)
	}
	st, hotplug, err := vb.state(ctx)
	if err != nil {
		return State{}, err
	}
	if slot.Index < 0 || slot.Index >= st.Max() {
		return State{}, fmt.Errorf("%w: %s has no CPU %d (it has %d)", ErrNotUnpluggable, vb, slot.Index, st.Max())
	}
	if !hotplug {
		return State{}, fmt.Errorf("%w: CPU hot-plug is not enabled for %s", ErrNotUnpluggable, vb)
	}
	if !st.Slots[slot.Index].Plugged {
		vb.log.Debug("CPU already gone", "cpu", slot.Index)
		return st, nil
	}
	vb.log.Debug("unplugging CPU", "cpu", slot.Index)
	_, err = vb.manage(ctx, "controlvm", vb.vm, "unplugcpu", strconv.Itoa(slot.Index))
	var te *toolError
	switch {
	case err == nil:
	case errors.As(err, &te) && te.has("may still be used by the guest"):
		return State{}, fmt.Errorf("%w: the guest of %s did not eject CPU %d, so VirtualBox kept it: the guest must offline and eject it first (the Guest Additions' VBoxService does, or echo 1 > /sys/bus/acpi/devices/LNXCPU:%02x/eject): %v",
			ErrUnplugTimeout, vb, slot.Index, slot.Index, err)
	case errors.As(err, &te) && te.has("is not attached"):
		vb.log.Debug("CPU already gone", "cpu", slot.Index)
	default:
		return State{}, err
	}
	after, _, err := vb.state(ctx)
	if err != nil {
		return State{}, fmt.Errorf("hypervisor: %s: CPU %d was unplugged but reading state failed (re-read State): %w", vb, slot.Index, err)
	}
	if after.Slots[slot.Index].Plugged {
		return State{}, fmt.Errorf("hypervisor: %s: unplugcpu %d succeeded but the settings file still lists the CPU; re-read State", vb, slot.Index)
	}
	vb.log.Info("unplugged CPU", "cpu", slot.Index)
	return after, nil
}

// CPULoad is the VM process's CPU load as VirtualBox's performance
// collector reports it (VBoxManage metrics, CPU/Load/User and
// CPU/Load/Kernel), as ratios. VirtualBox has no per-vCPU accounting.
type CPULoad struct {
	User, Kernel float64
}

// ErrNoMetrics: the collector has no sample yet (just set up, or VBoxSVC
// restarted and forgot the setup).
var ErrNoMetrics = errors.New("no metric samples yet")

// CPULoad sets up the collector (idempotent, 1 s period, 1 sample) and
// queries the VM's load. Right after the first setup there is no sample
// yet: ErrNoMetrics; call again after a period.
func (vb *VirtualBox) CPULoad(ctx context.Context) (CPULoad, error) {
	if _, err := vb.manage(ctx, "metrics", "setup", "--period", "1", "--samples", "1", vb.vm, "CPU/Load/User,CPU/Load/Kernel"); err != nil {
		return CPULoad{}, err
	}
	out, err := vb.manage(ctx, "metrics", "query", vb.vm, "CPU/Load/User,CPU/Load/Kernel")
	if err != nil {
		return CPULoad{}, err
	}
	vals, err := parseMetricsQuery(out)
	if err != nil {
		return CPULoad{}, fmt.Errorf("hypervisor: %s: metrics query: %w", vb, err)
	}
	user, okU := vals["CPU/Load/User"]
	kernel, okK := vals["CPU/Load/Kernel"]
	if !okU || !okK {
		return CPULoad{}, fmt.Errorf("hypervisor: %s: %w", vb, ErrNoMetrics)
	}
	return CPULoad{User: user / 100, Kernel: kernel / 100}, nil
}

// parseMetricsQuery reads `VBoxManage metrics query` (VBoxManageMetrics.cpp:
// a two-line header, then object, metric and comma-separated values such
// as "3.50%"); it returns the last value of each metric in percent.
func parseMetricsQuery(out []byte) (map[string]float64, error) {
	vals := map[string]float64{}
	lines := strings.Split(string(out), "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[0], "Object") {
		return nil, fmt.Errorf("unexpected output %.100q", out)
	}
	for _, l := range lines[2:] {
		f := strings.Fields(l)
		if len(f) < 3 {
			continue // metric without samples
		}
		last := strings.TrimSuffix(f[len(f)-1], "%")
		v, err := strconv.ParseFloat(last, 64)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("metric %s: value %q", f[1], f[len(f)-1])
		}
		vals[f[1]] = v
	}
	return vals, nil
}
