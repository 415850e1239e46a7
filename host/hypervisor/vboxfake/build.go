package vboxfake

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Build compiles the fake into dir as VBoxManage and VBoxControl (hard
// links to one binary) and returns their paths. The go command is taken
// from PATH or /usr/local/go/bin.
func Build(ctx context.Context, dir string) (vboxManage, vboxControl string, err error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	bin := filepath.Join(dir, "vboxfake")
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", bin, "github.com/hotplugheaven/hotplug/host/hypervisor/vboxfake/cmd/vboxfake")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", "", fmt.Errorf("%w: go build: %v\n%s", ErrBuild, err, strings.TrimSpace(out.String()))
	}
	vboxManage, vboxControl = filepath.Join(dir, "VBoxManage"), filepath.Join(dir, "VBoxControl")
	for _, p := range []string{vboxManage, vboxControl} {
		os.Remove(p)
		if err := os.Link(bin, p); err != nil {
			return "", "", fmt.Errorf("%w: %v", ErrBuild, err)
		}
	}
	return vboxManage, vboxControl, nil
}
