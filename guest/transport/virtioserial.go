package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// DefaultPortName is the virtio-serial port name the actuator's VMs use
// (`-device virtserialport,name=org.hotplugheaven.0`).
const DefaultPortName = "org.hotplugheaven.0"

// VirtioSerial opens a virtio-serial port in the guest.
//
// Semantics worth knowing (drivers/char/virtio_console.c): while no host
// process has the port's chardev open, read returns 0 (EOF) at once and
// write blocks until one connects; when the host side closes, a blocked
// read returns EOF. So the agent writes its Hello first and treats EOF as
// "actuator gone, reconnect later".
type VirtioSerial struct {
	// Path, when set, is the device to open and Name is ignored.
	Path string
	// Name is the port name; the device is found through
	// /dev/virtio-ports/NAME (a udev link) or, without udev, by scanning
	// /sys/class/virtio-ports/*/name.
	Name    string
	DevRoot string // default /dev
	SysRoot string // default /sys
}

var _ Dialer = (*VirtioSerial)(nil)

// ErrPortNotFound: no virtio-serial port with the configured name.
var ErrPortNotFound = errors.New("virtio-serial port not found")

// Resolve returns the device path of the port.
func (v *VirtioSerial) Resolve() (string, error) {
	if v.Path != "" {
		return v.Path, nil
	}
	name := v.Name
	if name == "" {
		name = DefaultPortName
	}
	dev, sys := or(v.DevRoot, "/dev"), or(v.SysRoot, "/sys")
	link := filepath.Join(dev, "virtio-ports", name)
	if _, err := os.Stat(link); err == nil {
		return link, nil
	}
	ports, _ := filepath.Glob(filepath.Join(sys, "class", "virtio-ports", "*", "name"))
	for _, p := range ports {
		b, err := os.ReadFile(p)
		if err == nil && strings.TrimSpace(string(b)) == name {
			return filepath.Join(dev, filepath.Base(filepath.Dir(p))), nil
		}
	}
	return "", fmt.Errorf("%w: no port named %q under %s or %s/class/virtio-ports "+
		"(is the VM started with -device virtserialport,name=%s and is the virtio_console module loaded?)",
		ErrPortNotFound, name, link, sys, name)
}

// Dial opens the port.
func (v *VirtioSerial) Dial(ctx context.Context) (io.ReadWriteCloser, error) {
	path, err := v.Resolve()
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("opening virtio-serial port: %w", err)
	}
	return f, nil
}

func (v *VirtioSerial) String() string {
	if v.Path != "" {
		return "virtio-serial:" + v.Path
	}
	return "virtio-serial:" + or(v.Name, DefaultPortName)
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
