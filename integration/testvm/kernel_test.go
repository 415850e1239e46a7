package testvm

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseAptDepends(t *testing.T) {
	cases := []struct {
		name, in, want string
		err            error
	}{
		{"bookworm", "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n", "linux-image-6.1.0-56-cloud-amd64", nil},
		{"alternatives", "linux-image-cloud-amd64\n |Depends: linux-image-6.1.0-9-cloud-amd64\n  Depends: linux-image-6.1.0-10-cloud-amd64\n", "linux-image-6.1.0-9-cloud-amd64", nil},
		{"virtual skipped", "x\n  Depends: <linux-image-virtual>\n  Depends: linux-image-6.1.0-56-cloud-amd64\n", "linux-image-6.1.0-56-cloud-amd64", nil},
		{"other deps first", "x\n  Depends: initramfs-tools\n  Depends: linux-image-6.12.1-cloud-amd64\n", "linux-image-6.12.1-cloud-amd64", nil},
		{"no version", "  Depends: linux-image-\n", "", errNoKernelDepends},
		{"path in name", "  Depends: linux-image-../../etc\n", "", errNoKernelDepends},
		{"nothing", "E: No packages found\n", "", errNoKernelDepends},
		{"empty", "", "", errNoKernelDepends},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseAptDepends([]byte(c.in))
			if !errors.Is(err, c.err) || got != c.want {
				t.Errorf("parseAptDepends = %q, %v; want %q, %v", got, err, c.want, c.err)
			}
		})
	}
}

func FuzzParseAptDepends(f *testing.F) {
	f.Add([]byte("x\n  Depends: linux-image-6.1.0-56-cloud-amd64\n"))
	f.Add([]byte("|Depends: <x>"))
	f.Fuzz(func(t *testing.T, b []byte) {
		name, err := parseAptDepends(b)
		if err == nil && (len(name) <= len("linux-image-") || filepath.Base(name) != name || strings.Contains(name, "..")) {
			t.Fatalf("accepted %q", name)
		}
	})
}

func TestVersionLess(t *testing.T) {
	cases := []struct {
		a, b string
		want bool
	}{
		{"6.1.0-9-cloud-amd64", "6.1.0-56-cloud-amd64", true},
		{"6.1.0-56-cloud-amd64", "6.1.0-9-cloud-amd64", false},
		{"6.1.0-56-cloud-amd64", "6.12.0-1-cloud-amd64", true},
		{"6.1.0-56-cloud-amd64", "6.1.0-56-cloud-amd64", false},
		{"6.1", "6.1.0", true},
		{"a", "b", true},
	}
	for _, c := range cases {
		if got := versionLess(c.a, c.b); got != c.want {
			t.Errorf("versionLess(%q, %q) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}

func TestDefaultCacheDir(t *testing.T) {
	t.Run("env", func(t *testing.T) {
		t.Setenv("HOTPLUG_CACHE", "/some/where")
		if d, err := DefaultCacheDir(); err != nil || d != "/some/where" {
			t.Errorf("DefaultCacheDir = %q, %v", d, err)
		}
	})
	t.Run("repo root", func(t *testing.T) {
		t.Setenv("HOTPLUG_CACHE", "")
		d, err := DefaultCacheDir()
		if err != nil {
			t.Fatal(err)
		}
		root, _ := filepath.Abs("../..") // this package is integration/testvm
		if want := filepath.Join(root, "build", "cache"); d != want {
			t.Errorf("DefaultCacheDir = %q, want %q", d, want)
		}
	})
}

// A warm cache must be found without apt: this is what makes tests work
// offline.
func TestNewestCachedKernel(t *testing.T) {
	dir := t.TempDir()
	mk := func(version string, complete bool) {
		root := filepath.Join(dir, "kernel-"+version)
		must(t, os.MkdirAll(filepath.Join(root, "boot"), 0o755))
		must(t, os.MkdirAll(filepath.Join(root, "lib", "modules", version), 0o755))
		must(t, os.WriteFile(filepath.Join(root, "boot", "vmlinuz-"+version), []byte("k"), 0o644))
		if complete {
			must(t, os.WriteFile(filepath.Join(root, completeMarker), nil, 0o644))
		}
	}
	if _, ok := newestCachedKernel(dir); ok {
		t.Fatal("empty cache reported a kernel")
	}
	mk("6.1.0-9-cloud-amd64", true)
	mk("6.1.0-56-cloud-amd64", true)
	mk("6.1.0-99-cloud-amd64", false) // interrupted unpack: ignored
	k, ok := newestCachedKernel(dir)
	if !ok || k.Version != "6.1.0-56-cloud-amd64" {
		t.Fatalf("newestCachedKernel = %+v, %v", k, ok)
	}
	if k.ModulesDir != filepath.Join(dir, "kernel-6.1.0-56-cloud-amd64", "lib", "modules", "6.1.0-56-cloud-amd64") {
		t.Errorf("ModulesDir = %q", k.ModulesDir)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
