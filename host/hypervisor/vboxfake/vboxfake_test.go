package vboxfake

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestFakeBehavesLikeVirtualBox pins the fake's answers to what VirtualBox
// 7.0 prints and returns (see the package comment for the sources), for
// every case the backends and the bridge depend on.
func TestFakeBehavesLikeVirtualBox(t *testing.T) {
	dir := t.TempDir()
	manage, control, err := Build(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	f, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []Machine{
		{Name: "on", CPUs: 4, CPUHotplug: true, Attached: []int{1}},
		{Name: "nohp", CPUs: 2},
		{Name: "off", CPUs: 2, CPUHotplug: true, State: "poweroff"},
	} {
		if err := f.AddMachine(m); err != nil {
			t.Fatal(err)
		}
	}
	long := strings.Repeat("v", MaxValueLen) // one byte over with the NUL
	for _, tc := range []struct {
		name           string
		prog           string
		vm             string // $VBOXFAKE_VM for VBoxControl
		args           []string
		code           int
		stdout, stderr string
	}{
		{"VM not running", manage, "", []string{"controlvm", "off", "plugcpu", "1"}, 1, "", "VBoxManage: error: Machine 'off' is not currently running.\n"},
		{"hot-plug not enabled", manage, "", []string{"controlvm", "nohp", "plugcpu", "1"}, 1, "", "VBoxManage: error: CPU hotplug is not enabled\nVBoxManage: error: Details: code E_INVALIDARG (0x80070057)"},
		{"CPU 0", manage, "", []string{"controlvm", "on", "unplugcpu", "0"}, 1, "", "VBoxManage: error: Invalid CPU number '0'.\nVBoxManage: error: It is not possible to detach CPU 0\n"},
		{"CPU not ejected", manage, "", []string{"controlvm", "on", "unplugcpu", "1"}, 1, "", "VBoxManage: error: Hot-Remove was aborted because the CPU may still be used by the guest\nVBoxManage: error: Details: code VBOX_E_VM_ERROR (0x80bb0003), component ConsoleWrap, interface IConsole"},
		{"already attached", manage, "", []string{"controlvm", "on", "plugcpu", "1"}, 1, "", "VBoxManage: error: CPU 1 is already attached\n"},
		{"beyond --cpus", manage, "", []string{"controlvm", "on", "plugcpu", "7"}, 1, "", "CPU id exceeds number of possible CPUs [0:3]"},
		{"unknown VM", manage, "", []string{"showvminfo", "nope", "--machinereadable"}, 1, "", "VBoxManage: error: Could not find a registered machine named 'nope'\n"},
		{"plug", manage, "", []string{"controlvm", "on", "plugcpu", "2"}, 0, "", ""},
		{"property too long, guest", control, "on", []string{"--nologo", "guestproperty", "set", "/a", long}, 1, "", "VBoxControl: error: Failed to store the property value, error VERR_TOO_MUCH_DATA\n"},
		{"name too long, guest", control, "on", []string{"--nologo", "guestproperty", "set", "/" + strings.Repeat("n", MaxNameLen-1), "v"}, 1, "", "error VERR_INVALID_PARAMETER\n"},
		{"property too long, host", manage, "", []string{"guestproperty", "set", "on", "/a", long}, 1, "", "VBoxManage: error: VERR_TOO_MUCH_DATA\n"},
		{"longest value", control, "on", []string{"--nologo", "guestproperty", "set", "/a", long[1:]}, 0, "", ""},
		{"get", manage, "", []string{"guestproperty", "get", "on", "/a"}, 0, "Value: " + long[1:] + "\n", ""},
		{"get unset", manage, "", []string{"guestproperty", "get", "on", "/b"}, 0, "No value set!\n", ""},
		{"not in a guest", control, "off", []string{"--nologo", "guestproperty", "get", "/a"}, 1, "", "Could not contact the host system."},
		{"logo", control, "on", []string{"guestproperty", "get", "/b"}, 0, "Oracle VM VirtualBox Guest Additions Command Line Management Interface Version 7.0.20\n", ""},
		{"guest wait timeout", control, "on", []string{"--nologo", "guestproperty", "wait", "/zz*", "--timeout", "50"}, 1, "", "VBoxControl: error: Failed to get a notification, error VERR_TIMEOUT\n"},
		{"host wait timeout", manage, "", []string{"guestproperty", "wait", "on", "/zz*", "--timeout", "50"}, 0, "", "VBoxManage: error: Time out or interruption while waiting for a notification.\n"},
		{"host wait timeout, failing", manage, "", []string{"guestproperty", "wait", "on", "/zz*", "--timeout", "50", "--fail-on-timeout"}, 2, "", ""},
		{"enumerate none", manage, "", []string{"guestproperty", "enumerate", "on", "--patterns", "/zz*"}, 0, "No properties found.\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(tc.prog, tc.args...)
			cmd.Env = append(os.Environ(), f.Env(tc.vm)...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.code || !strings.HasPrefix(stdout.String(), tc.stdout) || !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d, %q…, …%q…", code, stdout.String(), stderr.String(), tc.code, tc.stdout, tc.stderr)
			}
		})
	}
	// The plug above rewrote the settings file, as VirtualBox does.
	m, _ := f.Machine("on")
	b, err := os.ReadFile(m.SettingsFile)
	if err != nil || !strings.Contains(string(b), `<Cpu id="2"/>`) {
		t.Errorf("settings file after plugcpu 2: %v\n%s", err, b)
	}
}

// TestFakeGuestWaitTimestamps: a guest waiting with the timestamp of the
// last change it saw gets the next one, even if it happened before the
// wait started; the host's wait sees only changes after it started.
func TestFakeGuestWaitTimestamps(t *testing.T) {
	dir := t.TempDir()
	manage, control, err := Build(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	f, _ := New(dir)
	f.AddMachine(Machine{Name: "vm", CPUs: 1})
	runOut := func(prog string, args ...string) string {
		cmd := exec.Command(prog, args...)
		cmd.Env = append(os.Environ(), f.Env("vm")...)
		out, _ := cmd.Output()
		return string(out)
	}
	runOut(manage, "guestproperty", "set", "vm", "/h/1", "one")
	first := runOut(control, "--nologo", "guestproperty", "wait", "/h/*", "--timestamp", "1", "--timeout", "100")
	if !strings.Contains(first, "Value: one") {
		t.Fatalf("wait from an old timestamp: %q", first)
	}
	var ts string
	for _, l := range strings.Split(first, "\n") {
		if v, ok := strings.CutPrefix(l, "Timestamp: "); ok {
			ts = strings.TrimSuffix(v, " ns")
		}
	}
	runOut(manage, "guestproperty", "set", "vm", "/h/2", "two")
	if got := runOut(control, "--nologo", "guestproperty", "wait", "/h/*", "--timestamp", ts, "--timeout", "100"); !strings.Contains(got, "Value: two") {
		t.Errorf("wait after %s: %q", ts, got)
	}
	done := make(chan string, 1)
	go func() { done <- runOut(manage, "guestproperty", "wait", "vm", "/g/*", "--timeout", "3000") }()
	time.Sleep(300 * time.Millisecond)
	runOut(control, "--nologo", "guestproperty", "set", "/g/x", "y")
	if got := <-done; got != "Name: /g/x, value: y, flags: \n" {
		t.Errorf("host wait: %q", got)
	}
}
