package testvm

import (
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/cavaliergopher/cpio"
)

func TestWriteCpioGzRoundTrip(t *testing.T) {
	files := map[string]entry{
		"etc":          {mode: cpio.TypeDir | 0o755},
		"etc/testvm":   {mode: cpio.TypeDir | 0o755},
		"etc/testvm/a": {mode: cpio.TypeReg | 0o600, data: []byte("hello")},
		"bin/sh":       {mode: cpio.TypeSymlink | 0o777, data: []byte("/bin/busybox")},
		"empty":        {mode: cpio.TypeReg | 0o644},
	}
	names := []string{"bin/sh", "empty", "etc", "etc/testvm", "etc/testvm/a"}
	p := filepath.Join(t.TempDir(), "img.cpio.gz")
	f, err := os.Create(p)
	must(t, err)
	must(t, writeCpioGz(f, names, files))
	must(t, f.Close())

	f, err = os.Open(p)
	must(t, err)
	defer f.Close()
	zr, err := gzip.NewReader(f)
	must(t, err)
	r := cpio.NewReader(zr)
	var got []string
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		must(t, err)
		got = append(got, h.Name)
		body, err := io.ReadAll(r)
		must(t, err)
		want := files[h.Name]
		if h.Mode&cpio.ModeType == cpio.TypeSymlink {
			body = []byte(h.Linkname) // the reader moves a link's target there
		}
		if h.Mode != want.mode || string(body) != string(want.data) {
			t.Errorf("%s: mode %o body %q; want %o %q", h.Name, h.Mode, body, want.mode, want.data)
		}
	}
	if len(got) != len(names) {
		t.Errorf("archive has %v, want %v", got, names)
	}
}

func TestImageKeyCoversContentAndMode(t *testing.T) {
	names := []string{"a"}
	base := imageKey(names, map[string]entry{"a": {mode: cpio.TypeReg | 0o644, data: []byte("x")}})
	for _, e := range []entry{
		{mode: cpio.TypeReg | 0o755, data: []byte("x")},
		{mode: cpio.TypeReg | 0o644, data: []byte("y")},
		{mode: cpio.TypeSymlink | 0o644, data: []byte("x")},
	} {
		if imageKey(names, map[string]entry{"a": e}) == base {
			t.Errorf("entry %+v hashes like the original", e)
		}
	}
}

func TestCallerEntry(t *testing.T) {
	host := filepath.Join(t.TempDir(), "agent")
	must(t, os.WriteFile(host, []byte("ELF"), 0o755))
	cases := []struct {
		name string
		f    File
		mode cpio.FileMode
		data string
		bad  bool
	}{
		{"data default mode", File{Data: []byte("d")}, cpio.TypeReg | 0o644, "d", false},
		{"data explicit mode", File{Data: []byte("d"), Mode: 0o755}, cpio.TypeReg | 0o755, "d", false},
		{"host keeps mode", File{HostPath: host}, cpio.TypeReg | 0o755, "ELF", false},
		{"host mode override", File{HostPath: host, Mode: 0o600}, cpio.TypeReg | 0o600, "ELF", false},
		{"both", File{HostPath: host, Data: []byte("x")}, 0, "", true},
		{"missing host file", File{HostPath: host + ".nope"}, 0, "", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, err := callerEntry(c.f)
			if (err != nil) != c.bad {
				t.Fatalf("err = %v", err)
			}
			if !c.bad && (e.mode != c.mode || string(e.data) != c.data) {
				t.Errorf("entry = %o %q, want %o %q", e.mode, e.data, c.mode, c.data)
			}
		})
	}
}

func TestBuildInitramfsRejectsDynamicBusybox(t *testing.T) {
	// /bin/true is dynamically linked on Debian; the guest could not run it.
	k := Kernel{ModulesDir: t.TempDir(), Version: "x"}
	_, err := BuildInitramfs(context.Background(), InitramfsOptions{Kernel: k, CacheDir: t.TempDir(), Busybox: "/bin/true"})
	if !errors.Is(err, ErrHostDeps) {
		t.Errorf("err = %v, want ErrHostDeps", err)
	}
}
