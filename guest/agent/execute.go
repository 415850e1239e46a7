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
			} else {
				a.log.Info("cpu offlined", "cpu", n, "command", c.ID)
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
