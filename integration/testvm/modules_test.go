package testvm

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

func TestParseModinfo(t *testing.T) {
	// Layout of a real .modinfo section: NUL-terminated strings, NUL padding.
	sec := []byte("license=GPL\x00\x00\x00alias=virtio:d00000003v*\x00alias=x\x00depends=vsock,vmw_vsock_virtio_transport_common\x00retpoline=Y\x00name=vsock_loopback\x00\x00")
	info := parseModinfo(sec)
	if got := info["alias"]; !slices.Equal(got, []string{"virtio:d00000003v*", "x"}) {
		t.Errorf("alias = %q", got)
	}
	if got := modinfoDepends(info); !slices.Equal(got, []string{"vsock", "vmw_vsock_virtio_transport_common"}) {
		t.Errorf("depends = %q", got)
	}
	if got := modinfoDepends(parseModinfo([]byte("depends=\x00"))); got != nil {
		t.Errorf("empty depends = %q", got)
	}
	if got := modinfoDepends(parseModinfo([]byte("depends=a-b\x00"))); !slices.Equal(got, []string{"a_b"}) {
		t.Errorf("dashes not canonicalised: %q", got)
	}
}

func FuzzParseModinfo(f *testing.F) {
	f.Add([]byte("depends=a,b\x00name=c\x00"))
	f.Add([]byte("=\x00depends=,,\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, d := range modinfoDepends(parseModinfo(b)) {
			if d == "" || strings.ContainsAny(d, ",-\x00") {
				t.Fatalf("bad dependency %q", d)
			}
		}
	})
}

// The cloud kernel's real graph for the modules the harness loads.
var cloudDeps = map[string][]string{
	"virtio":                            nil,
	"virtio_ring":                       nil,
	"virtio_pci_modern_dev":             nil,
	"virtio_pci_legacy_dev":             nil,
	"virtio_pci":                        {"virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio"},
	"virtio_console":                    {"virtio", "virtio_ring"},
	"vsock":                             nil,
	"vmw_vsock_virtio_transport_common": {"vsock"},
	"vsock_loopback":                    {"vsock", "vmw_vsock_virtio_transport_common"},
}

func graph(g map[string][]string) func(string) ([]string, error) {
	return func(n string) ([]string, error) {
		d, ok := g[n]
		if !ok {
			return nil, fmt.Errorf("%w: %s", ErrModuleNotFound, n)
		}
		return d, nil
	}
}

func TestLoadOrder(t *testing.T) {
	cases := []struct {
		want []string
		out  []string
		err  error
	}{
		{bootModules, []string{"virtio", "virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "virtio_console"}, nil},
		{[]string{"vsock_loopback"}, []string{"vsock", "vmw_vsock_virtio_transport_common", "vsock_loopback"}, nil},
		{[]string{"virtio_console", "virtio"}, []string{"virtio", "virtio_ring", "virtio_console"}, nil},
		{[]string{"nope"}, nil, ErrModuleNotFound},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.want, ","), func(t *testing.T) {
			got, err := loadOrder(c.want, graph(cloudDeps))
			if !errors.Is(err, c.err) || !slices.Equal(got, c.out) {
				t.Errorf("loadOrder = %v, %v; want %v, %v", got, err, c.out, c.err)
			}
		})
	}
	t.Run("cycle", func(t *testing.T) {
		_, err := loadOrder([]string{"a"}, graph(map[string][]string{"a": {"b"}, "b": {"a"}}))
		if !errors.Is(err, errModuleCycle) || !strings.Contains(err.Error(), "a -> b -> a") {
			t.Errorf("err = %v", err)
		}
	})
}

func TestModulesDep(t *testing.T) {
	var mods []kmod
	order, _ := loadOrder([]string{"virtio_console", "vsock_loopback"}, graph(cloudDeps))
	for _, n := range order {
		mods = append(mods, kmod{name: n, rel: "kernel/" + n + ".ko", deps: cloudDeps[n]})
	}
	// depmod's format: the whole closure, last entry loaded first.
	want := `kernel/virtio.ko:
kernel/virtio_ring.ko:
kernel/virtio_console.ko: kernel/virtio_ring.ko kernel/virtio.ko
kernel/vsock.ko:
kernel/vmw_vsock_virtio_transport_common.ko: kernel/vsock.ko
kernel/vsock_loopback.ko: kernel/vmw_vsock_virtio_transport_common.ko kernel/vsock.ko
`
	if got := string(modulesDep(mods)); got != want {
		t.Errorf("modules.dep:\n%s\nwant:\n%s", got, want)
	}
}
