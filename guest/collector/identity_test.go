package collector

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/hotplugheaven/hotplug/proto"
)

func TestReadIdentity(t *testing.T) {
	long := strings.Repeat("h", proto.MaxStringLen+40)
	for _, tc := range []struct {
		name    string
		root    string
		edit    func(t *testing.T, root string)
		want    Identity
		wantErr bool
	}{
		{name: "guest4", root: "guest4", want: Identity{
			MachineID:   "4f1c2a9e0b7d4c61a8e3f5d2b9c07e14",
			ProductUUID: "5b0e6c1a-3f2d-4e8b-9a71-0c4d2e6f8a13",
			Hostname:    "web-3.example.internal",
			SysVendor:   "QEMU", ProductName: "Standard PC (i440FX + PIIX, 1996)",
		}},
		{name: "VirtualBox", root: "guest4",
			edit: func(t *testing.T, root string) {
				writeFile(t, root, "sys/class/dmi/id/sys_vendor", "innotek GmbH\n")
				writeFile(t, root, "sys/class/dmi/id/product_name", "VirtualBox\n")
			},
			want: Identity{MachineID: "4f1c2a9e0b7d4c61a8e3f5d2b9c07e14", ProductUUID: "5b0e6c1a-3f2d-4e8b-9a71-0c4d2e6f8a13",
				Hostname: "web-3.example.internal", SysVendor: "innotek GmbH", ProductName: "VirtualBox"}},
		{name: "old kernel without machine-id or DMI", root: "minimal", want: Identity{Hostname: "legacy-db1"}},
		{name: "machine-id during first boot", root: "guest4",
			edit: func(t *testing.T, root string) { writeFile(t, root, "etc/machine-id", "uninitialized\n") },
			want: Identity{ProductUUID: "5b0e6c1a-3f2d-4e8b-9a71-0c4d2e6f8a13", Hostname: "web-3.example.internal",
				SysVendor: "QEMU", ProductName: "Standard PC (i440FX + PIIX, 1996)"}},
		{name: "long hostname is cut", root: "minimal",
			edit: func(t *testing.T, root string) { writeFile(t, root, "proc/sys/kernel/hostname", long+"\n") },
			want: Identity{Hostname: long[:proto.MaxStringLen]}},
		{name: "unreadable product_uuid: the rest is still read", root: "guest4",
			edit: func(t *testing.T, root string) {
				p := filepath.Join(root, "sys/class/dmi/id/product_uuid")
				if err := os.Remove(p); err != nil {
					t.Fatal(err)
				}
				if err := os.Mkdir(p, 0o755); err != nil {
					t.Fatal(err)
				}
			},
			want: Identity{MachineID: "4f1c2a9e0b7d4c61a8e3f5d2b9c07e14", Hostname: "web-3.example.internal",
				SysVendor: "QEMU", ProductName: "Standard PC (i440FX + PIIX, 1996)"},
			wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := fixture(t, tc.root)
			if tc.edit != nil {
				tc.edit(t, root)
			}
			got, err := ReadIdentity(optionsFor(root, nil))
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v, want error %v", err, tc.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "product_uuid") {
				t.Errorf("error %q does not name the file", err)
			}
			if got != tc.want {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestIdentityVirtualBox(t *testing.T) {
	for _, tc := range []struct {
		id   Identity
		want bool
	}{
		{Identity{SysVendor: "innotek GmbH", ProductName: "VirtualBox"}, true},
		{Identity{SysVendor: "QEMU", ProductName: "Standard PC (Q35 + ICH9, 2009)"}, false},
		{Identity{SysVendor: "innotek GmbH", ProductName: "VirtualBox Extension"}, false},
		{Identity{ProductName: "VirtualBox"}, false},
		{Identity{}, false},
	} {
		if got := tc.id.VirtualBox(); got != tc.want {
			t.Errorf("%+v: VirtualBox() = %v, want %v", tc.id, got, tc.want)
		}
	}
}

func TestBoundString(t *testing.T) {
	multi := strings.Repeat("é", proto.MaxStringLen) // 2 bytes each
	for _, tc := range []struct{ name, in, want string }{
		{"trimmed", "  host \n", "host"},
		{"invalid UTF-8 dropped", "ho\xffst", "host"},
		{"cut on a character boundary", multi, multi[:proto.MaxStringLen]},
		{"odd cut backs off", "x" + multi, "x" + multi[:proto.MaxStringLen-2]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := boundString(tc.in)
			if got != tc.want || len(got) > proto.MaxStringLen || !utf8.ValidString(got) {
				t.Errorf("got %q (%d bytes), want %q", got, len(got), tc.want)
			}
		})
	}
}

func TestReadIdentityNoRoots(t *testing.T) {
	empty := t.TempDir()
	got, err := ReadIdentity(Options{ProcRoot: empty, SysRoot: empty, EtcRoot: empty})
	if err != nil || (got != Identity{}) {
		t.Errorf("got %+v, %v; want empty identity and no error", got, err)
	}
}
