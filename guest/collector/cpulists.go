package collector

import (
	"fmt"

	"github.com/hotplugheaven/hotplug/guest/cpu"
	"github.com/hotplugheaven/hotplug/proto"
)

// cpuListSource reads /sys/devices/system/cpu/{online,present}
// (Documentation/ABI/testing/sysfs-devices-system-cpu) through package cpu.
type cpuListSource struct {
	cpus            *cpu.Controller
	path            string
	online, present proto.CPUSet
}

func (s *cpuListSource) Name() string { return SourceCPULists }
func (s *cpuListSource) Path() string { return s.path }

// Read reads online and present. They are two files read at two moments:
// a hot-remove between the reads can leave a CPU online but no longer
// present. Read again once, then keep only online CPUs that are present so
// the Report stays consistent.
func (s *cpuListSource) Read() error {
	var online, present proto.CPUSet
	var err error
	for range 2 {
		if online, err = s.cpus.OnlineCPUs(); err != nil {
			break
		}
		if present, err = s.cpus.Present(); err != nil {
			break
		}
		if online.SubsetOf(present) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("collector: %w", err)
	}
	s.online, s.present = online.Difference(online.Difference(present)), present
	return nil
}

func (s *cpuListSource) Fill(r *proto.Report) error {
	r.Online, r.Present = s.online, s.present
	return nil
}
