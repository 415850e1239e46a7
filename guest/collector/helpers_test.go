package collector

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeClock is a Clock the test moves by hand.
type fakeClock struct {
	mono int64
	wall time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{mono: int64(1000 * time.Hour), wall: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() (int64, time.Time) { return c.mono, c.wall }

func (c *fakeClock) advance(d time.Duration) {
	c.mono += int64(d)
	c.wall = c.wall.Add(d)
}

// fixture copies testdata/<name> into a temp dir so the test can advance its
// counters, and returns the copy's root.
func fixture(t testing.TB, name string) string {
	t.Helper()
	src := filepath.Join("testdata", name)
	dst := t.TempDir()
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	return dst
}

func optionsFor(root string, clk Clock) Options {
	return Options{
		ProcRoot: filepath.Join(root, "proc"),
		SysRoot:  filepath.Join(root, "sys"),
		EtcRoot:  filepath.Join(root, "etc"),
		Clock:    clk,
	}
}

func writeFile(t testing.TB, root, rel, content string) {
	t.Helper()
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t testing.TB, root, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// editCounterLines rewrites the lines of root/rel whose first field is
// prefix followed by a CPU number ("cpu3"). edit gets the CPU and the
// numeric fields and returns the new fields, or nil to drop the line.
func editCounterLines(t testing.TB, root, rel, prefix string, edit func(cpu int, f []uint64) []uint64) {
	t.Helper()
	lines := strings.Split(readFile(t, root, rel), "\n")
	out := lines[:0]
	for _, l := range lines {
		fields := strings.Fields(l)
		if len(fields) == 0 || !strings.HasPrefix(fields[0], prefix) {
			out = append(out, l)
			continue
		}
		cpu, err := strconv.Atoi(strings.TrimPrefix(fields[0], prefix))
		if err != nil {
			out = append(out, l) // the "cpu" total line
			continue
		}
		nums := make([]uint64, len(fields)-1)
		for i, f := range fields[1:] {
			if nums[i], err = strconv.ParseUint(f, 10, 64); err != nil {
				t.Fatalf("%s: %q: %v", rel, l, err)
			}
		}
		if nums = edit(cpu, nums); nums == nil {
			continue
		}
		strs := make([]string, len(nums))
		for i, n := range nums {
			strs[i] = strconv.FormatUint(n, 10)
		}
		out = append(out, fields[0]+" "+strings.Join(strs, " "))
	}
	writeFile(t, root, rel, strings.Join(out, "\n"))
}

// statDelta is what one CPU did during an interval, in jiffies, in
// /proc/stat order: user nice system idle iowait irq softirq steal guest
// guest_nice.
type statDelta [10]uint64

// advanceStat adds deltas to the cpuN lines of proc/stat. CPUs without a
// delta are left unchanged.
func advanceStat(t testing.TB, root string, deltas map[int]statDelta) {
	t.Helper()
	editCounterLines(t, root, "proc/stat", "cpu", func(cpu int, f []uint64) []uint64 {
		d := deltas[cpu]
		for i := range f {
			f[i] += d[i]
		}
		return f
	})
}

// advanceSchedstat adds run_delay and pcount deltas to proc/schedstat.
func advanceSchedstat(t testing.TB, root string, wait, slices map[int]uint64) {
	t.Helper()
	editCounterLines(t, root, "proc/schedstat", "cpu", func(cpu int, f []uint64) []uint64 {
		f[7] += wait[cpu]
		f[8] += slices[cpu]
		return f
	})
}

var swapLine = regexp.MustCompile(`(?m)^(pswpin|pswpout) (\d+)$`)

// advanceVMStat adds to pswpin and pswpout.
func advanceVMStat(t testing.TB, root string, in, out uint64) {
	t.Helper()
	text := swapLine.ReplaceAllStringFunc(readFile(t, root, "proc/vmstat"), func(l string) string {
		name, v, _ := strings.Cut(l, " ")
		n, _ := strconv.ParseUint(v, 10, 64)
		if name == "pswpin" {
			n += in
		} else {
			n += out
		}
		return name + " " + strconv.FormatUint(n, 10)
	})
	writeFile(t, root, "proc/vmstat", text)
}

// advanceVMStatCounter adds d to one counter line of proc/vmstat.
func advanceVMStatCounter(t testing.TB, root, name string, d uint64) {
	t.Helper()
	lines := strings.Split(readFile(t, root, "proc/vmstat"), "\n")
	for i, l := range lines {
		n, v, ok := strings.Cut(l, " ")
		if ok && n == name {
			x, _ := strconv.ParseUint(v, 10, 64)
			lines[i] = name + " " + strconv.FormatUint(x+d, 10)
		}
	}
	writeFile(t, root, "proc/vmstat", strings.Join(lines, "\n"))
}

// readSource runs one source's Read as Sample does, recording its state.
func readSource(s *Sampler, i int) error {
	err := s.srcs[i].Read()
	s.states[i] = stateOf(s.srcs[i], err)
	return err
}

// blocksAt runs the memory block source's Read as if MemTotal were total.
func blocksAt(s *Sampler, total uint64) memBlocks {
	s.srcs[srcMeminfo].(*meminfoSource).cur.total = total
	b := s.srcs[srcMemBlocks].(*memBlockSource)
	if b.Read() != nil {
		return memBlocks{}
	}
	return b.blocks
}
