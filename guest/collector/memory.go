package collector

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/prometheus/procfs"

	"github.com/hotplugheaven/hotplug/proto"
)

// psiTotals are the cumulative stall times of /proc/pressure/memory, µs.
type psiTotals struct {
	some, full uint64
	ok         bool
}

// psiMemorySource reads the "some" and "full" totals of
// /proc/pressure/memory (Documentation/accounting/psi.rst) through procfs.
type psiMemorySource struct {
	fs        procfs.FS
	path      string
	cur, prev psiTotals
}

func (s *psiMemorySource) Name() string { return SourcePSIMemory }
func (s *psiMemorySource) Path() string { return s.path }

func (s *psiMemorySource) Read() error {
	st, err := s.fs.PSIStatsForResource("memory")
	if errors.Is(err, syscall.EOPNOTSUPP) {
		err = fmt.Errorf("%w: PSI is built in but disabled (psi=0, or CONFIG_PSI_DEFAULT_DISABLED without psi=1)", err)
	}
	if err == nil && (st.Some == nil || st.Full == nil) {
		err = fmt.Errorf("%w: no \"some\" and \"full\" lines", ErrParse)
	}
	if err != nil {
		s.cur, s.prev = psiTotals{}, psiTotals{}
		return absent(s.path, err, "this kernel has no PSI; memory is sized from refaults, swap and MemAvailable alone")
	}
	s.cur = psiTotals{some: st.Some.Total, full: st.Full.Total, ok: true}
	return nil
}

func (s *psiMemorySource) Fill(r *proto.Report) error {
	if r.IntervalNanos > 0 && s.prev.ok {
		m := memoryOf(r)
		m.HavePSI = true
		// The stall totals advance on the kernel's clock, not ours: never
		// more than the interval. The two lines are read at one moment
		// but updated apart: full never exceeds some.
		m.PSISomeMicros = min(delta(s.prev.some, s.cur.some), uint64(r.IntervalNanos/1e3))
		m.PSIFullMicros = min(delta(s.prev.full, s.cur.full), m.PSISomeMicros)
	}
	s.prev = s.cur
	return nil
}

// memBlocks is the state of the guest's memory blocks.
type memBlocks struct {
	size            uint64
	online, offline uint32
}

// maxBlockDirs bounds the memoryN entries read (a petabyte at 1 GiB).
const maxBlockDirs = 1 << 20

// blockRescan is how many samples the block counts are kept before the
// directory is read again, unless MemTotal changed.
const blockRescan = 60

// memBlockSource counts the online and offline blocks under
// /sys/devices/system/memory (Documentation/admin-guide/mm/memory-hotplug.rst):
// block_size_bytes is hexadecimal, each memoryN/state reads "online",
// "offline" or "going-offline" (counted as online: still in use). The
// directory is read again only every blockRescan samples, or at once when
// MemTotal moved (memory was onlined or offlined): reading every block's
// state costs about 10 µs per block, far more than the rest of a sample.
type memBlockSource struct {
	dir      string
	meminfo  *meminfoSource // for MemTotal, read before this source
	buf      []byte
	blocks   memBlocks
	age      int
	memTotal uint64
	err      error // of the last scan
}

func (s *memBlockSource) Name() string { return SourceMemBlocks }
func (s *memBlockSource) Path() string { return s.dir }

func (s *memBlockSource) Read() error {
	total := s.meminfo.cur.total
	if s.age > 0 && s.age < blockRescan && total == s.memTotal {
		s.age++
		return s.err
	}
	s.blocks, s.err = s.scan()
	s.age, s.memTotal = 1, total
	return s.err
}

func (s *memBlockSource) Fill(r *proto.Report) error {
	if s.blocks.size > 0 {
		m := memoryOf(r)
		m.BlockBytes, m.BlocksOnline, m.BlocksOffline = s.blocks.size, s.blocks.online, s.blocks.offline
	}
	return nil
}

func (s *memBlockSource) scan() (memBlocks, error) {
	fail := func(err error) (memBlocks, error) {
		return memBlocks{}, absent(s.dir, err, "no memory hot-plug in this kernel; memory blocks are not reported")
	}
	b, err := readFileInto(s.dir+"/block_size_bytes", s.buf[:0], 64)
	s.buf = b[:0]
	if err != nil {
		return fail(err)
	}
	size, err := strconv.ParseUint(string(bytes.TrimSpace(b)), 16, 64)
	if err != nil || size == 0 || size&(size-1) != 0 {
		return fail(fmt.Errorf("%w: block_size_bytes %q", ErrParse, bytes.TrimSpace(b)))
	}
	f, err := os.Open(s.dir)
	if err != nil {
		return fail(err)
	}
	names, err := f.Readdirnames(maxBlockDirs)
	f.Close()
	if err != nil {
		return fail(err)
	}
	m := memBlocks{size: size}
	for _, n := range names {
		if !strings.HasPrefix(n, "memory") {
			continue
		}
		if _, err := strconv.ParseUint(n[len("memory"):], 10, 32); err != nil {
			continue
		}
		st, err := readFileInto(s.dir+"/"+n+"/state", s.buf[:0], 64)
		s.buf = st[:0]
		if err != nil {
			continue // removed between the listing and the read
		}
		switch string(bytes.TrimSpace(st)) {
		case "online", "going-offline":
			m.online++
		case "offline":
			m.offline++
		}
	}
	return m, nil
}
