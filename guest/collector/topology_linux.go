package collector

import (
	"fmt"
	"strconv"

	"github.com/prometheus/procfs"

	"github.com/hotplugheaven/hotplug/proto"
)

// ReadTopology returns the APIC id of every CPU listed in <proc>/cpuinfo,
// which lists online CPUs only (Documentation/filesystems/proc.rst;
// arch/x86/kernel/cpu/proc.c skips offline ones). The actuator uses the APIC
// id to find the hypervisor's device for a guest CPU number. It uses the
// "apicid" field, falling back to "initial apicid".
//
// APIC ids are an x86 notion: on other architectures procfs parses cpuinfo
// differently and ReadTopology returns ErrNoAPICID.
func ReadTopology(opts Options) ([]proto.CPUTopology, error) {
	opts = opts.withDefaults()
	fs, err := procfs.NewFS(opts.ProcRoot)
	if err != nil {
		return nil, fmt.Errorf("collector: topology: %w", err)
	}
	infos, err := fs.CPUInfo()
	if err != nil {
		return nil, fmt.Errorf("collector: topology: %s/cpuinfo: %w", opts.ProcRoot, err)
	}
	return topology(infos)
}

func topology(infos []procfs.CPUInfo) ([]proto.CPUTopology, error) {
	topo := make([]proto.CPUTopology, 0, len(infos))
	for _, c := range infos {
		field := c.APICID
		if field == "" {
			field = c.InitialAPICID
		}
		if field == "" {
			continue
		}
		if c.Processor >= proto.MaxCPUs {
			return nil, fmt.Errorf("collector: topology: %w: processor %d is past %d", ErrParse, c.Processor, proto.MaxCPUs)
		}
		id, err := strconv.ParseUint(field, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("collector: topology: %w: processor %d: apicid %q: %v", ErrParse, c.Processor, field, err)
		}
		topo = append(topo, proto.CPUTopology{CPU: uint16(c.Processor), APICID: uint32(id)})
	}
	if len(topo) == 0 {
		return nil, fmt.Errorf("collector: topology: %w", ErrNoAPICID)
	}
	return topo, nil
}
