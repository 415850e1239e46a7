package testvm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStartWithoutQEMU(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := Start(context.Background(), Config{})
	if !errors.Is(err, ErrHostDeps) || !strings.Contains(err.Error(), "make deps") {
		t.Errorf("err = %v, want ErrHostDeps naming `make deps`", err)
	}
}

// Unix socket paths over 107 bytes fail in QEMU with a confusing error, so a
// long Dir moves the sockets to a short directory.
func TestSocketsStayShort(t *testing.T) {
	long := filepath.Join(t.TempDir(), strings.Repeat("d", 120))
	v := &VM{cfg: Config{Name: "t", Dir: long}}
	must(t, v.makeDirs())
	defer v.cleanupDirs()
	for _, s := range []string{v.QMPSocket(), v.TestQMPSocket(), v.AgentSocket(), v.controlSocket()} {
		if len(s) > maxSocketPath {
			t.Errorf("socket path %d bytes: %s", len(s), s)
		}
	}
	if filepath.Dir(v.ConsoleLog()) != long {
		t.Errorf("console log %s not in Dir", v.ConsoleLog())
	}
	v.cleanupDirs()
	if _, err := os.Stat(filepath.Dir(v.QMPSocket())); !os.IsNotExist(err) {
		t.Errorf("short socket dir not removed: %v", err)
	}
}

func TestQEMUArgs(t *testing.T) {
	v := &VM{cfg: Config{Name: "n", CPUs: 1, MaxCPUs: 4, MemoryMB: 256, Accel: "tcg",
		Kernel: Kernel{Vmlinuz: "/k"}, Initramfs: "/i", KernelArgs: "quiet", ExtraArgs: []string{"-S"}}, dir: "/d", sockDir: "/s"}
	got := strings.Join(v.qemuArgs(), " ")
	for _, want := range []string{
		"-machine pc -accel tcg",
		"-smp 1,maxcpus=4",
		"-nodefaults -nographic -display none -no-reboot",
		"-append console=ttyS0 panic=-1 testvm.name=n quiet",
		"-serial file:/d/console.log",
		"-qmp unix:/s/qmp.sock,server=on,wait=off -qmp unix:/s/qmp-test.sock,server=on,wait=off",
		"name=org.hotplugheaven.0",
		"name=org.hotplugheaven.test",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("args lack %q:\n%s", want, got)
		}
	}
	if !strings.HasSuffix(got, " -S") {
		t.Errorf("ExtraArgs not last: %s", got)
	}
}
