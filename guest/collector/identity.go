package collector

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/hotplugheaven/hotplug/proto"
)

// Identity is what the guest claims to be, for proto.Hello. Every field is a
// claim, never proof: the channel decides which VM a connection belongs to.
type Identity struct {
	// MachineID is <etc>/machine-id (machine-id(5)); empty when missing or
	// still "uninitialized" during first boot.
	MachineID string
	// ProductUUID is the SMBIOS system UUID from
	// <sys>/class/dmi/id/product_uuid (Documentation/ABI/testing/sysfs-class-dmi).
	// Only VMs with SMBIOS tables have it, and only root can read it.
	ProductUUID string
	// Hostname is <proc>/sys/kernel/hostname
	// (Documentation/admin-guide/sysctl/kernel.rst).
	Hostname string
	// SysVendor and ProductName are the SMBIOS system manufacturer and
	// product, <sys>/class/dmi/id/sys_vendor and product_name (readable by
	// every user): which hypervisor the guest runs on.
	SysVendor, ProductName string
}

// VirtualBox says whether DMI names the machine a VirtualBox VM: its
// SMBIOS system is "innotek GmbH" "VirtualBox" (the vendor kept the name of
// the company that wrote it). VirtualBox finishes a CPU hot-unplug only
// when the guest ejects the CPU, which other hypervisors do not need.
func (id Identity) VirtualBox() bool {
	return id.SysVendor == "innotek GmbH" && id.ProductName == "VirtualBox"
}

// ReadIdentity reads the guest's identity under opts' roots. A missing file
// leaves its field empty; other failures (permission denied on product_uuid
// when not root) leave it empty too and are returned, joined, for the agent
// to log — the Identity is usable either way. Each value is trimmed and cut
// to proto.MaxStringLen bytes.
func ReadIdentity(opts Options) (Identity, error) {
	opts = opts.withDefaults()
	var id Identity
	var errs []error
	for _, f := range []struct {
		dst  *string
		path string
	}{
		{&id.MachineID, filepath.Join(opts.EtcRoot, "machine-id")},
		{&id.ProductUUID, filepath.Join(opts.SysRoot, "class", "dmi", "id", "product_uuid")},
		{&id.SysVendor, filepath.Join(opts.SysRoot, "class", "dmi", "id", "sys_vendor")},
		{&id.ProductName, filepath.Join(opts.SysRoot, "class", "dmi", "id", "product_name")},
		{&id.Hostname, filepath.Join(opts.ProcRoot, "sys", "kernel", "hostname")},
	} {
		// Read a little past the limit: enough to trim white space, not
		// enough to let a huge file cost memory.
		b, err := readFileInto(f.path, nil, 4*proto.MaxStringLen)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("collector: identity: %s: %w", f.path, err))
			continue
		}
		*f.dst = boundString(string(b))
	}
	// systemd writes this placeholder until the first boot completes.
	if id.MachineID == "uninitialized" {
		id.MachineID = ""
	}
	return id, errors.Join(errs...)
}

// boundString trims s, drops invalid UTF-8 and cuts it to
// proto.MaxStringLen bytes without splitting a character.
func boundString(s string) string {
	s = strings.ToValidUTF8(strings.TrimSpace(s), "")
	if len(s) <= proto.MaxStringLen {
		return s
	}
	cut := proto.MaxStringLen
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
