package testvm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Kernel is a guest kernel unpacked in the cache.
type Kernel struct {
	// Vmlinuz is the bzImage passed to QEMU's -kernel.
	Vmlinuz string
	// ModulesDir is the kernel's lib/modules/<Version> directory.
	ModulesDir string
	// Version is the kernel release (uname -r), e.g. 6.1.0-56-cloud-amd64.
	Version string
}

const (
	// kernelMetaPackage always depends on the current cloud kernel image.
	kernelMetaPackage = "linux-image-cloud-amd64"
	// completeMarker is written last, so a directory without it is an
	// interrupted unpack and is never used.
	completeMarker = ".complete"
	ourModule      = "github.com/hotplugheaven/hotplug"
)

// DefaultCacheDir is $HOTPLUG_CACHE if set, else build/cache under the
// repository root (found by walking up from the working directory to this
// module's go.mod), else a directory under the user's cache dir for binaries
// run outside the repository.
func DefaultCacheDir() (string, error) {
	if d := os.Getenv("HOTPLUG_CACHE"); d != "" {
		return filepath.Abs(d)
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("cache dir: %w", err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if isOurGoMod(filepath.Join(dir, "go.mod")) {
			return filepath.Join(dir, "build", "cache"), nil
		}
		if filepath.Dir(dir) == dir {
			break
		}
	}
	uc, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("cache dir: not inside the %s checkout and no user cache dir (%v); set HOTPLUG_CACHE", ourModule, err)
	}
	return filepath.Join(uc, "hotplugheaven"), nil
}

func isOurGoMod(path string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`) == ourModule
		}
	}
	return false
}

// EnsureKernel returns the current Debian cloud kernel, downloading it with
// apt-get download and unpacking it with dpkg-deb into
// cacheDir/kernel-<version>/ when it is not cached yet. cacheDir "" means
// DefaultCacheDir.
//
// Nothing is installed on the host. When apt cannot resolve or download the
// kernel (no package lists, no network) the newest kernel already in the
// cache is used, so a warm cache works offline.
func EnsureKernel(ctx context.Context, cacheDir string) (Kernel, error) {
	if cacheDir == "" {
		d, err := DefaultCacheDir()
		if err != nil {
			return Kernel{}, err
		}
		cacheDir = d
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return Kernel{}, fmt.Errorf("kernel cache: %w", err)
	}

	pkg, rerr := resolveKernelPackage(ctx)
	if rerr == nil {
		version := strings.TrimPrefix(pkg, "linux-image-")
		if k, err := cachedKernel(cacheDir, version); err == nil {
			return k, nil
		}
		k, ferr := fetchKernel(ctx, cacheDir, pkg, version)
		if ferr == nil {
			return k, nil
		}
		if k, ok := newestCachedKernel(cacheDir); ok {
			return k, nil
		}
		return Kernel{}, ferr
	}
	if k, ok := newestCachedKernel(cacheDir); ok {
		return k, nil
	}
	return Kernel{}, fmt.Errorf("no guest kernel cached in %s and apt cannot name one: %w", cacheDir, rerr)
}

// resolveKernelPackage asks apt which linux-image-<abi> package the cloud
// metapackage currently pulls in. It reads local package lists only.
func resolveKernelPackage(ctx context.Context) (string, error) {
	aptCache, err := lookTool("apt-cache", "apt")
	if err != nil {
		return "", err
	}
	out, err := exec.CommandContext(ctx, aptCache, "depends", kernelMetaPackage).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("apt-cache depends %s: %v: %s (no package lists? run `apt-get update` or `make deps`)",
			kernelMetaPackage, err, strings.TrimSpace(string(out)))
	}
	return parseAptDepends(out)
}

// errNoKernelDepends: apt-cache output named no linux-image package.
var errNoKernelDepends = errors.New("apt-cache depends names no linux-image-* package")

// parseAptDepends picks the first concrete linux-image-* dependency from
// `apt-cache depends` output ("  Depends: linux-image-6.1.0-56-cloud-amd64").
// Virtual packages (<name>) are skipped: they cannot be downloaded.
func parseAptDepends(out []byte) (string, error) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimLeft(strings.TrimSpace(sc.Text()), "|")
		name, ok := strings.CutPrefix(line, "Depends:")
		if !ok {
			continue
		}
		name = strings.TrimSpace(name)
		if strings.HasPrefix(name, "linux-image-") && len(name) > len("linux-image-") && isDebName(name) {
			return name, nil
		}
	}
	return "", fmt.Errorf("%w: %q", errNoKernelDepends, truncate(string(out), 200))
}

// isDebName reports whether s is a valid Debian package name. The version
// taken from it becomes a directory name, so nothing else may pass.
func isDebName(s string) bool {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.') {
			return false
		}
	}
	return !strings.Contains(s, "..")
}

// cachedKernel returns the kernel unpacked in cacheDir/kernel-<version>, or an
// error saying what is missing.
func cachedKernel(cacheDir, version string) (Kernel, error) {
	root := filepath.Join(cacheDir, "kernel-"+version)
	if _, err := os.Stat(filepath.Join(root, completeMarker)); err != nil {
		return Kernel{}, fmt.Errorf("kernel %s not cached: %w", version, err)
	}
	return kernelIn(root, version)
}

// kernelIn locates vmlinuz and the modules in an unpacked kernel package.
// Newer Debian releases ship modules under usr/lib (merged /usr).
func kernelIn(root, version string) (Kernel, error) {
	k := Kernel{Vmlinuz: filepath.Join(root, "boot", "vmlinuz-"+version), Version: version}
	if _, err := os.Stat(k.Vmlinuz); err != nil {
		return Kernel{}, fmt.Errorf("kernel package in %s has no vmlinuz: %w", root, err)
	}
	for _, d := range []string{"lib/modules", "usr/lib/modules"} {
		m := filepath.Join(root, d, version)
		if fi, err := os.Stat(m); err == nil && fi.IsDir() {
			k.ModulesDir = m
			return k, nil
		}
	}
	return Kernel{}, fmt.Errorf("kernel package in %s has no lib/modules/%s", root, version)
}

// newestCachedKernel is the fallback when apt cannot help.
func newestCachedKernel(cacheDir string) (Kernel, bool) {
	dirs, _ := filepath.Glob(filepath.Join(cacheDir, "kernel-*", completeMarker))
	var best Kernel
	for _, m := range dirs {
		version := strings.TrimPrefix(filepath.Base(filepath.Dir(m)), "kernel-")
		k, err := cachedKernel(cacheDir, version)
		if err != nil {
			continue
		}
		if best.Version == "" || versionLess(best.Version, k.Version) {
			best = k
		}
	}
	return best, best.Version != ""
}

// fetchKernel downloads and unpacks pkg. A lock file keeps parallel test
// binaries from downloading the same 26 MB twice; the unpack goes to a
// temporary directory renamed into place, so readers never see half a kernel.
func fetchKernel(ctx context.Context, cacheDir, pkg, version string) (Kernel, error) {
	aptGet, err := lookTool("apt-get", "apt")
	if err != nil {
		return Kernel{}, err
	}
	dpkgDeb, err := lookTool("dpkg-deb", "dpkg")
	if err != nil {
		return Kernel{}, err
	}
	unlock, err := lockFile(ctx, filepath.Join(cacheDir, ".kernel.lock"))
	if err != nil {
		return Kernel{}, err
	}
	defer unlock()
	if k, err := cachedKernel(cacheDir, version); err == nil {
		return k, nil // another process fetched it while we waited
	}

	tmp, err := os.MkdirTemp(cacheDir, ".kernel-tmp-")
	if err != nil {
		return Kernel{}, fmt.Errorf("kernel cache: %w", err)
	}
	defer os.RemoveAll(tmp)
	// apt drops to user _apt for downloads when run as root; it must be
	// able to write here or it warns and falls back.
	_ = os.Chmod(tmp, 0o755)

	dl := exec.CommandContext(ctx, aptGet, "download", "-q",
		"-o", "Acquire::Retries=2", "-o", "Acquire::http::Timeout=30",
		"-o", "APT::Sandbox::User=root", pkg)
	dl.Dir = tmp
	dl.WaitDelay = 5 * time.Second
	if out, err := dl.CombinedOutput(); err != nil {
		return Kernel{}, fmt.Errorf("apt-get download %s: %v: %s", pkg, err, truncate(strings.TrimSpace(string(out)), 1000))
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		return Kernel{}, fmt.Errorf("apt-get download %s left %d .deb files in %s, want 1", pkg, len(debs), tmp)
	}
	root := filepath.Join(tmp, "root")
	x := exec.CommandContext(ctx, dpkgDeb, "-x", debs[0], root)
	if out, err := x.CombinedOutput(); err != nil {
		return Kernel{}, fmt.Errorf("dpkg-deb -x %s: %v: %s", filepath.Base(debs[0]), err, truncate(string(out), 1000))
	}
	if _, err := kernelIn(root, version); err != nil {
		return Kernel{}, err
	}
	if err := os.WriteFile(filepath.Join(root, completeMarker), []byte(filepath.Base(debs[0])+"\n"), 0o644); err != nil {
		return Kernel{}, fmt.Errorf("kernel cache: %w", err)
	}
	final := filepath.Join(cacheDir, "kernel-"+version)
	// A directory without the marker is debris from an older, interrupted
	// run that predates the temporary-dir scheme; it is safe to replace.
	if _, err := os.Stat(filepath.Join(final, completeMarker)); err != nil {
		os.RemoveAll(final)
	}
	if err := os.Rename(root, final); err != nil {
		return Kernel{}, fmt.Errorf("kernel cache: %w", err)
	}
	return cachedKernel(cacheDir, version)
}

// lockFile takes an exclusive flock, polling so ctx can cancel the wait.
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for lock %s: %w", path, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// versionLess orders kernel releases: digit runs compare as numbers, so
// 6.1.0-56 sorts after 6.1.0-9.
func versionLess(a, b string) bool {
	for a != "" && b != "" {
		ca, ra := versionChunk(a)
		cb, rb := versionChunk(b)
		if ca != cb {
			na, ea := strconv.ParseUint(ca, 10, 64)
			nb, eb := strconv.ParseUint(cb, 10, 64)
			if ea == nil && eb == nil {
				return na < nb
			}
			return ca < cb
		}
		a, b = ra, rb
	}
	return len(a) < len(b)
}

// versionChunk splits off a leading run of digits or of non-digits.
func versionChunk(s string) (chunk, rest string) {
	digit := func(c byte) bool { return c >= '0' && c <= '9' }
	i := 1
	for i < len(s) && digit(s[i]) == digit(s[0]) {
		i++
	}
	return s[:i], s[i:]
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
