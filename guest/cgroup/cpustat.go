// Package cgroup reads the CPU time of systemd units from the cgroup v2
// hierarchy (Documentation/admin-guide/cgroup-v2.rst, "cpu.stat"), for the
// gray-box mode's CPU-seconds per request. It only reads; it never moves
// processes or changes controllers, and it reads files, never the unit
// manager over D-Bus.
package cgroup

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"time"
)

// DefaultRoot is where cgroup v2 is mounted.
const DefaultRoot = "/sys/fs/cgroup"

// ErrParse: a cpu.stat file is not what the kernel writes.
var ErrParse = errors.New("cgroup: cannot parse")

// ErrNoUnit: no cgroup of that unit exists (not started, or not a unit of
// this system).
var ErrNoUnit = errors.New("cgroup: no such unit")

// FS is a cgroup v2 hierarchy mounted at a root.
type FS struct{ root string }

// NewFS returns the hierarchy at root ("" means DefaultRoot).
func NewFS(root string) FS {
	if root == "" {
		root = DefaultRoot
	}
	return FS{root: root}
}

// unitRE is what systemd allows in unit names (systemd.unit(5)): a name,
// a type suffix.
var unitRE = regexp.MustCompile(`^[A-Za-z0-9:_.\\@-]{1,250}\.(service|scope|slice)$`)

// ValidUnit reports whether name can be a systemd unit whose cgroup is read.
func ValidUnit(name string) bool { return unitRE.MatchString(name) && name != ".." }

// UnitCPU is the CPU time the unit's processes (and their children's
// cgroups) have used since the cgroup was created: usage_usec of its
// cpu.stat. Services are looked for in system.slice first, then in any
// top-level slice.
func (fs FS) UnitCPU(unit string) (time.Duration, error) {
	if !ValidUnit(unit) {
		return 0, fmt.Errorf("cgroup: %q is not a systemd unit name", unit)
	}
	p := filepath.Join(fs.root, "system.slice", unit, "cpu.stat")
	b, err := readSmall(p)
	if errors.Is(err, os.ErrNotExist) {
		m, _ := filepath.Glob(filepath.Join(fs.root, "*.slice", unit, "cpu.stat"))
		if len(m) == 0 {
			return 0, fmt.Errorf("%w: %s (no %s under %s; is it running, and is cgroup v2 mounted there?)", ErrNoUnit, unit, unit, fs.root)
		}
		p = m[0]
		b, err = readSmall(p)
	}
	if err != nil {
		return 0, err
	}
	st, err := ParseCPUStat(b)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", p, err)
	}
	return st.Usage, nil
}

// maxStatBytes bounds a cpu.stat read; the kernel writes a few hundred.
const maxStatBytes = 16 << 10

func readSmall(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxStatBytes))
}

// CPUStat is the part of cpu.stat used here.
type CPUStat struct {
	Usage, User, System time.Duration
}

// ParseCPUStat parses the flat-keyed cpu.stat ("usage_usec 1234\n" …);
// usage_usec is required, unknown keys are skipped.
func ParseCPUStat(b []byte) (CPUStat, error) {
	var st CPUStat
	have := false
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if len(line) == 0 {
			continue
		}
		k, v, ok := bytes.Cut(line, []byte{' '})
		if !ok {
			return CPUStat{}, fmt.Errorf("%w: line %q", ErrParse, clip(line))
		}
		var dst *time.Duration
		switch string(k) {
		case "usage_usec":
			dst, have = &st.Usage, true
		case "user_usec":
			dst = &st.User
		case "system_usec":
			dst = &st.System
		default:
			continue
		}
		n, err := strconv.ParseUint(string(v), 10, 64)
		if err != nil || n > uint64(1<<63-1)/1000 {
			return CPUStat{}, fmt.Errorf("%w: %s %q", ErrParse, k, clip(v))
		}
		*dst = time.Duration(n) * time.Microsecond
	}
	if !have {
		return CPUStat{}, fmt.Errorf("%w: no usage_usec", ErrParse)
	}
	return st, nil
}

func clip(b []byte) []byte {
	if len(b) > 40 {
		return b[:40]
	}
	return b
}
