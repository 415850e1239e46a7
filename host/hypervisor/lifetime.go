package hypervisor

import (
	"context"
	"fmt"
	"time"

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
// peer's pid (SO_PEERCRED) and /proc.
func (q *QEMU) VCPULifetime(ctx context.Context) (Lifetime, error) {
	c, err := q.conn(ctx)
	if err != nil {
		return Lifetime{}, err
	}
	var kvm struct {
		Enabled bool `json:"enabled"`
	}
	if err := q.exec(ctx, c, "query-kvm", nil, &kvm); err != nil {
		return Lifetime{}, fmt.Errorf("hypervisor: QEMU %s: query-kvm: %w", q.socket, err)
	}
	if kvm.Enabled {
		return Lifetime{}, nil
	}
	st, err := q.State(ctx)
	if err != nil {
		return Lifetime{}, err
	}
	lt := Lifetime{Limited: true, Max: st.Max(),
		Why: "QEMU under TCG can start at most maxcpus vCPUs in a VM's life (unplugging does not give any back)"}
	for _, s := range st.Slots {
		if s.Plugged && !s.Removable {
			lt.Boot++
		}
	}
	pid := c.PeerPID()
	if pid <= 0 {
		return lt, fmt.Errorf("hypervisor: QEMU %s: cannot tell QEMU's pid, so not when it started", q.socket)
	}
	fs, err := procfs.NewFS(q.opts.procRoot())
	if err != nil {
		return lt, err
	}
	p, err := fs.Proc(pid)
	if err != nil {
		return lt, fmt.Errorf("hypervisor: QEMU %s (pid %d): %w", q.socket, pid, err)
	}
	ps, err := p.Stat()
	if err != nil {
		return lt, fmt.Errorf("hypervisor: QEMU %s (pid %d): %w", q.socket, pid, err)
	}
	start, err := ps.StartTime()
	if err != nil {
		return lt, fmt.Errorf("hypervisor: QEMU %s (pid %d): %w", q.socket, pid, err)
	}
	lt.Started = time.Unix(0, int64(start*float64(time.Second)))
	return lt, nil
}
