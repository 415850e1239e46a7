package testvm

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	_ "embed"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cavaliergopher/cpio"
)

//go:embed init.sh
var initTemplate []byte

//go:embed control-shell.sh
var controlShell []byte

// withControlShell puts the shared control-shell functions (find_port,
// serve_control) in place of a script's "# @CONTROL_SHELL@" line.
func withControlShell(script []byte) []byte {
	return bytes.Replace(script, []byte("# @CONTROL_SHELL@\n"), controlShell, 1)
}

var initScript = withControlShell(initTemplate)

// imageFormat is hashed into every cache key: bump it when the layout
// changes in a way the inputs do not show.
const imageFormat = "testvm-initramfs-1"

// DefaultBusybox is where Debian's busybox-static puts its binary.
const DefaultBusybox = "/bin/busybox"

// File is a file the caller adds to the initramfs: HostPath is copied, or
// else Data is written.
type File struct {
	HostPath string
	Data     []byte
	// Mode holds the permission bits; 0 means the host file's, or 0644
	// for Data.
	Mode fs.FileMode
}

// InitramfsOptions says what goes into an image besides busybox, /init and
// the virtio modules, which are always there.
type InitramfsOptions struct {
	// Kernel supplies the modules; they must match the kernel booted.
	Kernel Kernel
	// CacheDir holds built images; "" means DefaultCacheDir.
	CacheDir string
	// Busybox is a statically linked busybox; "" means DefaultBusybox.
	Busybox string
	// Modules are extra kernel modules to include with their
	// dependencies. They are not loaded: `modprobe NAME` in the guest
	// loads them (the image has a modules.dep for them).
	Modules []string
	// Files maps absolute guest paths to contents, e.g.
	// "/usr/bin/hotplug-agent" or "/etc/testvm/start.sh" (which /init
	// runs in the background once the virtio ports are up). Parent
	// directories are created. Replacing a file the harness writes is an
	// error.
	Files map[string]File
}

// entry is one cpio member.
type entry struct {
	mode cpio.FileMode // type and permission bits
	data []byte        // file contents, or symlink target
}

// BuildInitramfs returns the path of a gzip'd newc cpio image built from
// opts, reusing a cached image with the same contents. Building needs no
// host tools besides busybox itself; the archive is written in Go.
func BuildInitramfs(ctx context.Context, opts InitramfsOptions) (string, error) {
	if opts.Kernel.ModulesDir == "" || opts.Kernel.Version == "" {
		return "", errors.New("initramfs: Kernel is empty; get one from EnsureKernel")
	}
	cacheDir := opts.CacheDir
	if cacheDir == "" {
		d, err := DefaultCacheDir()
		if err != nil {
			return "", err
		}
		cacheDir = d
	}
	files, err := imageEntries(ctx, opts)
	if err != nil {
		return "", err
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	// Sorted order puts every directory before what it contains, which
	// the kernel's unpacker needs.
	slices.Sort(names)

	key := imageKey(names, files)
	dir := filepath.Join(cacheDir, "initramfs")
	out := filepath.Join(dir, key+".cpio.gz")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("initramfs cache: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".tmp-*.cpio.gz")
	if err != nil {
		return "", fmt.Errorf("initramfs cache: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := writeCpioGz(tmp, names, files); err != nil {
		tmp.Close()
		return "", fmt.Errorf("initramfs %s: %w", out, err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("initramfs %s: %w", out, err)
	}
	// Rename is atomic: parallel builders of the same key both succeed.
	if err := os.Rename(tmp.Name(), out); err != nil {
		return "", fmt.Errorf("initramfs cache: %w", err)
	}
	return out, nil
}

// imageEntries gathers every member of the image, keyed by path without
// the leading slash.
func imageEntries(ctx context.Context, opts InitramfsOptions) (map[string]entry, error) {
	files := map[string]entry{}
	dir := func(p string) {
		for ; p != "." && p != "/" && p != ""; p = path.Dir(p) {
			if _, ok := files[p]; !ok {
				files[p] = entry{mode: cpio.TypeDir | 0o755}
			}
		}
	}
	put := func(p string, e entry) {
		dir(path.Dir(p))
		files[p] = e
	}

	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "etc/testvm", "proc", "sys", "dev", "run", "root", "var"} {
		dir(d)
	}
	files["tmp"] = entry{mode: cpio.TypeDir | 0o1777}
	put("init", entry{mode: cpio.TypeReg | 0o755, data: initScript})

	bbPath := opts.Busybox
	if bbPath == "" {
		bbPath = DefaultBusybox
	}
	bb, applets, err := readBusybox(ctx, bbPath)
	if err != nil {
		return nil, err
	}
	put("bin/busybox", entry{mode: cpio.TypeReg | 0o755, data: bb})
	for _, a := range applets {
		if a == "bin/busybox" {
			continue
		}
		put(a, entry{mode: cpio.TypeSymlink | 0o777, data: []byte("/bin/busybox")})
	}

	tree, err := openModuleTree(opts.Kernel.ModulesDir)
	if err != nil {
		return nil, err
	}
	boot, err := tree.resolveModules(ctx, bootModules)
	if err != nil {
		return nil, fmt.Errorf("initramfs: boot modules: %w", err)
	}
	all, err := tree.resolveModules(ctx, append(slices.Clone(bootModules), opts.Modules...))
	if err != nil {
		return nil, fmt.Errorf("initramfs: modules %v: %w", opts.Modules, err)
	}
	modRoot := "lib/modules/" + opts.Kernel.Version
	for _, m := range all {
		put(modRoot+"/"+m.rel, entry{mode: cpio.TypeReg | 0o644, data: m.data})
	}
	put(modRoot+"/modules.dep", entry{mode: cpio.TypeReg | 0o644, data: modulesDep(all)})
	var load bytes.Buffer
	for _, m := range boot {
		fmt.Fprintf(&load, "/%s/%s\n", modRoot, m.rel)
	}
	put("etc/testvm/modules.load", entry{mode: cpio.TypeReg | 0o644, data: load.Bytes()})

	callerNames := make([]string, 0, len(opts.Files))
	for n := range opts.Files {
		callerNames = append(callerNames, n)
	}
	slices.Sort(callerNames)
	for _, n := range callerNames {
		f := opts.Files[n]
		p := path.Clean(n)
		if !path.IsAbs(p) || p == "/" {
			return nil, fmt.Errorf("initramfs: Files[%q]: want an absolute file path", n)
		}
		p = strings.TrimPrefix(p, "/")
		if old, ok := files[p]; ok && !old.mode.IsDir() {
			return nil, fmt.Errorf("initramfs: Files[%q] would replace a file the harness writes", n)
		}
		e, err := callerEntry(f)
		if err != nil {
			return nil, fmt.Errorf("initramfs: Files[%q]: %w", n, err)
		}
		put(p, e)
	}
	return files, nil
}

func callerEntry(f File) (entry, error) {
	mode := f.Mode.Perm()
	data := f.Data
	if f.HostPath != "" {
		if f.Data != nil {
			return entry{}, errors.New("set HostPath or Data, not both")
		}
		b, err := os.ReadFile(f.HostPath)
		if err != nil {
			return entry{}, err
		}
		if mode == 0 {
			fi, err := os.Stat(f.HostPath)
			if err != nil {
				return entry{}, err
			}
			mode = fi.Mode().Perm()
		}
		data = b
	}
	if mode == 0 {
		mode = 0o644
	}
	return entry{mode: cpio.TypeReg | cpio.FileMode(mode), data: data}, nil
}

// readBusybox returns the binary and its applet paths (e.g. "usr/bin/awk").
// A dynamically linked busybox would fail in the guest with a cryptic
// "not found", so it is refused here.
func readBusybox(ctx context.Context, p string) ([]byte, []string, error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, nil, fmt.Errorf("initramfs: static busybox %s: %v (Debian package busybox-static): %w", p, err, ErrHostDeps)
	}
	ef, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, nil, fmt.Errorf("initramfs: busybox %s is not an ELF binary: %w", p, err)
	}
	for _, prog := range ef.Progs {
		if prog.Type == elf.PT_INTERP {
			return nil, nil, fmt.Errorf("initramfs: busybox %s is dynamically linked; install busybox-static: %w", p, ErrHostDeps)
		}
	}
	out, err := exec.CommandContext(ctx, p, "--list-full").Output()
	if err != nil {
		return nil, nil, fmt.Errorf("initramfs: %s --list-full: %w", p, err)
	}
	var applets []string
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimPrefix(strings.TrimSpace(line), "/")
		if line != "" && !strings.Contains(line, "..") {
			applets = append(applets, line)
		}
	}
	if len(applets) == 0 {
		return nil, nil, fmt.Errorf("initramfs: %s --list-full listed no applets", p)
	}
	return data, applets, nil
}

// imageKey hashes everything that ends up in the image.
func imageKey(names []string, files map[string]entry) string {
	h := sha256.New()
	h.Write([]byte(imageFormat))
	var n [8]byte
	for _, name := range names {
		e := files[name]
		h.Write([]byte(name))
		binary.BigEndian.PutUint32(n[:4], uint32(e.mode))
		h.Write(n[:4])
		binary.BigEndian.PutUint64(n[:], uint64(len(e.data)))
		h.Write(n[:])
		h.Write(e.data)
	}
	return hex.EncodeToString(h.Sum(nil))[:24]
}

// writeCpioGz writes the image. Owners are root and times are zero, so the
// same inputs give the same bytes. The cpio library cannot write device
// nodes; the kernel's built-in initramfs supplies /dev/console and /init
// mounts devtmpfs for the rest.
func writeCpioGz(f *os.File, names []string, files map[string]entry) error {
	zw, err := gzip.NewWriterLevel(f, gzip.BestSpeed)
	if err != nil {
		return err
	}
	cw := cpio.NewWriter(zw)
	for _, name := range names {
		e := files[name]
		hdr := &cpio.Header{Name: name, Mode: e.mode, Size: int64(len(e.data))}
		if e.mode.IsDir() {
			hdr.Links = 2
		}
		if e.mode&cpio.ModeType == cpio.TypeSymlink {
			hdr.Linkname = string(e.data)
		}
		if err := cw.WriteHeader(hdr); err != nil {
			return err
		}
		if len(e.data) > 0 {
			if _, err := cw.Write(e.data); err != nil {
				return err
			}
		}
	}
	if err := cw.Close(); err != nil {
		return err
	}
	return zw.Close()
}
