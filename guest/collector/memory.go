package collector

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/hotplugheaven/hotplug/proto"
)

// psiTotals are the cumulative stall times of /proc/pressure/memory, µs.
type psiTotals struct {
	some, full uint64
	ok         bool
}

// readPSIMemory reads the "some" and "full" totals of /proc/pressure/memory
// (Documentation/accounting/psi.rst) through procfs.
func (s *Sampler) readPSIMemory() psiTotals {
	st, err := s.fs.PSIStatsForResource("memory")
	if errors.Is(err, syscall.EOPNOTSUPP) {
		err = fmt.Errorf("%w: PSI is built in but disabled (psi=0, or CONFIG_PSI_DEFAULT_DISABLED without psi=1)", err)
	}
	if err == nil && (st.Some == nil || st.Full == nil) {
		err = fmt.Errorf("%w: no \"some\" and \"full\" lines", ErrParse)
	}
	if err != nil {
		s.setSource(srcPSIMemory, false, absent(s.psiMemPath, err,
			"this kernel has no PSI; memory is sized from refaults, swap and MemAvailable alone"))
		return psiTotals{}
	}
	s.setSource(srcPSIMemory, true, nil)
	return psiTotals{some: st.Some.Total, full: st.Full.Total, ok: true}
}

// memBlocks is the state of the guest's memory blocks.
type memBlocks struct {
	size            uint64
	online, offline uint32
}

// maxBlockDirs bounds the memoryN entries read (a petabyte at 1 GiB).
const maxBlockDirs = 1 << 20

// blockRescan is how many samples the block counts are kept before the
// directory is read again, unless MemTotal changed: reading every block's
// state costs about 10 µs per block, far more than the rest of a sample.
const blockRescan = 60

// memBlocksCached is readMemBlocks at most every blockRescan samples, or
// at once when MemTotal moved (memory was onlined or offlined).
func (s *Sampler) memBlocksCached(memTotal uint64) memBlocks {
	if s.blocksAge > 0 && s.blocksAge < blockRescan && memTotal == s.blocksMemTotal {
		s.blocksAge++
		return s.blocks
	}
	s.blocks, s.blocksAge, s.blocksMemTotal = s.readMemBlocks(), 1, memTotal
	return s.blocks
}

// readMemBlocks counts the online and offline blocks under
// /sys/devices/system/memory (Documentation/admin-guide/mm/memory-hotplug.rst):
// block_size_bytes is hexadecimal, each memoryN/state reads "online",
// "offline" or "going-offline" (counted as online: still in use).
func (s *Sampler) readMemBlocks() memBlocks {
	dir := s.opts.SysRoot + "/devices/system/memory"
	fail := func(err error) memBlocks {
		s.setSource(srcMemBlocks, false, absent(dir, err, "no memory hot-plug in this kernel; memory blocks are not reported"))
		return memBlocks{}
	}
	b, err := readFileInto(dir+"/block_size_bytes", s.blkbuf[:0], 64)
	s.blkbuf = b[:0]
	if err != nil {
		return fail(err)
	}
	size, err := strconv.ParseUint(string(bytes.TrimSpace(b)), 16, 64)
	if err != nil || size == 0 || size&(size-1) != 0 {
		return fail(fmt.Errorf("%w: block_size_bytes %q", ErrParse, bytes.TrimSpace(b)))
	}
	f, err := os.Open(dir)
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
		st, err := readFileInto(dir+"/"+n+"/state", s.blkbuf[:0], 64)
		s.blkbuf = st[:0]
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
	s.setSource(srcMemBlocks, true, nil)
	return m
}

// memoryStats is the interval's proto.MemoryStats from two readings of
// each counter; nil when no memory source could be read at all.
func memoryStats(prevVM, curVM memCounters, vmOK bool, prevPSI, curPSI psiTotals, blocks memBlocks) *proto.MemoryStats {
	if !vmOK && !curPSI.ok && blocks.size == 0 {
		return nil
	}
	d := func(p, c uint64) uint64 {
		if c < p {
			return 0 // reset: no meaningful delta
		}
		return c - p
	}
	m := &proto.MemoryStats{BlockBytes: blocks.size, BlocksOnline: blocks.online, BlocksOffline: blocks.offline}
	if vmOK {
		m.RefaultAnon, m.RefaultFile = d(prevVM.refaultAnon, curVM.refaultAnon), d(prevVM.refaultFile, curVM.refaultFile)
		m.MajorFaults, m.AllocStalls = d(prevVM.majFaults, curVM.majFaults), d(prevVM.allocStalls, curVM.allocStalls)
		m.OOMKills = d(prevVM.oomKills, curVM.oomKills)
	}
	if prevPSI.ok && curPSI.ok {
		m.HavePSI = true
		m.PSISomeMicros, m.PSIFullMicros = d(prevPSI.some, curPSI.some), d(prevPSI.full, curPSI.full)
		// Two lines read at one moment, but the kernel updates them
		// apart: full never exceeds some.
		m.PSIFullMicros = min(m.PSIFullMicros, m.PSISomeMicros)
	}
	return m
}
