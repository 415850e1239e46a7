package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/hotplugheaven/hotplug/guest/collector"
	"github.com/hotplugheaven/hotplug/proto"
)

// execute carries out a command and builds its Ack. CPUs are offlined
// before others are onlined, so a command that moves work between CPUs
// never briefly has both. Every failure is reported per CPU.
func (a *Agent) execute(ctx context.Context, c *proto.Command) *proto.Ack {
	ack := &proto.Ack{ID: c.ID}
	fail := func(cpuN int, err error) {
		if len(ack.Failed) < proto.MaxCPUErrors {
			ack.Failed = append(ack.Failed, proto.CPUError{CPU: uint16(cpuN), Error: clip(err.Error(), proto.MaxErrorLen)})
		}
	}
	if c.Offline.Len() > 0 {
		// APIC ids are only listed for online CPUs: read them first.
		ack.Topology = append(ack.Topology, a.topologyOf(c.Offline)...)
		for _, n := range c.Offline.Slice() {
			if err := a.cpus.Offline(n); err != nil {
				fail(n, err)
				a.log.Warn("offline failed", "cpu", n, "error", err)
				continue
			}
			a.log.Info("cpu offlined", "cpu", n, "command", c.ID)
			if a.eject {
				if err := a.ejectOrRestore(ctx, n); err != nil {
					fail(n, err)
					a.log.Warn("eject failed", "cpu", n, "error", err)
				} else {
					a.log.Info("cpu ejected", "cpu", n, "command", c.ID)
				}
			}
		}
	}
	if c.Online.Len() > 0 {
		octx, cancel := context.WithTimeout(ctx, a.cfg.OnlineTimeout)
		for _, n := range c.Online.Slice() {
			if err := a.cpus.Online(octx, n); err != nil {
				fail(n, err)
				a.log.Warn("online failed", "cpu", n, "error", err)
			} else {
				a.log.Info("cpu onlined", "cpu", n, "command", c.ID)
			}
		}
		cancel()
		ack.Topology = append(ack.Topology, a.topologyOf(c.Online)...)
	}
	if c.WantOnline > 0 {
		octx, cancel := context.WithTimeout(ctx, a.cfg.OnlineTimeout)
		onlined, err := a.onlineUntil(octx, int(c.WantOnline))
		cancel()
		if err != nil {
			fail(0, err)
		}
		ack.Topology = append(ack.Topology, a.topologyOf(onlined)...)
	}
	if c.IntervalNanos != 0 {
		a.setInterval(time.Duration(c.IntervalNanos))
	}
	var err error
	if ack.Present, err = a.cpus.Present(); err != nil {
		fail(0, err)
	}
	if ack.Online, err = a.cpus.OnlineCPUs(); err != nil {
		fail(0, err)
	}
	ack.Present = ack.Present.Union(ack.Online)
	ack.OK = len(ack.Failed) == 0
	if !ack.OK {
		ack.Error = fmt.Sprintf("%d CPU change(s) failed", len(ack.Failed))
	}
	return ack
}

// ejectOrRestore ejects an offlined CPU, as VirtualBox needs before its
// unplugcpu succeeds (the actuator offlines a CPU only to unplug it). If
// the eject fails the CPU is brought back online: an Ack that reports the
// offline failed must leave the CPU as the actuator expects it then,
// online and in use, not offline in a slot VirtualBox will not release.
func (a *Agent) ejectOrRestore(ctx context.Context, n int) error {
	ectx, cancel := context.WithTimeout(ctx, a.cfg.EjectTimeout)
	err := a.cpus.Eject(ectx, n)
	cancel()
	if err == nil {
		return nil
	}
	octx, cancel := context.WithTimeout(ctx, a.cfg.OnlineTimeout)
	defer cancel()
	if oerr := a.cpus.Online(octx, n); oerr != nil {
		return fmt.Errorf("VirtualBox needs the guest to eject the CPU before unplugcpu, and the eject failed: %v; the CPU is offline and onlining it again failed too: %v", err, oerr)
	}
	return fmt.Errorf("VirtualBox needs the guest to eject the CPU before unplugcpu, and the eject failed, so the CPU was onlined again: %v", err)
}

// onlineUntil onlines present but offline CPUs, waiting for hot-added ones
// to appear in sysfs, until at least want CPUs are online or ctx ends. It
// returns the CPUs it onlined.
func (a *Agent) onlineUntil(ctx context.Context, want int) (proto.CPUSet, error) {
	var onlined proto.CPUSet
	for {
		online, err := a.cpus.OnlineCPUs()
		if err != nil {
			return onlined, err
		}
		if online.Len() >= want {
			return onlined, nil
		}
		present, err := a.cpus.Present()
		if err != nil {
			return onlined, err
		}
		for _, n := range present.Difference(online).Slice() {
			if err := a.cpus.Online(ctx, n); err != nil {
				return onlined, err
			}
			onlined.Add(n)
			a.log.Info("cpu onlined", "cpu", n, "want_online", want)
		}
		select {
		case <-ctx.Done():
			return onlined, fmt.Errorf("%d of %d CPUs online: no hot-added CPU appeared (present %s)", online.Len(), want, present)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (a *Agent) topologyOf(set proto.CPUSet) []proto.CPUTopology {
	topo, err := collector.ReadTopology(a.cfg.Collector)
	if err != nil {
		a.log.Debug("no APIC ids", "error", err)
		return nil
	}
	var out []proto.CPUTopology
	for _, t := range topo {
		if set.Has(int(t.CPU)) {
			out = append(out, t)
		}
	}
	return out
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
