// Command vboxfake is the fake VBoxManage and VBoxControl of package
// vboxfake, for tests: install it under both names (vboxfake.Build does).
package main

import (
	"os"

	"github.com/hotplugheaven/hotplug/host/hypervisor/vboxfake"
)

func main() {
	os.Exit(vboxfake.Main(os.Args, os.Stdout, os.Stderr))
}
