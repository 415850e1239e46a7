package stack

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"

	"github.com/hotplugheaven/hotplug/integration/testvm"
	"github.com/hotplugheaven/hotplug/proto"
)

// LibvirtSocket is the libvirtd socket the libvirt guest helpers use.
const LibvirtSocket = "/run/libvirt/libvirt-sock"

// LibvirtSetup says what a host needs for the libvirt tests; errors about a
// missing libvirtd end with it.
const LibvirtSetup = "apt-get install libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients; " +
	"a libvirt-qemu user and the kvm and libvirt-qemu groups; mkdir -p /var/log/libvirt; virtlogd -d; libvirtd -d"

// LibvirtOptions configures StartLibvirtGuest. Zero fields take defaults.
type LibvirtOptions struct {
	// Dir holds the agent binary and the guest's console log.
	Dir string
	// MaxCPUs is the domain's <vcpu> (default 8: under TCG each slot can be
	// plugged once per VM life, and the test cycles).
	MaxCPUs int
	// AgentArgs are extra hotplug-agent flags.
	AgentArgs string
	// Logf reports progress (default: discard).
	Logf func(format string, args ...any)
	// MemoryDeviceMB, when set, gives the domain a virtio-mem device of
	// that size beside its 512 MiB (libvirt needs a NUMA cell for it), and
	// the guest onlines what it adds as movable memory.
	MemoryDeviceMB int
}

// LibvirtGuest is a transient libvirt domain (type qemu, TCG) booting the
// testvm kernel and initramfs with the real agent, its agent port as a
// libvirt <channel type='unix'>. The code under test (hypervisor.Libvirt,
// the actuator) gets Domain and AgentSocket; the test observes through its
// own libvirt connection (QEMU's state via the monitor passthrough,
// libvirt's own count) and the guest's control shell.
type LibvirtGuest struct {
	Domain string
	opts   LibvirtOptions

	sockDir string
	nc      net.Conn
	l       *libvirt.Libvirt
	dom     libvirt.Domain

	ctlMu   sync.Mutex
	ctl     net.Conn
	pending []byte

	loadMu sync.Mutex
	load   []int

	stopOnce sync.Once
}

// StartLibvirtGuest builds the agent and the guest image, defines and starts
// the domain, and returns once the guest's control shell answers. Stop it
// with Stop.
func StartLibvirtGuest(ctx context.Context, opts LibvirtOptions) (*LibvirtGuest, error) {
	if opts.MaxCPUs == 0 {
		opts.MaxCPUs = 8
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	nc, err := net.DialTimeout("unix", LibvirtSocket, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("libvirtd is not reachable at %s: %w (the host needs: %s)", LibvirtSocket, err, LibvirtSetup)
	}
	g := &LibvirtGuest{opts: opts, nc: nc, l: libvirt.NewWithDialer(dialers.NewAlreadyConnected(nc))}
	if err := g.l.ConnectToURI(libvirt.QEMUSystem); err != nil {
		nc.Close()
		return nil, fmt.Errorf("opening qemu:///system: %w (the host needs: %s)", err, LibvirtSetup)
	}
	ok := false
	defer func() {
		if !ok {
			g.Stop()
		}
	}()
	agentBin, _, err := Build(ctx, opts.Dir)
	if err != nil {
		return nil, err
	}
	kernel, err := testvm.EnsureKernel(ctx, "")
	if err != nil {
		return nil, err
	}
	start := fmt.Sprintf("exec /usr/bin/hotplug-agent --transport virtio-serial --interval 1s --log-level debug %s 2>&1\n", opts.AgentArgs)
	var modules []string
	if opts.MemoryDeviceMB > 0 {
		modules = []string{"virtio_mem"}
		start = "modprobe virtio_mem\n" + start
	}
	img, err := testvm.BuildInitramfs(ctx, testvm.InitramfsOptions{Kernel: kernel, Modules: modules, Files: map[string]testvm.File{
		"/usr/bin/hotplug-agent": {HostPath: agentBin, Mode: 0o755},
		"/etc/testvm/start.sh":   {Data: []byte(start), Mode: 0o755},
	}})
	if err != nil {
		return nil, err
	}
	emulator, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return nil, fmt.Errorf("qemu-system-x86_64: %w (run make deps)", err)
	}
	// Unix socket paths must fit sun_path; test directories do not.
	if g.sockDir, err = os.MkdirTemp("/tmp", "hplv"); err != nil {
		return nil, err
	}
	var b [4]byte
	rand.Read(b[:])
	g.Domain = "hp-e2e-" + hex.EncodeToString(b[:])
	domXML := libvirtGuestXML(g.Domain, opts.MaxCPUs, emulator, kernel.Vmlinuz, img, g.ConsoleLog(), g.AgentSocket(), g.controlSocket())
	if opts.MemoryDeviceMB > 0 {
		domXML = withVirtioMem(domXML, opts.MaxCPUs, opts.MemoryDeviceMB)
	}
	if err := os.WriteFile(filepath.Join(opts.Dir, "domain.xml"), []byte(domXML), 0o644); err != nil {
		return nil, err
	}
	bootStart := time.Now()
	if g.dom, err = g.l.DomainCreateXML(domXML, 0); err != nil {
		return nil, fmt.Errorf("creating domain %s: %w (XML in %s)", g.Domain, err, filepath.Join(opts.Dir, "domain.xml"))
	}
	if _, _, err := g.Run(ctx, "true"); err != nil {
		return nil, fmt.Errorf("guest %s not ready: %w\n--- console ---\n%s", g.Domain, err, g.ConsoleTail(40))
	}
	opts.Logf("libvirt domain %s booted in %v (kernel %s, %d vCPU slots)", g.Domain, time.Since(bootStart).Round(100*time.Millisecond), kernel.Version, opts.MaxCPUs)
	ok = true
	return g, nil
}

// libvirtGuestXML is the test domain: TCG, one of maxCPUs vCPUs at boot,
// direct kernel boot, the console in a file, the agent and control ports as
// libvirt unix channels. QEMU runs as root without relabelling (seclabel)
// so it can read the cached kernel and image without libvirt chowning them.
func libvirtGuestXML(name string, maxCPUs int, emulator, kernel, initrd, console, agentSock, controlSock string) string {
	return fmt.Sprintf(`<domain type='qemu'>
  <name>%s</name>
  <memory unit='MiB'>512</memory>
  <vcpu placement='static' current='1'>%d</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>%s</kernel>
    <initrd>%s</initrd>
    <cmdline>console=ttyS0 panic=-1 testvm.name=%s</cmdline>
  </os>
  <features><acpi/><apic/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>%s</emulator>
    <serial type='file'><source path='%s'/><target port='0'/></serial>
    <controller type='virtio-serial' index='0'/>
    <channel type='unix'>
      <source mode='bind' path='%s'/>
      <target type='virtio' name='%s'/>
    </channel>
    <channel type='unix'>
      <source mode='bind' path='%s'/>
      <target type='virtio' name='%s'/>
    </channel>
    <memballoon model='none'/>
  </devices>
  <seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>
</domain>`, name, maxCPUs, kernel, initrd, name, emulator, console, agentSock, testvm.AgentPortName, controlSock, testvm.ControlPortName)
}

// withVirtioMem adds to a test domain what libvirt needs for a virtio-mem
// device of mb MiB: maxMemory, a NUMA cell holding the boot memory, the
// device on that node, and the kernel argument that onlines its memory as
// movable.
func withVirtioMem(domXML string, maxCPUs, mb int) string {
	domXML = strings.Replace(domXML, "  <memory unit='MiB'>512</memory>\n",
		fmt.Sprintf("  <maxMemory slots='1' unit='MiB'>%d</maxMemory>\n  <memory unit='MiB'>512</memory>\n", 512+mb), 1)
	domXML = strings.Replace(domXML, "  <features>",
		fmt.Sprintf("  <cpu><numa><cell id='0' cpus='0-%d' memory='512' unit='MiB'/></numa></cpu>\n  <features>", maxCPUs-1), 1)
	domXML = strings.Replace(domXML, "testvm.name=", "memhp_default_state=online_movable testvm.name=", 1)
	return strings.Replace(domXML, "    <memballoon model='none'/>",
		fmt.Sprintf("    <memory model='virtio-mem'><target><size unit='MiB'>%d</size><node>0</node><block unit='KiB'>2048</block><requested unit='MiB'>0</requested></target></memory>\n    <memballoon model='none'/>", mb), 1)
}

// AgentSocket is the host end of the guest's org.hotplugheaven.0 channel;
// libvirt's QEMU listens, the actuator connects.
func (g *LibvirtGuest) AgentSocket() string { return filepath.Join(g.sockDir, "agent.sock") }

func (g *LibvirtGuest) controlSocket() string { return filepath.Join(g.sockDir, "control.sock") }

// ConsoleLog is the guest's serial console.
func (g *LibvirtGuest) ConsoleLog() string { return filepath.Join(g.opts.Dir, "console.log") }

// ConsoleTail returns the last n console lines, for failure messages.
func (g *LibvirtGuest) ConsoleTail(n int) string {
	b, err := os.ReadFile(g.ConsoleLog())
	if err != nil {
		return fmt.Sprintf("(no console log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// Stop destroys the domain and closes the connections. Idempotent.
func (g *LibvirtGuest) Stop() {
	g.stopOnce.Do(func() {
		g.ctlMu.Lock()
		if g.ctl != nil {
			g.ctl.Close()
		}
		g.ctlMu.Unlock()
		if g.dom.Name != "" {
			if err := g.l.DomainDestroy(g.dom); err != nil && !libvirt.IsNotFound(err) {
				g.opts.Logf("destroying domain %s: %v", g.Domain, err)
			}
		}
		g.nc.Close()
		if g.sockDir != "" {
			os.RemoveAll(g.sockDir)
		}
	})
}

// Run executes cmd with /bin/sh in the guest through the control shell
// (testvm's protocol, see integration/README.md) and returns its combined
// output and exit status. Calls are serialised.
func (g *LibvirtGuest) Run(ctx context.Context, cmd string) (string, int, error) {
	g.ctlMu.Lock()
	defer g.ctlMu.Unlock()
	for g.ctl == nil {
		c, err := net.Dial("unix", g.controlSocket())
		if err == nil {
			g.ctl, g.pending = c, nil
			break
		}
		select {
		case <-ctx.Done():
			return "", -1, fmt.Errorf("control socket %s: %w (last error %v)", g.controlSocket(), ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	stop := context.AfterFunc(ctx, func() { g.ctl.SetDeadline(time.Now()) })
	defer stop()
	g.ctl.SetDeadline(time.Time{})
	var idb [8]byte
	rand.Read(idb[:])
	id := hex.EncodeToString(idb[:])
	if _, err := fmt.Fprintf(g.ctl, "%s %s\n", id, base64.StdEncoding.EncodeToString([]byte(cmd))); err != nil {
		g.ctl.Close()
		g.ctl = nil
		return "", -1, fmt.Errorf("run %q: %w", cmd, err)
	}
	begin, end := []byte("TESTVM-BEGIN "+id+"\n"), []byte("\nTESTVM-END "+id+" ")
	buf := make([]byte, 32<<10)
	for {
		if b := bytes.Index(g.pending, begin); b >= 0 {
			rest := g.pending[b+len(begin):]
			if e := bytes.Index(rest, end); e >= 0 {
				tail := rest[e+len(end):]
				if nl := bytes.IndexByte(tail, '\n'); nl >= 0 {
					status, err := strconv.Atoi(string(tail[:nl]))
					out := string(rest[:e])
					g.pending = append([]byte(nil), tail[nl+1:]...)
					if err != nil {
						return "", -1, fmt.Errorf("run %q: bad status %q", cmd, tail[:nl])
					}
					return out, status, nil
				}
			}
		}
		if len(g.pending) > 16<<20 {
			g.ctl.Close()
			g.ctl = nil
			return "", -1, fmt.Errorf("run %q: reply longer than 16 MiB", cmd)
		}
		n, err := g.ctl.Read(buf)
		g.pending = append(g.pending, buf[:n]...)
		if err != nil {
			if ctx.Err() == nil {
				g.ctl.Close()
				g.ctl = nil
			}
			return "", -1, fmt.Errorf("run %q: %w", cmd, err)
		}
	}
}

// GuestOnline reads the guest's online CPU set.
func (g *LibvirtGuest) GuestOnline(ctx context.Context) (proto.CPUSet, error) {
	out, status, err := g.Run(ctx, "cat /sys/devices/system/cpu/online")
	if err != nil || status != 0 {
		return proto.CPUSet{}, fmt.Errorf("reading guest online CPUs: status %d, %v: %s", status, err, out)
	}
	return proto.ParseCPUList(out)
}

// StartLoad starts n CPU burners in the guest.
func (g *LibvirtGuest) StartLoad(ctx context.Context, n int) error {
	g.loadMu.Lock()
	defer g.loadMu.Unlock()
	for i := 0; i < n; i++ {
		out, status, err := g.Run(ctx, "setsid sh -c 'while :; do :; done' </dev/null >/dev/null 2>&1 & echo $!")
		if err != nil || status != 0 {
			return fmt.Errorf("starting a burner: status %d, %v: %s", status, err, out)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(out))
		if err != nil {
			return fmt.Errorf("starting a burner: pid %q", out)
		}
		g.load = append(g.load, pid)
	}
	return nil
}

// StopLoad kills every burner.
func (g *LibvirtGuest) StopLoad(ctx context.Context) error {
	g.loadMu.Lock()
	defer g.loadMu.Unlock()
	var errs []error
	for _, pid := range g.load {
		if _, _, err := g.Run(ctx, fmt.Sprintf("kill -KILL -- -%[1]d 2>/dev/null || kill -KILL %[1]d; true", pid)); err != nil {
			errs = append(errs, err)
		}
	}
	g.load = nil
	return errors.Join(errs...)
}

// QEMUPlugged counts the CPUs QEMU itself has plugged, asked through the
// test's own libvirt connection (monitor passthrough).
func (g *LibvirtGuest) QEMUPlugged(ctx context.Context) (int, error) {
	out, err := g.l.QEMUDomainMonitorCommand(g.dom, `{"execute":"query-hotpluggable-cpus"}`, 0)
	if err != nil {
		return 0, fmt.Errorf("query-hotpluggable-cpus through libvirt: %w", err)
	}
	var reply struct {
		Return []struct {
			QOMPath string `json:"qom-path"`
		} `json:"return"`
	}
	if err := json.Unmarshal([]byte(out), &reply); err != nil {
		return 0, fmt.Errorf("query-hotpluggable-cpus: %q: %w", out, err)
	}
	n := 0
	for _, c := range reply.Return {
		if c.QOMPath != "" {
			n++
		}
	}
	return n, nil
}

// LibvirtCurrent is libvirt's own count of live vCPUs (virsh vcpucount
// --live), which under TCG lags QEMU after unplugs (see
// host/hypervisor/libvirt.go).
func (g *LibvirtGuest) LibvirtCurrent(ctx context.Context) (int, error) {
	n, err := g.l.DomainGetVcpusFlags(g.dom, uint32(libvirt.DomainAffectLive))
	return int(n), err
}

// GuestLog greps the console for the agent's lines, for failure messages.
func (g *LibvirtGuest) GuestLog(match string) string {
	f, err := os.Open(g.ConsoleLog())
	if err != nil {
		return ""
	}
	defer f.Close()
	var b strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.Contains(sc.Text(), match) {
			b.WriteString(sc.Text() + "\n")
		}
	}
	return b.String()
}
