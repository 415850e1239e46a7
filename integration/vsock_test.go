package integration_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/integration/stack"
	"github.com/hotplugheaven/hotplug/integration/testvm"
)

// TestVsockInGuest exercises the vsock transport end to end. The test host
// has no vhost-vsock, so both ends run inside the guest over
// vsock_loopback: the real hotplug-agent dials CID 1, and vsockcheck
// listens through the actuator's VsockHub and runs a session with it.
func TestVsockInGuest(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a QEMU guest; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	agent, _, err := stack.Build(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := stack.RepoRoot()
	check := filepath.Join(dir, "vsockcheck")
	build := exec.CommandContext(ctx, "go", "build", "-o", check, "./integration/testdata/vsockcheck")
	build.Dir = root
	build.Env = append(build.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building vsockcheck: %v\n%s", err, out)
	}
	kernel, err := testvm.EnsureKernel(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	img, err := testvm.BuildInitramfs(ctx, testvm.InitramfsOptions{Kernel: kernel, Modules: []string{"vsock_loopback"},
		Files: map[string]testvm.File{
			"/usr/bin/hotplug-agent": {HostPath: agent, Mode: 0o755},
			"/usr/bin/vsockcheck":    {HostPath: check, Mode: 0o755},
			"/etc/agent.toml":        {Data: []byte("transport = \"vsock\"\nvsock_cid = 1\nvsock_port = 7000\n"), Mode: 0o644},
		}})
	if err != nil {
		t.Fatal(err)
	}
	vm, err := testvm.Start(ctx, testvm.Config{Name: "vsock", Kernel: kernel, Initramfs: img, CPUs: 2, MaxCPUs: 2, Dir: filepath.Join(dir, "vm")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Stop() })
	if err := vm.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if out, status, err := vm.Run(ctx, "modprobe vsock_loopback && ls /dev/vsock"); err != nil || status != 0 {
		t.Fatalf("loading vsock_loopback: %d %v\n%s", status, err, out)
	}
	if _, err := vm.Spawn(ctx, "vsockcheck -port 7000 -cid 1 >/tmp/check.out 2>&1"); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.Spawn(ctx, "hotplug-agent --config /etc/agent.toml --interval 200ms >/tmp/agent.log 2>&1"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		out, _, err := vm.Run(ctx, "cat /tmp/check.out")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out, "OK ") {
			t.Logf("guest: %s", strings.TrimSpace(out))
			return
		}
		if strings.Contains(out, "FAIL") || time.Now().After(deadline) {
			log, _, _ := vm.Run(ctx, "cat /tmp/agent.log")
			t.Fatalf("vsock session failed: %s\nagent log:\n%s", out, log)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
