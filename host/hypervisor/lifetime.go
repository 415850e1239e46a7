package hypervisor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hotplugheaven/hotplug/host/qmp"

	"github.com/prometheus/procfs"
)

// Lifetime describes a limit on how many vCPUs a VM may start over its
// whole life, which some hypervisors have.
//
// QEMU under TCG (10.0 and earlier) gives every vCPU thread it starts a TCG
// context, never returns it on unplug, and aborts the whole VM once
// `maxcpus` contexts were used ("tcg_register_thread: assertion failed:
// (n < tcg_max_ctxs)"). KVM has no such limit.
type Lifetime struct {
	// Limited is true when the limit applies.
	Limited bool
	// Started is when the hypervisor process started: plugs before it do
	// not count.
	Started time.Time
	// Boot is the number of vCPUs the VM started with; Max the most it may
	// ever start (boot included).
	Boot, Max int
	// Why explains the limit, for error messages.
	Why string
}

// LifetimeLimiter is implemented by backends with a lifetime vCPU limit.
type LifetimeLimiter interface {
	VCPULifetime(ctx context.Context) (Lifetime, error)
}

var _ LifetimeLimiter = (*QEMU)(nil)

// VCPULifetime reports QEMU's TCG lifetime limit: query-kvm says whether
// KVM is in use; the QEMU process's start time comes from the socket
// peer's pid (SO_PEERCRED) and /proc. None of it changes while one QEMU
// process lives, so it is asked once per connection (a new connection may
// be a new process).
func (q *QEMU) VCPULifetime(ctx context.Context) (Lifetime, error) {
	c, err := q.conn(ctx)
	if err != nil {
		return Lifetime{}, err
	}
	q.lifeMu.Lock()
	defer q.lifeMu.Unlock()
	if q.lifeOf == c {
		return q.life, nil
	}
	lt, err := q.vcpuLifetime(ctx, c)
	if err == nil {
		q.life, q.lifeOf = lt, c
	}
	return lt, err
}

func (q *QEMU) vcpuLifetime(ctx context.Context, c *qmp.Client) (Lifetime, error) {
	var kvm struct {
		Enabled bool `json:"enabled"`
	}
	if err := q.exec(ctx, c, "query-kvm", nil, &kvm); err != nil {
		return Lifetime{}, fmt.Errorf("hypervisor: QEMU %s: query-kvm: %w", q.socket, err)
	}
	if kvm.Enabled {
		return Lifetime{}, nil
	}
	slots, err := q.slots(ctx, c)
	if err != nil {
		return Lifetime{}, err
	}
	lt := tcgLifetime(qstate(slots))
	pid := c.PeerPID()
	if pid <= 0 {
		return lt, fmt.Errorf("hypervisor: QEMU %s: cannot tell QEMU's pid, so not when it started", q.socket)
	}
	if lt.Started, err = processStart(q.opts.procRoot(), pid); err != nil {
		return lt, fmt.Errorf("hypervisor: QEMU %s: %w", q.socket, err)
	}
	return lt, nil
}

// tcgLifetime is QEMU's TCG limit for a VM in state st: every slot may be
// used once, the boot vCPUs (those that cannot be removed) included.
func tcgLifetime(st State) Lifetime {
	lt := Lifetime{Limited: true, Max: st.Max(),
		Why: "QEMU under TCG can start at most maxcpus vCPUs in a VM's life (unplugging does not give any back)"}
	for _, s := range st.Slots {
		if s.Plugged && !s.Removable {
			lt.Boot++
		}
	}
	return lt
}

// processStart is when process pid started, from /proc/<pid>/stat.
func processStart(procRoot string, pid int) (time.Time, error) {
	fs, err := procfs.NewFS(procRoot)
	if err != nil {
		return time.Time{}, err
	}
	p, err := fs.Proc(pid)
	if err != nil {
		return time.Time{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	ps, err := p.Stat()
	if err != nil {
		return time.Time{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	start, err := ps.StartTime()
	if err != nil {
		return time.Time{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	return time.Unix(0, int64(start*float64(time.Second))), nil
}

var _ LifetimeLimiter = (*Libvirt)(nil)

// VCPULifetime reports the TCG limit for a libvirt domain (QEMU driver):
// query-kvm through libvirt's monitor passthrough, and the QEMU process's
// start time from libvirt's pid file (<run dir>/qemu/<domain>.pid).
func (lv *Libvirt) VCPULifetime(ctx context.Context) (Lifetime, error) {
	if lv.opts.LibvirtViewOnly {
		return Lifetime{}, nil // no passthrough: cannot tell; libvirt keeps slots single-use under TCG anyway
	}
	// Whether KVM is in use does not change while the domain runs: asked
	// once per connection to libvirtd.
	var kvm struct {
		Enabled bool `json:"enabled"`
	}
	var asked *libvirtConn
	if err := lv.do(ctx, "query-kvm", func(c *libvirtConn) error {
		asked = c
		if c.kvmKnown {
			kvm.Enabled = c.kvm
			return nil
		}
		return lvMonitor{c}.Execute(ctx, "query-kvm", nil, &kvm)
	}); err != nil {
		return Lifetime{}, err
	}
	asked.kvm, asked.kvmKnown = kvm.Enabled, true
	if kvm.Enabled {
		return Lifetime{}, nil
	}
	st, err := lv.State(ctx)
	if err != nil {
		return Lifetime{}, err
	}
	lt := tcgLifetime(st)
	pidFile := filepath.Join(lv.opts.runDir(), "qemu", lv.domain+".pid")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return lt, fmt.Errorf("hypervisor: %s: QEMU's pid: %w", lv, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return lt, fmt.Errorf("hypervisor: %s: QEMU's pid file %s: %w", lv, pidFile, err)
	}
	if lt.Started, err = processStart(lv.opts.procRoot(), pid); err != nil {
		return lt, fmt.Errorf("hypervisor: %s: %w", lv, err)
	}
	return lt, nil
}
