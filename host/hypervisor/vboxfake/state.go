// Package vboxfake is a stand-in for VirtualBox's VBoxManage (host) and
// VBoxControl (guest) command-line tools, for tests on machines where
// VirtualBox cannot run. One program plays both, chosen by the name it is
// run as; every run reads and writes one JSON state file (locked, so
// concurrent runs behave like calls into one VirtualBox), named by
// $VBOXFAKE_STATE. VBoxControl acts inside the guest of $VBOXFAKE_VM.
//
// It implements only what Hot-Plug Heaven uses, written from the VirtualBox
// manual (CPU hot-plugging, guest properties, VBoxManage reference) and the
// messages of VBoxManage/VBoxControl and Main (MachineImpl, ConsoleImpl,
// GuestPropertySvc.h) as of VirtualBox 7.0: output formats, exit codes and
// error texts for a machine that is not running, CPU hot-plug disabled,
// CPU 0, a CPU the guest has not ejected, and guest properties over the
// service's limits. See host/hypervisor/README.md for what was and was not
// checked against a real VirtualBox.
//
// It is test support: no shipped binary may import it.
package vboxfake

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"
)

// Limits of the guest property service (include/VBox/HostServices/
// GuestPropertySvc.h, VirtualBox 6.1 and later): sizes include the
// terminating NUL.
const (
	MaxNameLen  = 64
	MaxValueLen = 1024
	MaxProps    = 256
	// MaxNotifications is how many changes the service remembers for
	// guests waiting with a timestamp.
	MaxNotifications = 256
)

// Environment variables the fake reads.
const (
	EnvState = "VBOXFAKE_STATE"
	EnvVM    = "VBOXFAKE_VM"
)

// State is everything the fake VirtualBox knows.
type State struct {
	Machines []*Machine `json:"machines"`
	// Seq numbers changes; waits compare against it.
	Seq uint64 `json:"seq"`
}

// Machine is one registered VM.
type Machine struct {
	Name string `json:"name"`
	UUID string `json:"uuid"`
	// State is the VBoxManage short name: running, poweroff, paused,
	// saved, aborted.
	State string `json:"state"`
	// CPUs is --cpus: with CPU hot-plug, the most CPUs the VM can have.
	CPUs       int  `json:"cpus"`
	CPUHotplug bool `json:"cpuhotplug"`
	// Attached are the plugged CPU ids (CPU 0 always).
	Attached []int `json:"attached"`
	// Ejected are attached CPUs the guest has ejected (its ACPI _EJ0 ran):
	// only those can be unplugged.
	Ejected []int `json:"ejected,omitempty"`
	// EjectService says the Guest Additions' VBoxService CPU hot-plug
	// service runs in the guest: it ejects a CPU when the host asks to
	// unplug it, unless the guest cannot give it up (Busy).
	EjectService bool  `json:"eject_service"`
	Busy         []int `json:"busy,omitempty"`
	// UnplugWait is how long unplugcpu waits for the guest service to
	// eject (VirtualBox polls 100 times, 100 ms apart).
	UnplugWait time.Duration `json:"unplug_wait"`
	// SettingsFile is the .vbox file, rewritten on every hot-plug as
	// VirtualBox does.
	SettingsFile string `json:"settings_file"`
	// Props are the guest properties.
	Props map[string]Prop `json:"props"`
	// Changes are the last MaxNotifications property changes.
	Changes []Change `json:"changes"`
	// CPULoadUser and CPULoadKernel are what `metrics query` reports for
	// CPU/Load/User and CPU/Load/Kernel, in percent, once set up.
	CPULoadUser   float64 `json:"cpu_load_user"`
	CPULoadKernel float64 `json:"cpu_load_kernel"`
	MetricsSetup  bool    `json:"metrics_setup"`
	// Calls counts VBoxManage and VBoxControl runs, for tests.
	Calls map[string]int `json:"calls,omitempty"`
}

// Prop is one guest property.
type Prop struct {
	Value     string `json:"value"`
	Timestamp int64  `json:"timestamp"` // ns since the epoch
	Flags     string `json:"flags"`
}

// Change is one property change, as the guest property service reports
// it to waiters.
type Change struct {
	Seq       uint64 `json:"seq"`
	Name      string `json:"name"`
	Value     string `json:"value"`
	Flags     string `json:"flags"`
	Timestamp int64  `json:"timestamp"`
	Deleted   bool   `json:"deleted"`
}

// Machine finds a VM by name or UUID.
func (s *State) Machine(nameOrUUID string) *Machine {
	for _, m := range s.Machines {
		if m.Name == nameOrUUID || m.UUID == nameOrUUID || "{"+m.UUID+"}" == nameOrUUID {
			return m
		}
	}
	return nil
}

func has(list []int, n int) bool {
	for _, v := range list {
		if v == n {
			return true
		}
	}
	return false
}

func without(list []int, n int) []int {
	out := list[:0:0]
	for _, v := range list {
		if v != n {
			out = append(out, v)
		}
	}
	return out
}

// setProp sets (or with del deletes) a property and records the change.
func (s *State) setProp(m *Machine, name, value, flags string, del bool) {
	if m.Props == nil {
		m.Props = map[string]Prop{}
	}
	now := time.Now().UnixNano()
	if n := len(m.Changes); n > 0 && now <= m.Changes[n-1].Timestamp {
		now = m.Changes[n-1].Timestamp + 1 // timestamps identify changes
	}
	if del {
		delete(m.Props, name)
	} else {
		m.Props[name] = Prop{Value: value, Timestamp: now, Flags: flags}
	}
	s.Seq++
	m.Changes = append(m.Changes, Change{Seq: s.Seq, Name: name, Value: value, Flags: flags, Timestamp: now, Deleted: del})
	if len(m.Changes) > MaxNotifications {
		m.Changes = append([]Change(nil), m.Changes[len(m.Changes)-MaxNotifications:]...)
	}
}

// writeSettings rewrites the machine's .vbox file with its CPU section,
// shaped like VirtualBox's (settings.cpp: <CPU count hotplug> with a
// <CpuTree> of <Cpu id>).
func (m *Machine) writeSettings() error {
	if m.SettingsFile == "" {
		return nil
	}
	ids := append([]int(nil), m.Attached...)
	sort.Ints(ids)
	tree := ""
	if m.CPUHotplug {
		tree = "\n        <CpuTree>"
		for _, id := range ids {
			tree += fmt.Sprintf("\n          <Cpu id=\"%d\"/>", id)
		}
		tree += "\n        </CpuTree>\n      "
	}
	hp := ""
	if m.CPUHotplug {
		hp = ` hotplug="true"`
	}
	doc := fmt.Sprintf(`<?xml version="1.0"?>
<!--
** DO NOT EDIT THIS FILE.
** If you make changes to this file while any VirtualBox related application
** is running, your changes will be overwritten later, without taking effect.
** Use VBoxManage or the VirtualBox Manager GUI to make changes.
-->
<VirtualBox xmlns="http://www.virtualbox.org/" version="1.19-linux">
  <Machine uuid="{%s}" name="%s" OSType="Ubuntu_64" snapshotFolder="Snapshots" lastStateChange="2024-01-01T00:00:00Z">
    <Hardware>
      <CPU count="%d"%s>%s</CPU>
      <Memory RAMSize="1024"/>
    </Hardware>
  </Machine>
</VirtualBox>
`, m.UUID, m.Name, m.CPUs, hp, tree)
	tmp := m.SettingsFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(doc), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, m.SettingsFile)
}

// Fake is a state file for tests to set up and inspect.
type Fake struct {
	Path string
	dir  string
}

// New creates an empty state file in dir.
func New(dir string) (*Fake, error) {
	f := &Fake{Path: filepath.Join(dir, "vboxfake.json"), dir: dir}
	return f, f.Update(func(*State) error { return nil })
}

// AddMachine registers m; a zero UUID, state or settings file get defaults
// (a made-up UUID, running, a .vbox file in the fake's directory).
func (f *Fake) AddMachine(m Machine) error {
	if m.UUID == "" {
		m.UUID = fmt.Sprintf("6d1c3a4e-0000-4000-8000-%012x", time.Now().UnixNano()&0xffffffffffff)
	}
	if m.State == "" {
		m.State = "running"
	}
	if m.SettingsFile == "" {
		m.SettingsFile = filepath.Join(f.dir, m.Name, m.Name+".vbox")
	}
	if !has(m.Attached, 0) {
		m.Attached = append([]int{0}, m.Attached...)
	}
	if err := os.MkdirAll(filepath.Dir(m.SettingsFile), 0o755); err != nil {
		return err
	}
	return f.Update(func(s *State) error {
		if s.Machine(m.Name) != nil {
			return fmt.Errorf("machine %q exists", m.Name)
		}
		mm := m
		s.Machines = append(s.Machines, &mm)
		return mm.writeSettings()
	})
}

// Env is the environment the fake programs need, to append to a command's.
func (f *Fake) Env(vm string) []string {
	return []string{EnvState + "=" + f.Path, EnvVM + "=" + vm}
}

// Machine returns a copy of the VM's current state.
func (f *Fake) Machine(name string) (Machine, error) {
	var out Machine
	err := f.Update(func(s *State) error {
		m := s.Machine(name)
		if m == nil {
			return fmt.Errorf("no machine %q", name)
		}
		b, _ := json.Marshal(m)
		return json.Unmarshal(b, &out)
	})
	return out, err
}

// UpdateMachine changes a VM under the state lock; the settings file
// follows.
func (f *Fake) UpdateMachine(name string, fn func(m *Machine)) error {
	return f.Update(func(s *State) error {
		m := s.Machine(name)
		if m == nil {
			return fmt.Errorf("no machine %q", name)
		}
		fn(m)
		return m.writeSettings()
	})
}

// GuestEject does what a guest's ACPI _EJ0 for cpu does.
func (f *Fake) GuestEject(vm string, cpu int) error {
	return f.UpdateMachine(vm, func(m *Machine) {
		if has(m.Attached, cpu) && !has(m.Ejected, cpu) {
			m.Ejected = append(m.Ejected, cpu)
		}
	})
}

// Update runs fn on the state under an exclusive lock and saves it unless
// fn fails.
func (f *Fake) Update(fn func(s *State) error) error { return update(f.Path, fn) }

func update(path string, fn func(s *State) error) error {
	lock, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	var s State
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return err
	default:
		if err := json.Unmarshal(b, &s); err != nil {
			return fmt.Errorf("vboxfake state %s: %w", path, err)
		}
	}
	if err := fn(&s); err != nil {
		return err
	}
	out, err := json.MarshalIndent(&s, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, out, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
