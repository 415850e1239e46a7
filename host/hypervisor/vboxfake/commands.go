package vboxfake

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Version is the VirtualBox release the fake imitates.
const Version = "7.0.20r163906"

// Exit codes of VBoxManage and VBoxControl (IPRT's RTEXITCODE).
const (
	exitOK      = 0
	exitFailure = 1
	exitSyntax  = 2
)

// COM result codes the fake reports, as VBoxManage prints them.
const (
	eInvalidArg         = "E_INVALIDARG (0x80070057)"
	vboxObjectNotFound  = "VBOX_E_OBJECT_NOT_FOUND (0x80bb0001)"
	vboxVMError         = "VBOX_E_VM_ERROR (0x80bb0003)"
	vboxInvalidVMState  = "VBOX_E_INVALID_VM_STATE (0x80bb0002)"
	vboxObjectInUse     = "VBOX_E_OBJECT_IN_USE (0x80bb000c)"
	eAccessDenied       = "E_ACCESSDENIED (0x80070005)"
	controlVMFile       = "VBoxManageControlVM.cpp"
	guestPropFile       = "VBoxManageGuestProp.cpp"
	findMachineContext  = "FindMachine(Bstr(a->argv[0]).raw(), machine.asOutParam())"
	sessionMachineComp  = "SessionMachine"
	sessionMachineIface = "IMachine"
)

// Main runs the fake as VBoxManage or VBoxControl, by the base name of
// args[0], and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	prog := filepath.Base(args[0])
	path := os.Getenv(EnvState)
	if path == "" {
		fmt.Fprintf(stderr, "%s: error: $%s is not set (the fake's state file)\n", prog, EnvState)
		return exitFailure
	}
	r := &run{prog: prog, path: path, stdout: stdout, stderr: stderr}
	switch {
	case strings.HasPrefix(strings.ToLower(prog), "vboxmanage"):
		return r.manage(args[1:])
	case strings.HasPrefix(strings.ToLower(prog), "vboxcontrol"):
		return r.control(args[1:])
	}
	fmt.Fprintf(stderr, "%s: run me as VBoxManage or VBoxControl\n", prog)
	return exitFailure
}

type run struct {
	prog           string
	path           string
	stdout, stderr io.Writer
}

func (r *run) errorf(format string, args ...any) {
	fmt.Fprintf(r.stderr, "%s: error: %s\n", r.prog, fmt.Sprintf(format, args...))
}

// comError prints an error the way VBoxManage's CHECK_ERROR does
// (GlueHandleComError): the message, the result code and component, and
// the failed call.
func (r *run) comError(msg, code, component, iface, context, file string, line int) int {
	r.errorf("%s", msg)
	r.errorf("Details: code %s, component %sWrap, interface %s, callee nsISupports", code, component, iface)
	r.errorf("Context: \"%s\" at line %d of file %s", context, line, file)
	return exitFailure
}

func (r *run) syntax(msg string) int {
	r.errorf("%s", msg)
	fmt.Fprintf(r.stderr, "Usage - see \"%s help\"\n", r.prog)
	return exitSyntax
}

// withState runs fn under the state lock.
func (r *run) withState(fn func(s *State) int) int {
	code := exitOK
	err := update(r.path, func(s *State) error {
		code = fn(s)
		return nil
	})
	if err != nil {
		r.errorf("vboxfake: %v", err)
		return exitFailure
	}
	return code
}

func (r *run) count(m *Machine, what string) {
	if m.Calls == nil {
		m.Calls = map[string]int{}
	}
	m.Calls[what]++
}

func (r *run) manage(args []string) int {
	for len(args) > 0 && (args[0] == "--nologo" || args[0] == "-q") {
		args = args[1:]
	}
	if len(args) == 0 {
		return r.syntax("No command specified")
	}
	switch args[0] {
	case "--version", "-V", "-v", "-version":
		fmt.Fprintln(r.stdout, Version)
		return exitOK
	case "showvminfo":
		return r.showVMInfo(args[1:])
	case "controlvm":
		return r.controlVM(args[1:])
	case "guestproperty":
		return r.guestProperty(args[1:])
	case "metrics":
		return r.metrics(args[1:])
	}
	r.errorf("Invalid command '%s'", args[0])
	return exitSyntax
}

func (r *run) findMachine(s *State, name, file string, line int) (*Machine, int) {
	m := s.Machine(name)
	if m == nil {
		return nil, r.comError(fmt.Sprintf("Could not find a registered machine named '%s'", name),
			vboxObjectNotFound, "VirtualBox", "IVirtualBox", findMachineContext, file, line)
	}
	return m, exitOK
}

// showVMInfo prints the machine-readable form (VBoxManageInfo.cpp's
// showVMInfo with VMINFO_MACHINEREADABLE), the part of it the fake knows.
// VirtualBox 7.0 prints an "Encryption:" line in this mode too.
func (r *run) showVMInfo(args []string) int {
	if len(args) == 0 {
		return r.syntax("Incorrect number of parameters")
	}
	machineReadable := false
	for _, a := range args[1:] {
		switch a {
		case "--machinereadable", "-machinereadable":
			machineReadable = true
		case "--details", "-details":
		default:
			return r.syntax(fmt.Sprintf("Invalid parameter '%s'", a))
		}
	}
	return r.withState(func(s *State) int {
		m, code := r.findMachine(s, args[0], "VBoxManageInfo.cpp", 3064)
		if m == nil {
			return code
		}
		r.count(m, "showvminfo")
		w := r.stdout
		if !machineReadable {
			fmt.Fprintf(w, "%-28s %s\n%-28s %d\n%-28s %s (since 2024-01-01T00:00:00.000000000)\n", "Name:", m.Name, "Number of CPUs:", m.CPUs, "State:", m.State)
			return exitOK
		}
		fmt.Fprintf(w, "name=%q\nEncryption:     disabled\ngroups=\"/\"\nostype=\"Ubuntu (64-bit)\"\nUUID=%q\nCfgFile=%q\n", m.Name, m.UUID, m.SettingsFile)
		fmt.Fprintf(w, "SnapFldr=%q\nLogFldr=%q\nhardwareuuid=%q\nmemory=1024\npagefusion=\"off\"\nvram=16\ncpuexecutioncap=100\nhpet=\"off\"\ncpu-profile=\"host\"\nchipset=\"piix3\"\nfirmware=\"BIOS\"\n",
			filepath.Join(filepath.Dir(m.SettingsFile), "Snapshots"), filepath.Join(filepath.Dir(m.SettingsFile), "Logs"), m.UUID)
		fmt.Fprintf(w, "cpus=%d\npae=\"on\"\nlongmode=\"on\"\ntriplefaultreset=\"off\"\napic=\"on\"\nx2apic=\"on\"\nnested-hw-virt=\"off\"\ncpuid-portability-level=0\n", m.CPUs)
		fmt.Fprintf(w, "bootmenu=\"messageandmenu\"\nboot1=\"floppy\"\nboot2=\"dvd\"\nboot3=\"disk\"\nboot4=\"none\"\nacpi=\"on\"\nioapic=\"on\"\nbiosapic=\"apic\"\nbiossystemtimeoffset=0\nrtcuseutc=\"off\"\nhwvirtex=\"on\"\nnestedpaging=\"on\"\nlargepages=\"off\"\nvtxvpid=\"on\"\nvtxux=\"on\"\nparavirtprovider=\"default\"\neffparavirtprovider=\"kvm\"\n")
		fmt.Fprintf(w, "VMState=%q\nVMStateChangeTime=\"2024-01-01T00:00:00.000000000\"\ngraphicscontroller=\"vmsvga\"\nmonitorcount=1\naccelerate3d=\"off\"\n", m.State)
		fmt.Fprintf(w, "GuestMemoryBalloon=0\n")
		return exitOK
	})
}

// parseNum is VBoxManageControlVM.cpp's: 1..max or an error printed, and 0
// returned, after which controlvm carries on with CPU 0.
func (r *run) parseNum(s string, max uint32, name string) int {
	n, err := strconv.ParseUint(s, 10, 32)
	if err == nil && n >= 1 && n <= uint64(max) {
		return int(n)
	}
	r.errorf("Invalid %s number '%s'.", name, s)
	return 0
}

func (r *run) controlVM(args []string) int {
	if len(args) < 2 {
		return r.syntax("Not enough parameters.")
	}
	return r.withState(func(s *State) int {
		m, code := r.findMachine(s, args[0], controlVMFile, 513)
		if m == nil {
			return code
		}
		r.count(m, "controlvm "+args[1])
		if m.State != "running" && m.State != "paused" {
			r.errorf("Machine '%s' is not currently running.", args[0])
			return exitFailure
		}
		switch args[1] {
		case "plugcpu", "unplugcpu":
		default:
			return r.syntax(fmt.Sprintf("Invalid parameter '%s'.", args[1]))
		}
		if len(args) < 3 {
			return r.syntax(fmt.Sprintf("Missing argument to '%s'.", args[1]))
		}
		cpu := r.parseNum(args[2], 32, "CPU")
		if args[1] == "plugcpu" {
			return r.plugCPU(s, m, cpu)
		}
		return r.unplugCPU(s, m, cpu)
	})
}

// plugCPU is Machine::hotPlugCPU's checks, then the plug.
func (r *run) plugCPU(s *State, m *Machine, cpu int) int {
	ctx := "HotPlugCPU(n)"
	if !m.CPUHotplug {
		return r.comError("CPU hotplug is not enabled", eInvalidArg, sessionMachineComp, sessionMachineIface, ctx, controlVMFile, 485)
	}
	if cpu >= m.CPUs {
		return r.comError(fmt.Sprintf("CPU id exceeds number of possible CPUs [0:%d]", m.CPUs-1), eInvalidArg, sessionMachineComp, sessionMachineIface, ctx, controlVMFile, 485)
	}
	if has(m.Attached, cpu) {
		return r.comError(fmt.Sprintf("CPU %d is already attached", cpu), vboxObjectInUse, sessionMachineComp, sessionMachineIface, ctx, controlVMFile, 485)
	}
	m.Attached = append(m.Attached, cpu)
	sort.Ints(m.Attached)
	if err := m.writeSettings(); err != nil {
		r.errorf("vboxfake: %v", err)
		return exitFailure
	}
	return exitOK
}

// unplugCPU is Machine::hotUnplugCPU's checks, then Console::i_doCPURemove:
// the guest is asked to eject the CPU; without the Guest Additions'
// service the CPU must have been ejected already.
func (r *run) unplugCPU(s *State, m *Machine, cpu int) int {
	ctx := "HotUnplugCPU(n)"
	if !m.CPUHotplug {
		return r.comError("CPU hotplug is not enabled", eInvalidArg, sessionMachineComp, sessionMachineIface, ctx, controlVMFile, 470)
	}
	if !has(m.Attached, cpu) {
		return r.comError(fmt.Sprintf("CPU %d is not attached", cpu), vboxObjectNotFound, sessionMachineComp, sessionMachineIface, ctx, controlVMFile, 470)
	}
	if cpu == 0 {
		return r.comError("It is not possible to detach CPU 0", eInvalidArg, sessionMachineComp, sessionMachineIface, ctx, controlVMFile, 470)
	}
	if !has(m.Ejected, cpu) && m.EjectService {
		// VBoxService receives the hot-remove event and ejects the CPU,
		// unless the guest cannot give it up; VirtualBox polls for that.
		time.Sleep(m.UnplugWait)
		if !has(m.Busy, cpu) {
			m.Ejected = append(m.Ejected, cpu)
		}
	}
	if !has(m.Ejected, cpu) {
		return r.comError("Hot-Remove was aborted because the CPU may still be used by the guest", vboxVMError, "Console", "IConsole", ctx, controlVMFile, 470)
	}
	m.Attached = without(m.Attached, cpu)
	m.Ejected = without(m.Ejected, cpu)
	if err := m.writeSettings(); err != nil {
		r.errorf("vboxfake: %v", err)
		return exitFailure
	}
	return exitOK
}

// matchPatterns is RTStrSimplePatternMultiMatch: '|'-separated patterns
// with '*' and '?'; VBoxManage joins several with ','.
func matchPatterns(patterns, name string) bool {
	if patterns == "" {
		return true
	}
	for _, p := range strings.FieldsFunc(patterns, func(r rune) bool { return r == '|' || r == ',' }) {
		if simpleMatch(p, name) {
			return true
		}
	}
	return false
}

// simpleMatch is RTStrSimplePatternMatch: '*' matches any run of
// characters ('/' included), '?' any one.
func simpleMatch(pattern, s string) bool {
	for len(pattern) > 0 {
		switch pattern[0] {
		case '*':
			for i := len(s); i >= 0; i-- {
				if simpleMatch(pattern[1:], s[i:]) {
					return true
				}
			}
			return false
		case '?':
			if s == "" {
				return false
			}
		default:
			if s == "" || s[0] != pattern[0] {
				return false
			}
		}
		pattern, s = pattern[1:], s[1:]
	}
	return s == ""
}

var validFlags = map[string]bool{"TRANSIENT": true, "RDONLYGUEST": true, "RDONLYHOST": true, "READONLY": true, "TRANSRESET": true}

// checkFlags is GuestPropValidateFlags: a comma-separated list of known
// flags.
func checkFlags(flags string) bool {
	for _, f := range strings.Split(flags, ",") {
		f = strings.ToUpper(strings.TrimSpace(f))
		if f != "" && !validFlags[f] {
			return false
		}
	}
	return true
}

func hasFlag(flags, f string) bool {
	for _, x := range strings.Split(flags, ",") {
		x = strings.ToUpper(strings.TrimSpace(x))
		if x == f || (x == "READONLY" && (f == "RDONLYGUEST" || f == "RDONLYHOST")) {
			return true
		}
	}
	return false
}

func (r *run) guestProperty(args []string) int {
	if len(args) == 0 {
		return r.syntax("Missing subcommand")
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "get":
		if len(args) != 2 && !(len(args) == 3 && (args[2] == "--verbose" || args[2] == "-verbose")) {
			return r.syntax("Incorrect parameters")
		}
		return r.withState(func(s *State) int {
			m, code := r.findMachine(s, args[0], guestPropFile, 80)
			if m == nil {
				return code
			}
			r.count(m, "guestproperty get")
			p, ok := m.Props[args[1]]
			if !ok || p.Value == "" {
				fmt.Fprintln(r.stdout, "No value set!")
				return exitOK
			}
			fmt.Fprintf(r.stdout, "Value: %s\n", p.Value)
			if len(args) == 3 {
				fmt.Fprintf(r.stdout, "Timestamp: %d\nFlags: %s\n", p.Timestamp, p.Flags)
			}
			return exitOK
		})
	case "set", "delete", "unset":
		var name, value, flags string
		del := sub != "set"
		switch {
		case del && len(args) == 2:
			name = args[1]
		case !del && len(args) == 2:
			name, del = args[1], true
		case !del && len(args) == 3:
			name, value = args[1], args[2]
		case !del && len(args) == 5 && (args[3] == "--flags" || args[3] == "-flags"):
			name, value, flags = args[1], args[2], args[4]
		default:
			return r.syntax("Incorrect parameters")
		}
		return r.withState(func(s *State) int {
			m, code := r.findMachine(s, args[0], guestPropFile, 140)
			if m == nil {
				return code
			}
			r.count(m, "guestproperty "+sub)
			ctx := "SetGuestPropertyValue(Bstr(pszName).raw(), Bstr(pszValue).raw())"
			if flags != "" {
				ctx = "SetGuestProperty(Bstr(pszName).raw(), Bstr(pszValue).raw(), Bstr(pszFlags).raw())"
			}
			if del {
				ctx = "DeleteGuestProperty(Bstr(pszName).raw())"
			}
			// Machine::setGuestProperty validates name and value before
			// anything else, with no message of its own.
			if len(name)+1 > MaxNameLen || len(name) == 0 || strings.ContainsAny(name, "*?|") {
				return r.comError("VERR_INVALID_PARAMETER", eInvalidArg, sessionMachineComp, sessionMachineIface, ctx, guestPropFile, 143)
			}
			if len(value)+1 > MaxValueLen {
				return r.comError("VERR_TOO_MUCH_DATA", eInvalidArg, sessionMachineComp, sessionMachineIface, ctx, guestPropFile, 143)
			}
			if !checkFlags(flags) {
				return r.comError(fmt.Sprintf("Invalid guest property flag values: '%s'", flags), eInvalidArg, sessionMachineComp, sessionMachineIface, ctx, guestPropFile, 143)
			}
			running := m.State == "running" || m.State == "paused"
			if !running && (hasFlag(flags, "TRANSIENT") || hasFlag(flags, "TRANSRESET")) {
				return r.comError("Properties with TRANSIENT or TRANSRESET flag cannot be set or modified if VM is not running",
					eInvalidArg, sessionMachineComp, sessionMachineIface, ctx, guestPropFile, 143)
			}
			if old, ok := m.Props[name]; ok && hasFlag(old.Flags, "RDONLYHOST") {
				return r.comError(fmt.Sprintf("The property '%s' cannot be changed by the host", name), eAccessDenied, sessionMachineComp, sessionMachineIface, ctx, guestPropFile, 143)
			}
			if _, exists := m.Props[name]; !del && !exists && len(m.Props) >= MaxProps {
				return r.comError("VERR_TOO_MUCH_DATA", eInvalidArg, sessionMachineComp, sessionMachineIface, ctx, guestPropFile, 143)
			}
			s.setProp(m, name, value, strings.ToUpper(flags), del)
			return exitOK
		})
	case "enumerate", "enum":
		return r.enumerate(args)
	case "wait":
		return r.hostWait(args)
	}
	r.errorf("Unknown subcommand: %s", sub)
	return exitSyntax
}

// enumerate prints properties in VirtualBox 7.0's table (name, quoted
// value, timestamp, flags) or, with --old-format, one "Name: ..., value:
// ..." line each.
func (r *run) enumerate(args []string) int {
	vm, patterns, oldFormat, showTS, showFlags := "", "", false, true, true
	for i := 0; i < len(args); i++ {
		switch a := args[i]; a {
		case "--old-format":
			oldFormat = true
		case "--no-timestamp", "--no-ts":
			showTS = false
		case "--no-flags":
			showFlags = false
		case "--timestamp", "--ts", "--flags", "--sort", "--unsort", "--abs", "--absolute", "--rel", "--relative":
		case "--patterns", "-patterns":
			if i+1 >= len(args) {
				return r.syntax("Option '--patterns' requires a value")
			}
			i++
			patterns = joinPatterns(patterns, args[i])
		default:
			if strings.HasPrefix(a, "-") {
				return r.syntax(fmt.Sprintf("Unknown option: %s", a))
			}
			if vm == "" {
				vm = a
			} else {
				patterns = joinPatterns(patterns, a)
			}
		}
	}
	if vm == "" {
		return r.syntax("No VM name or UUID was specified")
	}
	return r.withState(func(s *State) int {
		m, code := r.findMachine(s, vm, guestPropFile, 310)
		if m == nil {
			return code
		}
		r.count(m, "guestproperty enumerate")
		var names []string
		for n := range m.Props {
			if matchPatterns(patterns, n) {
				names = append(names, n)
			}
		}
		sort.Strings(names)
		if len(names) == 0 {
			fmt.Fprintln(r.stdout, "No properties found.")
			return exitOK
		}
		if oldFormat {
			for _, n := range names {
				p := m.Props[n]
				fmt.Fprintf(r.stdout, "Name: %s, value: %s, timestamp: %d, flags: %s\n", n, p.Value, p.Timestamp, p.Flags)
			}
			return exitOK
		}
		wName, wValue := 1, 1
		for _, n := range names {
			wName, wValue = max(wName, len(n)), max(wValue, len(m.Props[n].Value))
		}
		wName, wValue = min(wName, 48), min(wValue, 28)
		for _, n := range names {
			p := m.Props[n]
			line := fmt.Sprintf("%-*s = '%s'", wName, n, p.Value)
			flags := ""
			if showFlags {
				flags = p.Flags
			}
			if showTS || flags != "" {
				pad := wName + wValue + 6 - len(line)
				if pad < 1 {
					pad = 1
				}
				ts := ""
				if showTS {
					ts = "@ " + time.Unix(0, p.Timestamp).UTC().Format("2006-01-02T15:04:05.000Z")
				}
				sep := ""
				if flags != "" {
					sep = " "
				}
				line += strings.Repeat(" ", pad) + ts + sep + flags
			}
			fmt.Fprintln(r.stdout, line)
		}
		return exitOK
	})
}

func joinPatterns(a, b string) string {
	if a == "" {
		return b
	}
	return a + "," + b
}

// hostWait is VBoxManage guestproperty wait: it sees only changes made
// after it started listening.
func (r *run) hostWait(args []string) int {
	if len(args) < 2 {
		return r.syntax("Incorrect parameters")
	}
	vm, patterns := args[0], args[1]
	timeout, failOnTimeout := time.Duration(-1), false
	for i := 2; i < len(args); i++ {
		switch args[i] {
		case "--timeout", "-timeout":
			if i+1 >= len(args) {
				return r.syntax("Incorrect parameters")
			}
			ms, err := strconv.ParseUint(args[i+1], 10, 32)
			if err != nil {
				return r.syntax("Incorrect parameters")
			}
			timeout = time.Duration(ms) * time.Millisecond
			i++
		case "--fail-on-timeout":
			failOnTimeout = true
		default:
			return r.syntax("Incorrect parameters")
		}
	}
	var start uint64
	if code := r.withState(func(s *State) int {
		m, code := r.findMachine(s, vm, guestPropFile, 375)
		if m == nil {
			return code
		}
		r.count(m, "guestproperty wait")
		start = s.Seq
		return exitOK
	}); code != exitOK {
		return code
	}
	deadline := time.Now().Add(timeout)
	for timeout < 0 || time.Now().Before(deadline) {
		var found *Change
		r.withState(func(s *State) int {
			if m := s.Machine(vm); m != nil {
				for i := range m.Changes {
					if c := m.Changes[i]; c.Seq > start && matchPatterns(patterns, c.Name) {
						found = &c
						break
					}
				}
			}
			return exitOK
		})
		if found != nil {
			if found.Deleted {
				fmt.Fprintf(r.stdout, "Property %s was deleted\n", found.Name)
			} else {
				fmt.Fprintf(r.stdout, "Name: %s, value: %s, flags: %s\n", found.Name, found.Value, found.Flags)
			}
			return exitOK
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.errorf("Time out or interruption while waiting for a notification.")
	if failOnTimeout {
		return exitSyntax
	}
	return exitOK
}

// metrics implements setup and query for CPU/Load/User and
// CPU/Load/Kernel of a VM (VBoxManageMetrics.cpp's table).
func (r *run) metrics(args []string) int {
	if len(args) == 0 {
		return r.syntax("Incorrect parameters")
	}
	sub, rest := args[0], args[1:]
	for len(rest) >= 2 && (rest[0] == "--period" || rest[0] == "--samples") && sub == "setup" {
		rest = rest[2:]
	}
	if len(rest) == 0 {
		return r.syntax("Incorrect parameters")
	}
	return r.withState(func(s *State) int {
		m, code := r.findMachine(s, rest[0], "VBoxManageMetrics.cpp", 120)
		if m == nil {
			return code
		}
		r.count(m, "metrics "+sub)
		switch sub {
		case "setup":
			m.MetricsSetup = true
			return exitOK
		case "query":
			fmt.Fprintf(r.stdout, "Object          Metric                                   Values\n"+
				"--------------- ---------------------------------------- --------------------------------------------\n")
			for _, mt := range []struct {
				name string
				v    float64
			}{{"CPU/Load/User", m.CPULoadUser}, {"CPU/Load/Kernel", m.CPULoadKernel}} {
				fmt.Fprintf(r.stdout, "%-15s %-40s ", m.Name, mt.name)
				if m.MetricsSetup {
					milli := int(mt.v * 1000)
					fmt.Fprintf(r.stdout, "%d.%02d%%", milli/1000, (milli*100/1000)%100)
				}
				fmt.Fprintln(r.stdout)
			}
			return exitOK
		}
		return r.syntax("Invalid parameter '" + sub + "'")
	})
}

// control is VBoxControl: the logo unless --nologo, then the command.
func (r *run) control(args []string) int {
	logo := true
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		switch args[0] {
		case "--nologo", "-nologo":
			logo = false
		case "-V", "--version":
			fmt.Fprintln(r.stdout, Version)
			return exitOK
		default:
			r.errorf("unknown option '%s'", args[0])
			return exitSyntax
		}
		args = args[1:]
	}
	if logo {
		fmt.Fprintf(r.stdout, "Oracle VM VirtualBox Guest Additions Command Line Management Interface Version %s\nCopyright (C) 2008-2024 Oracle and/or its affiliates\n\n", strings.SplitN(Version, "r", 2)[0])
	}
	vm := os.Getenv(EnvVM)
	inGuest := false
	update(r.path, func(s *State) error {
		m := s.Machine(vm)
		inGuest = m != nil && (m.State == "running" || m.State == "paused")
		return nil
	})
	if !inGuest {
		fmt.Fprintf(r.stderr, "Could not contact the host system.  Make sure that you are running this\napplication inside a VirtualBox guest system, and that you have sufficient\nuser permissions.\n")
		return exitFailure
	}
	if len(args) == 0 || args[0] != "guestproperty" {
		r.guestUsage()
		return exitSyntax
	}
	args = args[1:]
	if len(args) == 0 {
		r.guestUsage()
		return exitFailure
	}
	switch args[0] {
	case "get":
		return r.guestGet(vm, args[1:])
	case "set", "delete", "unset":
		return r.guestSet(vm, args[0], args[1:])
	case "enumerate":
		return r.guestEnumerate(vm, args[1:])
	case "wait":
		return r.guestWait(vm, args[1:])
	}
	r.guestUsage()
	return exitFailure
}

func (r *run) guestUsage() {
	fmt.Fprintf(r.stdout, "Usage:\n\n")
	for _, l := range []string{"get <property> [--verbose]", "set <property> [<value> [--flags <flags>]]", "delete|unset <property>",
		"enumerate [--patterns <patterns>]", "wait <patterns>"} {
		fmt.Fprintf(r.stdout, "%s %-*s%s\n", r.prog, 35-len(r.prog), "guestproperty", " "+l)
	}
}

func (r *run) guestGet(vm string, args []string) int {
	if len(args) != 1 && !(len(args) == 2 && (args[1] == "--verbose" || args[1] == "-verbose")) {
		r.guestUsage()
		return exitFailure
	}
	return r.withState(func(s *State) int {
		m := s.Machine(vm)
		r.count(m, "VBoxControl get")
		p, ok := m.Props[args[0]]
		if !ok {
			fmt.Fprintln(r.stdout, "No value set!")
			return exitOK
		}
		fmt.Fprintf(r.stdout, "Value: %s\n", p.Value)
		if len(args) == 2 {
			fmt.Fprintf(r.stdout, "Timestamp: %d ns\nFlags: %s\n", p.Timestamp, p.Flags)
		}
		return exitOK
	})
}

// guestSet is VBoxControl guestproperty set/delete: the service checks the
// name (VERR_INVALID_PARAMETER), the value size (VERR_TOO_MUCH_DATA), the
// property count and the flags.
func (r *run) guestSet(vm, sub string, args []string) int {
	var name, value, flags string
	del := sub != "set"
	switch {
	case len(args) == 1:
		name, del = args[0], true
	case !del && len(args) == 2:
		name, value = args[0], args[1]
	case !del && len(args) == 4 && (args[2] == "--flags" || args[2] == "-flags"):
		name, value, flags = args[0], args[1], args[3]
	default:
		r.guestUsage()
		return exitFailure
	}
	what := "store the property value"
	if sub != "set" {
		what = "delete the property value"
	}
	return r.withState(func(s *State) int {
		m := s.Machine(vm)
		r.count(m, "VBoxControl "+sub)
		fail := func(rc string) int {
			r.errorf("Failed to %s, error %s", what, rc)
			return exitFailure
		}
		if len(name)+1 > MaxNameLen || len(name) == 0 || strings.ContainsAny(name, "*?|") {
			return fail("VERR_INVALID_PARAMETER")
		}
		if len(value)+1 > MaxValueLen {
			return fail("VERR_TOO_MUCH_DATA")
		}
		if !checkFlags(flags) {
			return fail("VERR_PARSE_ERROR")
		}
		old, exists := m.Props[name]
		if exists && hasFlag(old.Flags, "RDONLYGUEST") {
			return fail("VERR_PERMISSION_DENIED")
		}
		if !del && !exists && len(m.Props) >= MaxProps {
			return fail("VERR_TOO_MUCH_DATA")
		}
		if del && !exists {
			return exitOK
		}
		s.setProp(m, name, value, strings.ToUpper(flags), del)
		return exitOK
	})
}

func (r *run) guestEnumerate(vm string, args []string) int {
	patterns := ""
	if len(args) > 1 && (args[0] == "--patterns" || args[0] == "-patterns") {
		patterns = strings.Join(args[1:], "|")
	} else if len(args) != 0 {
		r.guestUsage()
		return exitFailure
	}
	return r.withState(func(s *State) int {
		m := s.Machine(vm)
		r.count(m, "VBoxControl enumerate")
		var names []string
		for n := range m.Props {
			if matchPatterns(patterns, n) {
				names = append(names, n)
			}
		}
		if len(names) == 0 {
			fmt.Fprintln(r.stdout, "No properties found.")
			return exitOK
		}
		sort.Strings(names)
		for _, n := range names {
			p := m.Props[n]
			fmt.Fprintf(r.stdout, "Name: %s, value: %s, timestamp: %d, flags: %s\n", n, p.Value, p.Timestamp, p.Flags)
		}
		return exitOK
	})
}

// guestWait is VBoxControl guestproperty wait: with --timestamp T it
// returns the first remembered change after the one stamped T (the oldest
// remembered one if T is no longer remembered), else waits for a new one.
func (r *run) guestWait(vm string, args []string) int {
	if len(args) < 1 {
		r.guestUsage()
		return exitFailure
	}
	patterns := args[0]
	var since int64
	timeout := time.Duration(-1)
	for i := 1; i < len(args); i++ {
		if i+1 >= len(args) {
			r.guestUsage()
			return exitFailure
		}
		switch args[i] {
		case "--timeout", "-timeout":
			ms, err := strconv.ParseUint(args[i+1], 10, 32)
			if err != nil {
				r.guestUsage()
				return exitFailure
			}
			timeout = time.Duration(ms) * time.Millisecond
		case "--timestamp", "-timestamp":
			ts, err := strconv.ParseUint(args[i+1], 10, 64)
			if err != nil {
				r.guestUsage()
				return exitFailure
			}
			since = int64(ts)
		default:
			r.guestUsage()
			return exitFailure
		}
		i++
	}
	var startSeq uint64
	r.withState(func(s *State) int {
		startSeq = s.Seq
		r.count(s.Machine(vm), "VBoxControl wait")
		return exitOK
	})
	deadline := time.Now().Add(timeout)
	for {
		var found *Change
		r.withState(func(s *State) int {
			m := s.Machine(vm)
			if m == nil {
				return exitOK
			}
			after := -1 // index of the change stamped since
			if since != 0 {
				for i, c := range m.Changes {
					if c.Timestamp == since {
						after = i
					}
				}
			}
			for i := range m.Changes {
				c := m.Changes[i]
				var eligible bool
				switch {
				case since == 0:
					eligible = c.Seq > startSeq
				case after >= 0:
					eligible = i > after
				default: // not remembered: the oldest one will do
					eligible = true
				}
				if eligible && matchPatterns(patterns, c.Name) {
					found = &c
					break
				}
			}
			return exitOK
		})
		if found != nil {
			if found.Deleted {
				fmt.Fprintf(r.stdout, "Property %s was deleted\n", found.Name)
			} else {
				fmt.Fprintf(r.stdout, "Name: %s\nValue: %s\nTimestamp: %d ns\nFlags: %s\n", found.Name, found.Value, found.Timestamp, found.Flags)
			}
			return exitOK
		}
		if timeout >= 0 && time.Now().After(deadline) {
			r.errorf("Failed to get a notification, error VERR_TIMEOUT")
			return exitFailure
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ErrBuild wraps a failure to build the fake program.
var ErrBuild = errors.New("building the fake VBoxManage/VBoxControl")
