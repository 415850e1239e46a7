//go:build !linux

package collector

import (
	"fmt"

	"github.com/hotplugheaven/hotplug/proto"
)

// ReadTopology needs procfs's cpuinfo parser, which exists on Linux only.
func ReadTopology(Options) ([]proto.CPUTopology, error) {
	return nil, fmt.Errorf("collector: topology: %w", ErrNoAPICID)
}
