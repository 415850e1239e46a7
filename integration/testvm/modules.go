package testvm

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// bootModules are loaded by /init, in this order, before it looks for the
// virtio-serial ports. In Debian's cloud kernel all of them are modules.
var bootModules = []string{"virtio", "virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "virtio_console"}

// moduleSuffixes are the file endings depmod accepts for a module.
var moduleSuffixes = []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"}

// ErrModuleNotFound: a requested module is neither a file nor built in.
var ErrModuleNotFound = errors.New("kernel module not found")

// kmod is one module as it goes into the image: always uncompressed, so the
// guest needs no decompressor and busybox insmod/modprobe can load it.
type kmod struct {
	name string // canonical name, '-' replaced by '_'
	rel  string // path under lib/modules/<version>/, ending in .ko
	data []byte
	deps []string // direct dependencies, from .modinfo
}

// moduleTree reads module files from one kernel's lib/modules/<version>.
// Debian's package has no modules.dep (depmod runs at install time, which we
// skip), so dependencies come from each module's .modinfo section.
type moduleTree struct {
	dir     string
	files   map[string]string // canonical name -> path relative to dir
	builtin map[string]bool
}

func canonicalModule(name string) string { return strings.ReplaceAll(name, "-", "_") }

func openModuleTree(dir string) (*moduleTree, error) {
	t := &moduleTree{dir: dir, files: map[string]string{}, builtin: map[string]bool{}}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		base := d.Name()
		for _, suf := range moduleSuffixes {
			if name, ok := strings.CutSuffix(base, suf); ok {
				rel, _ := filepath.Rel(dir, path)
				t.files[canonicalModule(name)] = rel
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("index modules in %s: %w", dir, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		for _, line := range strings.Fields(string(b)) {
			name := strings.TrimSuffix(filepath.Base(line), ".ko")
			t.builtin[canonicalModule(name)] = true
		}
	}
	return t, nil
}

// load reads one module, decompressing it if needed.
func (t *moduleTree) load(ctx context.Context, name string) (kmod, error) {
	rel, ok := t.files[name]
	if !ok {
		return kmod{}, fmt.Errorf("%w: %q in %s", ErrModuleNotFound, name, t.dir)
	}
	path := filepath.Join(t.dir, rel)
	data, err := readModuleFile(ctx, path)
	if err != nil {
		return kmod{}, err
	}
	ef, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return kmod{}, fmt.Errorf("module %s: not an ELF object: %w", path, err)
	}
	sec := ef.Section(".modinfo")
	if sec == nil {
		return kmod{}, fmt.Errorf("module %s: no .modinfo section", path)
	}
	info, err := sec.Data()
	if err != nil {
		return kmod{}, fmt.Errorf("module %s: read .modinfo: %w", path, err)
	}
	for _, suf := range moduleSuffixes[1:] {
		if r, ok := strings.CutSuffix(rel, suf); ok {
			rel = r + ".ko"
		}
	}
	return kmod{name: name, rel: rel, data: data, deps: modinfoDepends(parseModinfo(info))}, nil
}

// readModuleFile returns a module's ELF bytes. gzip is decoded in Go; xz and
// zstd by the host tools, which every Debian that compresses modules has.
func readModuleFile(ctx context.Context, path string) ([]byte, error) {
	var tool, pkg string
	switch {
	case strings.HasSuffix(path, ".ko"):
		return os.ReadFile(path)
	case strings.HasSuffix(path, ".ko.gz"):
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("module %s: %w", path, err)
		}
		return io.ReadAll(zr)
	case strings.HasSuffix(path, ".ko.xz"):
		tool, pkg = "xz", "xz-utils"
	case strings.HasSuffix(path, ".ko.zst"):
		tool, pkg = "zstd", "zstd"
	default:
		return nil, fmt.Errorf("module %s: unknown compression", path)
	}
	bin, err := lookTool(tool, pkg)
	if err != nil {
		return nil, fmt.Errorf("module %s is compressed: %w", path, err)
	}
	out, err := exec.CommandContext(ctx, bin, "-dc", path).Output()
	if err != nil {
		return nil, fmt.Errorf("%s -dc %s: %w", tool, path, err)
	}
	return out, nil
}

// parseModinfo splits a .modinfo section: NUL-separated key=value strings,
// with NUL padding between them. Keys may repeat (alias=, parm=).
func parseModinfo(b []byte) map[string][]string {
	m := map[string][]string{}
	for _, field := range bytes.Split(b, []byte{0}) {
		k, v, ok := strings.Cut(string(field), "=")
		if !ok || k == "" {
			continue
		}
		m[k] = append(m[k], v)
	}
	return m
}

// modinfoDepends turns "depends=a,b" into canonical names.
func modinfoDepends(info map[string][]string) []string {
	var deps []string
	for _, v := range info["depends"] {
		for _, d := range strings.Split(v, ",") {
			if d = strings.TrimSpace(d); d != "" {
				deps = append(deps, canonicalModule(d))
			}
		}
	}
	return deps
}

// errModuleCycle: .modinfo dependencies loop, which the kernel forbids.
var errModuleCycle = errors.New("kernel module dependency cycle")

// loadOrder returns want and everything it depends on, each module after its
// dependencies. deps reports a module's direct dependencies.
func loadOrder(want []string, deps func(string) ([]string, error)) ([]string, error) {
	var order []string
	state := map[string]int{} // 0 new, 1 visiting, 2 done
	var visit func(name string, path []string) error
	visit = func(name string, path []string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("%w: %s", errModuleCycle, strings.Join(append(path, name), " -> "))
		case 2:
			return nil
		}
		state[name] = 1
		ds, err := deps(name)
		if err != nil {
			return err
		}
		for _, d := range ds {
			if err := visit(d, append(path, name)); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, name)
		return nil
	}
	for _, w := range want {
		if err := visit(w, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// resolveModules loads want and their dependencies, skipping modules built
// into the kernel. The result is in load order.
func (t *moduleTree) resolveModules(ctx context.Context, want []string) ([]kmod, error) {
	loaded := map[string]kmod{}
	var canon []string
	for _, w := range want {
		canon = append(canon, canonicalModule(w))
	}
	order, err := loadOrder(canon, func(name string) ([]string, error) {
		if _, ok := t.files[name]; !ok && t.builtin[name] {
			return nil, nil
		}
		m, err := t.load(ctx, name)
		if err != nil {
			return nil, err
		}
		loaded[name] = m
		return m.deps, nil
	})
	if err != nil {
		return nil, err
	}
	var mods []kmod
	for _, name := range order {
		if m, ok := loaded[name]; ok {
			mods = append(mods, m)
		}
	}
	return mods, nil
}

// modulesDep renders modules.dep for the modules in the image, in depmod's
// format: each module's full dependency closure, in reverse load order
// (busybox and kmod modprobe load the list from the end).
func modulesDep(mods []kmod) []byte {
	byName := map[string]kmod{}
	for _, m := range mods {
		byName[m.name] = m
	}
	var b bytes.Buffer
	for _, m := range mods {
		order, _ := loadOrder(m.deps, func(n string) ([]string, error) { return byName[n].deps, nil })
		var rels []string
		for _, n := range order {
			if d, ok := byName[n]; ok {
				rels = append(rels, d.rel)
			}
		}
		slices.Reverse(rels)
		fmt.Fprintf(&b, "%s:", m.rel)
		for _, r := range rels {
			fmt.Fprintf(&b, " %s", r)
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}
