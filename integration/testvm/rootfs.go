package testvm

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// A rootfs is a whole Debian system made by debootstrap, for tests that need
// what the busybox initramfs cannot give: systemd, dpkg, journald, udev.
// Building one takes about a minute and ~400 MB, so it is cached by what
// went into it; tests copy it (CopyTree) before changing anything, make an
// ext4 image of the copy (MakeExt4) and boot that with the kernel and initrd
// the rootfs itself holds (BootFiles, DiskArgs).
//
// Everything here needs root: debootstrap, chroot and files owned by other
// users. CI runs as root.

//go:embed control-disk.sh
var controlDiskTemplate []byte

var controlDiskScript = withControlShell(controlDiskTemplate)

// rootfsFormat is hashed into every rootfs cache key: bump it when what
// EnsureRootfs does to a fresh debootstrap changes.
const rootfsFormat = "testvm-rootfs-1"

// RootfsOptions says what debootstrap installs. Zero fields take the
// defaults below, which are what the packaging test boots.
type RootfsOptions struct {
	// Suite is the Debian release; default "bookworm".
	Suite string
	// Variant is debootstrap's --variant; default "minbase".
	Variant string
	// Include are the packages added to the variant; default systemd-sysv,
	// linux-image-cloud-amd64, udev and kmod: an init, a kernel with its
	// initrd, device links (/dev/virtio-ports/NAME) and modprobe.
	Include []string
	// Mirror defaults to the Debian archive apt uses,
	// http://deb.debian.org/debian.
	Mirror string
	// CacheDir holds built root file systems; "" means DefaultCacheDir.
	CacheDir string
}

func (o *RootfsOptions) defaults() {
	if o.Suite == "" {
		o.Suite = "bookworm"
	}
	if o.Variant == "" {
		o.Variant = "minbase"
	}
	if len(o.Include) == 0 {
		o.Include = []string{"systemd-sysv", "linux-image-cloud-amd64", "udev", "kmod"}
	}
	if o.Mirror == "" {
		o.Mirror = "http://deb.debian.org/debian"
	}
}

// rootfsKey names a rootfs by its inputs. The package versions debootstrap
// picks are not known before it runs: a cached rootfs stays in use until
// the cache entry is deleted, even when Debian publishes updates.
func rootfsKey(o RootfsOptions) string {
	inc := slices.Clone(o.Include)
	slices.Sort(inc)
	h := sha256.Sum256([]byte(strings.Join([]string{rootfsFormat, o.Suite, o.Variant, strings.Join(inc, ","), o.Mirror, "amd64"}, "\n")))
	return o.Suite + "-" + hex.EncodeToString(h[:6])
}

// ErrNotRoot: building or changing a rootfs needs root.
var ErrNotRoot = errors.New("needs root (debootstrap, chroot and mkfs.ext4 -d of files owned by other users); CI runs as root")

// EnsureRootfs returns the directory of a debootstrapped Debian system built
// from opts, running debootstrap only when the cache has none with the same
// inputs (cacheDir/rootfs-<suite>-<hash>/, ~1 minute and ~400 MB the first
// time). The directory is shared: never change it, copy it with CopyTree.
// Parallel callers wait for one build (a lock file), and a build that is
// interrupted leaves nothing that looks complete.
func EnsureRootfs(ctx context.Context, opts RootfsOptions) (string, error) {
	opts.defaults()
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("testvm rootfs: %w", ErrNotRoot)
	}
	cacheDir := opts.CacheDir
	if cacheDir == "" {
		d, err := DefaultCacheDir()
		if err != nil {
			return "", err
		}
		cacheDir = d
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("rootfs cache: %w", err)
	}
	final := filepath.Join(cacheDir, "rootfs-"+rootfsKey(opts))
	if _, err := os.Stat(filepath.Join(final, completeMarker)); err == nil {
		return final, nil
	}
	debootstrap, err := lookTool("debootstrap", "debootstrap")
	if err != nil {
		return "", err
	}
	unlock, err := lockFile(ctx, filepath.Join(cacheDir, ".rootfs.lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := os.Stat(filepath.Join(final, completeMarker)); err == nil {
		return final, nil // built by another process while we waited
	}

	tmp, err := os.MkdirTemp(cacheDir, ".rootfs-tmp-")
	if err != nil {
		return "", fmt.Errorf("rootfs cache: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", fmt.Errorf("rootfs cache: %w", err)
	}
	root := filepath.Join(tmp, "root")
	cmd := exec.CommandContext(ctx, debootstrap, "--variant="+opts.Variant, "--include="+strings.Join(opts.Include, ","),
		opts.Suite, root, opts.Mirror)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	cmd.WaitDelay = 10 * time.Second
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		// debootstrap's own log names the failing package.
		dlog, _ := os.ReadFile(filepath.Join(root, "debootstrap", "debootstrap.log"))
		return "", fmt.Errorf("debootstrap %s into %s: %v\n%s\n--- debootstrap.log (tail) ---\n%s",
			opts.Suite, root, err, truncate(strings.TrimSpace(string(out)), 2000), tailLines(string(dlog), 30))
	}
	if _, _, err := BootFiles(root); err != nil {
		return "", fmt.Errorf("debootstrap %s: %w", opts.Suite, err)
	}
	// apt's downloaded .debs are half the download and no test needs them.
	debs, _ := filepath.Glob(filepath.Join(root, "var/cache/apt/archives/*.deb"))
	for _, d := range debs {
		os.Remove(d)
	}
	marker := fmt.Sprintf("debootstrap --variant=%s --include=%s %s %s\nbuilt in %s\n",
		opts.Variant, strings.Join(opts.Include, ","), opts.Suite, opts.Mirror, time.Since(start).Round(time.Second))
	if err := os.WriteFile(filepath.Join(root, completeMarker), []byte(marker), 0o644); err != nil {
		return "", fmt.Errorf("rootfs cache: %w", err)
	}
	os.RemoveAll(final) // debris without a marker, if any
	if err := os.Rename(root, final); err != nil {
		return "", fmt.Errorf("rootfs cache: %w", err)
	}
	return final, nil
}

// BootFiles finds the kernel and initrd installed in a rootfs. Boot them
// with Config{Kernel: k, Initramfs: initrd, KernelArgs: "root=/dev/vda rw"}
// and DiskArgs.
func BootFiles(rootfs string) (k Kernel, initrd string, err error) {
	kernels, _ := filepath.Glob(filepath.Join(rootfs, "boot", "vmlinuz-*"))
	if len(kernels) == 0 {
		return Kernel{}, "", fmt.Errorf("rootfs %s has no /boot/vmlinuz-* (is linux-image-cloud-amd64 in Include?)", rootfs)
	}
	slices.SortFunc(kernels, func(a, b string) int {
		if versionLess(a, b) {
			return -1
		}
		return 1
	})
	vmlinuz := kernels[len(kernels)-1]
	version := strings.TrimPrefix(filepath.Base(vmlinuz), "vmlinuz-")
	initrd = filepath.Join(rootfs, "boot", "initrd.img-"+version)
	if _, err := os.Stat(initrd); err != nil {
		return Kernel{}, "", fmt.Errorf("rootfs %s: kernel %s has no initrd: %w", rootfs, version, err)
	}
	k = Kernel{Vmlinuz: vmlinuz, Version: version, ModulesDir: filepath.Join(rootfs, "lib", "modules", version)}
	return k, initrd, nil
}

// CopyTree copies the directory src to dst (which must not exist) with
// owners, modes, links and device nodes: cp -a.
func CopyTree(ctx context.Context, src, dst string) error {
	if _, err := os.Stat(dst); err == nil {
		return fmt.Errorf("copy %s: %s already exists", src, dst)
	}
	out, err := exec.CommandContext(ctx, "cp", "-a", "--reflink=auto", src, dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("cp -a %s %s: %v: %s", src, dst, err, truncate(string(out), 1000))
	}
	return nil
}

// Chroot runs args inside rootfs with chroot(8), as root, with a minimal
// environment and DEBIAN_FRONTEND=noninteractive; systemd is not running
// there. It returns the combined output.
func Chroot(ctx context.Context, rootfs string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "chroot", append([]string{rootfs}, args...)...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive"}
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("chroot %s %s: %w\n%s", rootfs, strings.Join(args, " "), err, truncate(string(out), 4000))
	}
	return string(out), nil
}

// controlUnit runs the control shell as early as udev allows, so that
// WaitReady returns while the rest of the system is still starting (wait
// for it with `systemctl is-system-running --wait`).
const controlUnit = `[Unit]
Description=testvm control shell on virtio-serial port org.hotplugheaven.test
DefaultDependencies=no
After=systemd-udevd.service systemd-remount-fs.service
Before=sysinit.target

[Service]
ExecStart=/usr/local/sbin/testvm-control
Restart=always
RestartSec=1
StandardOutput=journal+console

[Install]
WantedBy=sysinit.target
`

// InstallControlShell makes a rootfs boot into a guest that VM.Run can
// drive: the control shell (control-disk.sh) as a systemd service, the
// hostname, and a root login on the console without a password for
// debugging by hand. Call it on a copy, never on EnsureRootfs's directory.
func InstallControlShell(rootfs, hostname string) error {
	files := []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{"usr/local/sbin/testvm-control", controlDiskScript, 0o755},
		{"etc/systemd/system/testvm-control.service", []byte(controlUnit), 0o644},
		{"etc/hostname", []byte(hostname + "\n"), 0o644},
		// No fstab entry: root is mounted rw from the kernel command line.
		{"etc/fstab", []byte("# testvm: root is /dev/vda, mounted rw by the kernel command line\n"), 0o644},
	}
	for _, f := range files {
		p := filepath.Join(rootfs, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, f.data, f.mode); err != nil {
			return err
		}
	}
	wants := filepath.Join(rootfs, "etc/systemd/system/sysinit.target.wants")
	if err := os.MkdirAll(wants, 0o755); err != nil {
		return err
	}
	link := filepath.Join(wants, "testvm-control.service")
	os.Remove(link)
	if err := os.Symlink("/etc/systemd/system/testvm-control.service", link); err != nil {
		return err
	}
	// An empty root password: `root` logs in on the serial console when a
	// person boots the image by hand (vm.Args() with -serial mon:stdio).
	shadow := filepath.Join(rootfs, "etc/shadow")
	b, err := os.ReadFile(shadow)
	if err != nil {
		return err
	}
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		if rest, ok := strings.CutPrefix(l, "root:"); ok {
			_, after, _ := strings.Cut(rest, ":")
			lines[i] = "root::" + after
		}
	}
	return os.WriteFile(shadow, []byte(strings.Join(lines, "\n")), 0o640)
}
