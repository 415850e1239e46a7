package integration_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotplugheaven/hotplug/host/config"
	"github.com/hotplugheaven/hotplug/host/eventlog"
	"github.com/hotplugheaven/hotplug/host/qmp"
	"github.com/hotplugheaven/hotplug/integration/stack"
	"github.com/hotplugheaven/hotplug/integration/testvm"
	"github.com/hotplugheaven/hotplug/proto"
)

// lintianAccepted are the lintian tags (warning level or below) the
// packages may carry, each with the reason it is accepted. Anything else at
// warning level, and every error, fails TestDebPackages.
var lintianAccepted = map[string]string{
	// The binaries are static-pie Go programs: ELF type ET_DYN without an
	// interpreter, which lintian takes for a shared library without its
	// libc dependency. Building without -buildmode=pie trades this warning
	// for the error statically-linked-binary.
	"shared-library-lacks-prerequisites": "static-pie Go binary read as a shared library",
	// Info: we ship systemd units only; on sysvinit run the binary yourself.
	"package-supports-alternative-init-but-no-init.d-script": "systemd units only, no init.d script",
	// Info: a string in a bundled Go module, not our text.
	"spelling-error-in-binary": "strings inside bundled Go modules",
}

// agentCaps is CapEff/CapBnd of the agent under its unit: CAP_PERFMON (38)
// and CAP_BPF (39), nothing else.
const agentCaps = "000000c000000000"

// TestDebPackages builds both .deb packages with packaging/build-deb.sh (what
// `make deb` runs), checks them with lintian, installs hotplug-actuator in a
// debootstrapped chroot, and installs hotplug-agent in another one that it
// then boots under QEMU with systemd: the agent must be started by systemd,
// confined as its unit says, reach the real actuator binary (from the
// package) on the host over virtio-serial and get the VM scaled up under
// load and down after it. A second build with a higher version is then
// installed in the running guest from a second disk: the admin's config
// edit must survive and the service must restart on the new binary. Last,
// removal stops the service and keeps the config, purge deletes it.
func TestDebPackages(t *testing.T) {
	if testing.Short() {
		t.Skip("debootstraps and boots a QEMU guest; skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Fatalf("TestDebPackages %v", testvm.ErrNotRoot)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	root, err := stack.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	started := time.Now()
	phase := func(what string, since time.Time) {
		t.Logf("%-34s %6.1f s", what, time.Since(since).Seconds())
	}

	// Packages and rootfs at once: the build is CPU, debootstrap (cold
	// cache only) mostly waits for the network.
	v1 := strings.TrimSpace(mustCmd(ctx, t, root, nil, "packaging/version.sh"))
	v2 := v1 + "+upgrade1"
	debDir, upgDir := filepath.Join(dir, "deb"), filepath.Join(dir, "upgrade")
	built := make(chan error, 1)
	go func() {
		t0 := time.Now()
		if _, err := buildDebs(ctx, root, debDir, v1, ""); err != nil {
			built <- err
			return
		}
		phase("build both packages ("+v1+")", t0)
		t0 = time.Now()
		if _, err := buildDebs(ctx, root, upgDir, v2, "hotplug-agent"); err != nil {
			built <- err
			return
		}
		phase("build hotplug-agent "+v2, t0)
		built <- nil
	}()
	t0 := time.Now()
	rootfs, err := testvm.EnsureRootfs(ctx, testvm.RootfsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	phase("rootfs (debootstrap or cache)", t0)
	if err := <-built; err != nil {
		t.Fatal(err)
	}
	agentDeb := filepath.Join(debDir, "hotplug-agent_"+v1+"_amd64.deb")
	actuatorDeb := filepath.Join(debDir, "hotplug-actuator_"+v1+"_amd64.deb")
	agentDeb2 := filepath.Join(upgDir, "hotplug-agent_"+v2+"_amd64.deb")

	t.Run("lintian", func(t *testing.T) {
		t0 := time.Now()
		checkLintian(ctx, t, agentDeb, actuatorDeb)
		phase("lintian", t0)
	})

	var actuatorBin string
	t.Run("actuator-chroot", func(t *testing.T) {
		t0 := time.Now()
		actuatorBin = checkActuatorChroot(ctx, t, root, rootfs, filepath.Join(dir, "actuator-root"), actuatorDeb, v1,
			filepath.Join(dir, "hotplug-actuator"))
		phase("actuator chroot", t0)
	})
	if actuatorBin == "" {
		t.Fatal("no packaged actuator binary to run the guest against")
	}

	t.Run("agent-guest", func(t *testing.T) {
		checkAgentGuest(ctx, t, root, rootfs, dir, agentDeb, agentDeb2, actuatorBin, v1, v2)
	})
	phase("TestDebPackages total", started)
}

// buildDebs runs packaging/build-deb.sh and returns the .deb paths.
func buildDebs(ctx context.Context, root, out, version, only string) ([]string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	cmd := exec.CommandContext(ctx, "packaging/build-deb.sh", out)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "DEB_VERSION="+version, "GO="+goBin)
	if only != "" {
		cmd.Env = append(cmd.Env, "DEB_PACKAGES="+only)
	}
	b, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		return nil, fmt.Errorf("packaging/build-deb.sh %s (DEB_VERSION=%s): %v\n%s", out, version, err, stderr)
	}
	return strings.Fields(string(b)), nil
}

// lintianLine is one tag: "E: hotplug-agent: tag-name details".
var lintianLine = regexp.MustCompile(`^([EWIPXOCM]): ([a-z0-9.+-]+)(?: [a-z]+)?: ([a-z0-9.+-]+)(?: (.*))?$`)

func checkLintian(ctx context.Context, t *testing.T, debs ...string) {
	lintian, err := exec.LookPath("lintian")
	if err != nil {
		t.Fatalf("lintian not found: apt-get install lintian (CI installs it): %v", err)
	}
	// -I shows info tags too; lintian exits non-zero on errors, which
	// the parse below reports with the tags themselves.
	cmd := exec.CommandContext(ctx, lintian, append([]string{"-I", "--no-tag-display-limit"}, debs...)...)
	out, _ := cmd.CombinedOutput()
	var errs, accepted []string
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		m := lintianLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		level, pkg, tag := m[1], m[2], m[3]
		_, ok := lintianAccepted[tag]
		switch {
		case level == "E" || (level == "W" && !ok):
			errs = append(errs, sc.Text())
		default:
			accepted = append(accepted, fmt.Sprintf("%s %s %s (%s)", level, pkg, tag, lintianAccepted[tag]))
		}
	}
	for _, a := range accepted {
		t.Logf("lintian, accepted: %s", a)
	}
	if len(errs) > 0 {
		t.Errorf("lintian: %d error(s) or unaccepted warning(s):\n%s\nfull output:\n%s", len(errs), strings.Join(errs, "\n"), out)
	}
}

// checkActuatorChroot installs hotplug-actuator with dpkg -i in a copy of
// the rootfs (systemd not running), checks what the package put in place,
// runs its binary, then removes and purges it. It returns a copy of the
// packaged binary for the guest test.
func checkActuatorChroot(ctx context.Context, t *testing.T, root, rootfs, chroot, deb, version, keep string) string {
	if err := testvm.CopyTree(ctx, rootfs, chroot); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(chroot) })
	install(ctx, t, chroot, deb)

	files := map[string]string{
		"/lib/systemd/system/hotplug-actuator.service": "packaging/hotplug-actuator/hotplug-actuator.service",
		"/etc/hotplug-actuator/actuator.toml":          "packaging/hotplug-actuator/actuator.toml",
	}
	for dst, src := range files {
		want, err := os.ReadFile(filepath.Join(root, src))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(chroot, dst))
		if err != nil {
			t.Errorf("after dpkg -i: %v", err)
		} else if string(got) != string(want) {
			t.Errorf("%s differs from %s", dst, src)
		}
	}
	for _, p := range []string{"/usr/share/man/man8/hotplug-actuator.8.gz", "/usr/share/doc/hotplug-actuator/copyright",
		"/usr/share/hotplug-actuator/alerts.yml",
		"/usr/share/doc/hotplug-actuator/changelog.gz"} {
		if _, err := os.Stat(filepath.Join(chroot, p)); err != nil {
			t.Errorf("after dpkg -i: %v", err)
		}
	}
	bin := filepath.Join(chroot, "usr/bin/hotplug-actuator")
	if fi, err := os.Stat(bin); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("/usr/bin/hotplug-actuator: %v, mode %v", err, fi)
	}
	conffiles := mustChroot(ctx, t, chroot, "dpkg-query", "-W", "-f=${Conffiles}", "hotplug-actuator")
	if !strings.Contains(conffiles, "/etc/hotplug-actuator/actuator.toml") {
		t.Errorf("actuator.toml is not a conffile: %q", conffiles)
	}
	// Enabled by postinst with systemd not running: the [Install] symlink.
	wants := filepath.Join(chroot, "etc/systemd/system/multi-user.target.wants/hotplug-actuator.service")
	if target, err := os.Readlink(wants); err != nil || target != "/lib/systemd/system/hotplug-actuator.service" {
		t.Errorf("not enabled by postinst in the chroot: %s -> %q, %v", wants, target, err)
	}
	if got := strings.TrimSpace(mustChroot(ctx, t, chroot, "hotplug-actuator", "--version")); got != "hotplug-actuator "+version {
		t.Errorf("hotplug-actuator --version = %q, want %q", got, "hotplug-actuator "+version)
	}
	// The unit's command on the shipped config: a clear refusal, status 2,
	// which the unit does not restart (RestartPreventExitStatus=2).
	out, err := testvm.Chroot(ctx, chroot, "hotplug-actuator", "run", "--config", "/etc/hotplug-actuator/actuator.toml")
	var ee *exec.ExitError
	if !asExit(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(out, "no VMs configured") {
		t.Errorf("hotplug-actuator run on the shipped config: %v, output %q; want exit 2 naming the missing [[vm]]", err, out)
	}
	// The chroot's own systemd-analyze: the host needs no systemd.
	t.Logf("systemd-analyze security (offline, in the chroot): %s",
		exposure(mustChroot(ctx, t, chroot, "systemd-analyze", "security", "--offline=yes", "hotplug-actuator.service")))

	if b, err := os.ReadFile(bin); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(keep, b, 0o755); err != nil {
		t.Fatal(err)
	}

	// Remove keeps the configuration; purge deletes it and the unit's
	// enablement; the postrm scripts run without systemd.
	mustChroot(ctx, t, chroot, "dpkg", "-r", "hotplug-actuator")
	if _, err := os.Stat(bin); !os.IsNotExist(err) {
		t.Errorf("after dpkg -r: binary still there (%v)", err)
	}
	if _, err := os.Stat(filepath.Join(chroot, "etc/hotplug-actuator/actuator.toml")); err != nil {
		t.Errorf("after dpkg -r the config must stay: %v", err)
	}
	mustChroot(ctx, t, chroot, "dpkg", "-P", "hotplug-actuator")
	for _, p := range []string{"etc/hotplug-actuator", "etc/systemd/system/multi-user.target.wants/hotplug-actuator.service",
		"etc/systemd/system/hotplug-actuator.service", "var/lib/hotplug-actuator"} {
		if _, err := os.Lstat(filepath.Join(chroot, p)); !os.IsNotExist(err) {
			t.Errorf("after dpkg -P: /%s still there (%v)", p, err)
		}
	}
	return keep
}

// checkAgentGuest is the booted half of TestDebPackages.
func checkAgentGuest(ctx context.Context, t *testing.T, root, rootfs, dir, deb, deb2, actuatorBin, v1, v2 string) {
	t0 := time.Now()
	guestRoot := filepath.Join(dir, "agent-root")
	if err := testvm.CopyTree(ctx, rootfs, guestRoot); err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(guestRoot)
	install(ctx, t, guestRoot, deb)
	wants := filepath.Join(guestRoot, "etc/systemd/system/multi-user.target.wants/hotplug-agent.service")
	if _, err := os.Readlink(wants); err != nil {
		t.Fatalf("postinst did not enable hotplug-agent in the chroot: %v", err)
	}
	if err := testvm.InstallControlShell(guestRoot, "pkgtest"); err != nil {
		t.Fatal(err)
	}
	kernel, initrd := bootFilesOut(t, guestRoot, dir)
	rootImg := filepath.Join(dir, "root.img")
	if err := testvm.MakeExt4(ctx, guestRoot, rootImg, 512); err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(guestRoot)
	// The upgrade arrives on a second disk, as an admin's USB stick or
	// cloud volume would: the new agent package and, for systemd-analyze
	// in the guest, the actuator's unit.
	upgTree := filepath.Join(dir, "upgrade-disk")
	os.MkdirAll(upgTree, 0o755)
	copyFile(t, deb2, filepath.Join(upgTree, filepath.Base(deb2)))
	copyFile(t, filepath.Join(root, "packaging/hotplug-actuator/hotplug-actuator.service"), filepath.Join(upgTree, "hotplug-actuator.service"))
	upgImg := filepath.Join(dir, "upgrade.img")
	if err := testvm.MakeExt4(ctx, upgTree, upgImg, 8); err != nil {
		t.Fatal(err)
	}
	t.Logf("%-34s %6.1f s", "guest image (copy, dpkg -i, mkfs)", time.Since(t0).Seconds())

	t0 = time.Now()
	vmDir := filepath.Join(dir, "vm")
	extra := append(testvm.DiskArgs(rootImg, false), testvm.DiskArgs(upgImg, true)...)
	vm, err := testvm.Start(ctx, testvm.Config{Name: "pkgtest", Kernel: kernel, Initramfs: initrd,
		CPUs: 1, MaxCPUs: 8, MemoryMB: 1024, Dir: vmDir, KernelArgs: "root=/dev/vda rw", ExtraArgs: extra})
	if err != nil {
		t.Fatal(err)
	}
	actLog := filepath.Join(dir, "actuator.log")
	t.Cleanup(func() {
		vm.Stop()
		if t.Failed() {
			dumpFile(t, actLog, 60)
			t.Logf("guest console tail:\n%s", vm.ConsoleTail(60))
		}
	})
	if err := vm.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	state, _, err := vm.Run(ctx, "systemctl is-system-running --wait")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%-34s %6.1f s (%s)", "boot to systemd "+strings.TrimSpace(state), time.Since(t0).Seconds(), kernel.Version)
	if s := strings.TrimSpace(state); s != "running" {
		failed, _, _ := vm.Run(ctx, "systemctl --failed --no-legend")
		t.Logf("system state %q; failed units:\n%s", s, failed)
	}
	// Guest sysfs in a bad state would make the assertions below lie.
	if got := strings.TrimSpace(mustGuest(ctx, t, vm, "cat /sys/devices/system/cpu/online")); got != "0" {
		t.Fatalf("guest online CPUs at boot = %q, want 0", got)
	}

	// --- started by systemd, confined as the unit says ---
	first := unitProps(ctx, t, vm, "hotplug-agent")
	if first["ActiveState"] != "active" || first["SubState"] != "running" || first["MainPID"] == "0" {
		t.Fatalf("hotplug-agent.service after boot: %v\njournal:\n%s", first, mustGuest(ctx, t, vm, "journalctl -b -u hotplug-agent --no-pager | tail -30"))
	}
	pid := first["MainPID"]
	proc := mustGuest(ctx, t, vm, "readlink /proc/"+pid+"/exe; cat /proc/"+pid+"/cgroup; grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/"+pid+"/status")
	for _, want := range []string{"/usr/bin/hotplug-agent\n", "/system.slice/hotplug-agent.service", "CapEff:\t" + agentCaps,
		"CapBnd:\t" + agentCaps, "NoNewPrivs:\t1", "Seccomp:\t2"} {
		if !strings.Contains(proc, want) {
			t.Errorf("agent process %s: no %q in\n%s", pid, want, proc)
		}
	}
	journal := mustGuest(ctx, t, vm, "journalctl -b -u hotplug-agent -o cat --no-pager")
	if !hasStart(journal, v1) {
		t.Errorf("agent journal has no start line of version %s:\n%s", v1, journal)
	}
	// CAP_BPF, CAP_PERFMON and bpf(2) in the seccomp list are granted for
	// the run-queue latency programs: under the unit they must load, not
	// fall back to /proc.
	for _, l := range strings.Split(journal, "\n") {
		if strings.Contains(l, "run-queue latency source") {
			if !strings.Contains(l, "source=ebpf-") {
				t.Errorf("eBPF did not load under the unit's confinement: %s", l)
			}
			t.Logf("agent under its unit: %s", strings.TrimSpace(l))
		}
	}
	sec := mustGuest(ctx, t, vm, "systemd-analyze security hotplug-agent.service; mount -o ro /dev/vdb /mnt && systemd-analyze security --offline=yes /mnt/hotplug-actuator.service")
	t.Logf("systemd-analyze security in the guest: %s", exposure(sec))

	// --- the packaged actuator on the host drives the guest ---
	events := filepath.Join(dir, "events.jsonl")
	cfgPath := filepath.Join(dir, "actuator.toml")
	cfg := fmt.Sprintf(`event_log = %q
log_level = "debug"

[api]
socket = %q

[[vm]]
name = "pkgtest"
qmp = %q
unplug_timeout = "60s"
command_timeout = "60s"
black_box = false

[vm.channel]
type = "virtio-serial"
path = %q

[vm.policy]
%s
`, events, filepath.Join(dir, "api.sock"), vm.QMPSocket(), vm.AgentSocket(), stack.DefaultPolicy)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	stopActuator := startActuator(t, actuatorBin, cfgPath, actLog)
	t.Cleanup(stopActuator)
	q := &qemuState{sock: vm.TestQMPSocket()}
	t.Cleanup(q.close)

	waitFor(ctx, t, 90*time.Second, "the agent (version "+v1+") connected to the actuator", func() bool {
		return connectedVersion(readFile(actLog), v1)
	})
	t0 = time.Now()
	var burners []testvm.Job
	for i := 0; i < 2; i++ {
		j, err := vm.Spawn(ctx, "while :; do :; done")
		if err != nil {
			t.Fatal(err)
		}
		burners = append(burners, j)
	}
	var online, plugged int
	waitFor(ctx, t, 3*time.Minute, "scale-up: ≥2 vCPUs online in the guest and plugged in QEMU", func() bool {
		online, plugged = guestOnline(ctx, t, vm), q.plugged(ctx, t)
		return online >= 2 && plugged == online && eventCount(events, "scale_up") > 0
	})
	up := firstOf(t, events, "scale_up")
	if up.Outcome != eventlog.OutcomeOK || up.Result < 2 {
		t.Errorf("scale-up event: %+v", up)
	}
	t.Logf("%-34s %6.1f s (%d → %d vCPUs, rule %s)", "load → scaled up", time.Since(t0).Seconds(), up.From, up.Result, up.Rule)
	t0 = time.Now()
	for _, j := range burners {
		if err := vm.Kill(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(ctx, t, 3*time.Minute, "scale-down: back to 1 vCPU in the guest and in QEMU", func() bool {
		online, plugged = guestOnline(ctx, t, vm), q.plugged(ctx, t)
		return online == 1 && plugged == 1 && eventCount(events, "scale_down") > 0
	})
	t.Logf("%-34s %6.1f s (%d scale-down events)", "idle → back to 1 vCPU", time.Since(t0).Seconds(), eventCount(events, "scale_down"))

	// --- upgrade in the running guest ---
	t0 = time.Now()
	// The admin's edit: JSON logs, visible in every line the restarted
	// agent writes. The packaged agent.toml is the same in both versions,
	// so dpkg keeps the edit without asking.
	mustGuest(ctx, t, vm, `sed -i 's/^#log_format = "text"/log_format = "json"/' /etc/hotplug-agent/agent.toml && grep -q '^log_format = "json"' /etc/hotplug-agent/agent.toml`)
	before := unitProps(ctx, t, vm, "hotplug-agent")
	upg := mustGuest(ctx, t, vm, "dpkg -i /mnt/"+filepath.Base(deb2)+" 2>&1")
	after := unitProps(ctx, t, vm, "hotplug-agent")
	if got := strings.TrimSpace(mustGuest(ctx, t, vm, "dpkg-query -W -f='${Version}' hotplug-agent; echo; hotplug-agent --version")); got != v2+"\nhotplug-agent "+v2 {
		t.Errorf("after the upgrade: %q, want version %s installed and running", got, v2)
	}
	if after["ActiveState"] != "active" || after["InvocationID"] == before["InvocationID"] || after["MainPID"] == before["MainPID"] {
		t.Errorf("service not restarted by the upgrade: before %v, after %v\ndpkg output:\n%s", before, after, upg)
	}
	conf := mustGuest(ctx, t, vm, "cat /etc/hotplug-agent/agent.toml; ls /etc/hotplug-agent")
	if !strings.Contains(conf, "\nlog_format = \"json\"\n") || strings.Contains(conf, ".dpkg-") {
		t.Errorf("config edit lost or dpkg left a copy beside it:\n%s", conf)
	}
	// The new process runs the new binary with the edited config: its
	// journal (this invocation only) has the v2 start line, in JSON.
	var newJournal string
	deadline := time.Now().Add(60 * time.Second)
	for {
		newJournal = mustGuest(ctx, t, vm, "journalctl _SYSTEMD_INVOCATION_ID="+after["InvocationID"]+" -o cat --no-pager")
		if strings.Contains(newJournal, `"@message":"starting"`) && strings.Contains(newJournal, `"version":"`+v2+`"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("journal of the restarted agent (invocation %s) lacks the v2 start line in JSON:\n%s\nwhole unit journal:\n%s",
				after["InvocationID"], newJournal, mustGuest(ctx, t, vm, "journalctl -b -u hotplug-agent -o cat --no-pager | tail -40"))
			break
		}
		time.Sleep(time.Second)
	}
	waitFor(ctx, t, 90*time.Second, "the upgraded agent (version "+v2+") reconnected", func() bool {
		return connectedVersion(readFile(actLog), v2)
	})
	t.Logf("%-34s %6.1f s", "upgrade → reconnected", time.Since(t0).Seconds())
	// dpkg is CPU work in a TCG guest: it can start a scale-up that the
	// agent's restart then interrupts, which rolls back, by design.
	upgradeFrom, upgradeTo := t0, time.Now()

	// --- remove stops the service and keeps the config; purge deletes it ---
	mustGuest(ctx, t, vm, "dpkg -r hotplug-agent >/dev/null 2>&1")
	if st := unitProps(ctx, t, vm, "hotplug-agent"); st["ActiveState"] == "active" {
		t.Errorf("hotplug-agent still active after dpkg -r: %v", st)
	}
	if out, st, _ := vm.Run(ctx, "grep -q '^log_format = \"json\"' /etc/hotplug-agent/agent.toml"); st != 0 {
		t.Errorf("config (with the edit) gone after dpkg -r: %s", out)
	}
	mustGuest(ctx, t, vm, "dpkg -P hotplug-agent >/dev/null 2>&1")
	if out, st, _ := vm.Run(ctx, "ls -d /etc/hotplug-agent /var/lib/hotplug-agent /etc/systemd/system/multi-user.target.wants/hotplug-agent.service 2>&1"); st == 0 {
		t.Errorf("after dpkg -P still there:\n%s", out)
	}
	if evs, _, err := eventlog.ReadFile(events, eventlog.Filter{}); err == nil {
		for _, ev := range evs {
			duringUpgrade := !ev.Time.Before(upgradeFrom) && !ev.Time.After(upgradeTo)
			if ev.Outcome == eventlog.OutcomeRolledBack && duringUpgrade {
				t.Logf("rolled back during the upgrade (the agent restarted mid-action): %s %d→%d", ev.Kind, ev.From, ev.To)
				continue
			}
			if ev.Outcome != eventlog.OutcomeOK && ev.Outcome != eventlog.OutcomeStarted {
				t.Errorf("event with outcome %s: %+v", ev.Outcome, ev)
			}
		}
	}
}

// TestPackagedActuatorConfig: the packaged actuator.toml is valid with its
// example [[vm]] uncommented, and refused as shipped (no VM) with the message
// the postinst shows. Keeps the file's keys in step with host/config.
func TestPackagedActuatorConfig(t *testing.T) {
	root, err := stack.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "packaging/hotplug-actuator/actuator.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := config.Parse(string(b)); err == nil || !strings.Contains(err.Error(), "no VMs configured") {
		t.Errorf("shipped config: %v, want the no-VM refusal", err)
	}
	// Uncomment "#key = …" and "#[table]" lines: every documented key.
	uncomment := regexp.MustCompile(`(?m)^#(\[|[a-z_0-9]+ = )`)
	full := uncomment.ReplaceAllString(string(b), "$1")
	cfg, err := config.Parse(full)
	if err != nil {
		t.Fatalf("shipped config with its examples uncommented: %v\n%s", err, full)
	}
	n := strings.Count(full, "\n[") + len(regexp.MustCompile(`(?m)^[a-z_0-9]+ = `).FindAllString(full, -1))
	if len(cfg.VMs) != 1 || n < 30 {
		t.Errorf("uncommented config: %d VMs and %d keys/tables, want 1 VM and every documented key", len(cfg.VMs), n)
	}
}

func install(ctx context.Context, t *testing.T, chroot, deb string) {
	t.Helper()
	dst := filepath.Join(chroot, "tmp", filepath.Base(deb))
	copyFile(t, deb, dst)
	out := mustChroot(ctx, t, chroot, "dpkg", "-i", "/tmp/"+filepath.Base(deb))
	os.Remove(dst)
	if !strings.Contains(out, "Setting up "+strings.SplitN(filepath.Base(deb), "_", 2)[0]) {
		t.Fatalf("dpkg -i %s:\n%s", filepath.Base(deb), out)
	}
}

func mustChroot(ctx context.Context, t *testing.T, chroot string, args ...string) string {
	t.Helper()
	out, err := testvm.Chroot(ctx, chroot, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mustCmd(ctx context.Context, t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir, cmd.Env = dir, append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func mustGuest(ctx context.Context, t *testing.T, vm *testvm.VM, cmd string) string {
	t.Helper()
	out, st, err := vm.Run(ctx, cmd)
	if err != nil || st != 0 {
		t.Fatalf("guest: %q: status %d, %v:\n%s", cmd, st, err, out)
	}
	return out
}

func asExit(err error, ee **exec.ExitError) bool {
	for err != nil {
		if e, ok := err.(*exec.ExitError); ok {
			*ee = e
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// hasStart reports whether an agent log has the start line of version
// (go-hclog quotes values with '+' in them).
func hasStart(log, version string) bool {
	return strings.Contains(log, "starting: version="+version+" ") || strings.Contains(log, `starting: version="`+version+`"`)
}

// connectedVersion reports whether the actuator log shows an agent of
// version connecting.
func connectedVersion(log, version string) bool {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "agent connected") &&
			(strings.Contains(l, "agent="+version+" ") || strings.Contains(l, `agent="`+version+`"`)) {
			return true
		}
	}
	return false
}

// unitProps reads a unit's state through systemctl show.
func unitProps(ctx context.Context, t *testing.T, vm *testvm.VM, unit string) map[string]string {
	t.Helper()
	out := mustGuest(ctx, t, vm, "systemctl show -p ActiveState,SubState,MainPID,InvocationID,NRestarts,Result "+unit)
	props := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), "="); ok {
			props[k] = v
		}
	}
	return props
}

// exposure picks the "Overall exposure level" lines of systemd-analyze
// security.
func exposure(out string) string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if i := strings.Index(l, "Overall exposure level for "); i >= 0 {
			lines = append(lines, strings.TrimSpace(l[i+len("Overall exposure level for "):]))
		}
	}
	if len(lines) == 0 {
		return "(no score in output: " + out + ")"
	}
	return strings.Join(lines, "; ")
}

func startActuator(t *testing.T, bin, cfg, logPath string) (stop func()) {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", cfg)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the packaged hotplug-actuator: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	return func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logf.Close()
	}
}

func waitFor(ctx context.Context, t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("after %v: still waiting for %s", d, what)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func guestOnline(ctx context.Context, t *testing.T, vm *testvm.VM) int {
	t.Helper()
	set, err := proto.ParseCPUList(mustGuest(ctx, t, vm, "cat /sys/devices/system/cpu/online"))
	if err != nil {
		t.Fatal(err)
	}
	return set.Len()
}

// qemuState counts plugged CPUs over the test's own QMP socket.
type qemuState struct {
	sock string
	c    *qmp.Client
}

func (q *qemuState) plugged(ctx context.Context, t *testing.T) int {
	t.Helper()
	if q.c == nil {
		c, err := qmp.Dial(ctx, q.sock, hclog.NewNullLogger())
		if err != nil {
			t.Fatal(err)
		}
		q.c = c
	}
	var cpus []struct {
		QOMPath string `json:"qom-path"`
	}
	if err := q.c.Execute(ctx, "query-hotpluggable-cpus", nil, &cpus); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range cpus {
		if c.QOMPath != "" {
			n++
		}
	}
	return n
}

func (q *qemuState) close() {
	if q.c != nil {
		q.c.Close()
	}
}

// eventCount counts committed events of kind in the event log.
func eventCount(path, kind string) int {
	evs, _, _ := eventlog.ReadFile(path, eventlog.Filter{})
	n := 0
	for _, e := range evs {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

func firstOf(t *testing.T, path, kind string) eventlog.Event {
	t.Helper()
	evs, _, err := eventlog.ReadFile(path, eventlog.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	return firstOfKind(t, evs, kind, path)
}
