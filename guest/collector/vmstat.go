package collector

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/hotplugheaven/hotplug/proto"
)

// swapCounters are the cumulative swap counters of /proc/vmstat, in pages.
type swapCounters struct {
	in, out uint64
	ok      bool // false: no reading (no baseline)
}

// maxVMStat bounds what is read of /proc/vmstat. A 6.x kernel prints about
// 180 lines, 5 KiB; the counters we want sit in the first half.
const maxVMStat = 64 << 10

// maxRatePerSec mirrors proto.Report.Validate.
const maxRatePerSec = 1e9

// memCounters are /proc/vmstat's cumulative memory-pressure counters.
type memCounters struct {
	refaultAnon, refaultFile, majFaults, allocStalls, oomKills uint64
}

// vmstatSource reads the swap and memory-pressure counters of
// /proc/vmstat. procfs has no parser for this file (its VM type is
// /proc/sys/vm), so parseVMStatAll is ours. The file is undocumented beyond
// Documentation/filesystems/proc.rst naming it; the counters are the
// vm_event_item and node_stat_item names of include/linux/vm_event_item.h
// and mmzone.h. Without it swap rates read as zero and the memory counters
// are not reported.
type vmstatSource struct {
	path            string
	buf             []byte
	cur, prev       swapCounters
	curMem, prevMem memCounters // valid with cur.ok, prev.ok (the same read)
}

func (s *vmstatSource) Name() string { return SourceVMStat }
func (s *vmstatSource) Path() string { return s.path }

func (s *vmstatSource) Read() error {
	b, err := readFileInto(s.path, s.buf[:0], maxVMStat)
	s.buf = b[:0]
	if err == nil {
		s.cur, s.curMem, err = parseVMStatAll(b)
	}
	if err != nil {
		s.cur, s.prev = swapCounters{}, swapCounters{}
		return absent(s.path, err, "swap rates and memory pressure read as zero")
	}
	return nil
}

func (s *vmstatSource) Fill(r *proto.Report) error {
	if r.IntervalNanos > 0 && s.prev.ok {
		r.SwapInPerSec, r.SwapOutPerSec = swapRates(s.prev, s.cur, r.IntervalNanos)
		m, p, c := memoryOf(r), s.prevMem, s.curMem
		m.RefaultAnon, m.RefaultFile = delta(p.refaultAnon, c.refaultAnon), delta(p.refaultFile, c.refaultFile)
		m.MajorFaults, m.AllocStalls = delta(p.majFaults, c.majFaults), delta(p.allocStalls, c.allocStalls)
		m.OOMKills = delta(p.oomKills, c.oomKills)
	}
	s.prev, s.prevMem = s.cur, s.curMem
	return nil
}

// delta is c−p for a cumulative counter; 0 when it went backwards (a
// reset has no meaningful delta).
func delta(p, c uint64) uint64 {
	if c < p {
		return 0
	}
	return c - p
}

// errNoSwapCounters: the file parsed but lacks pswpin or pswpout.
var errNoSwapCounters = errors.New("no pswpin/pswpout lines")

// parseVMStat returns the pswpin and pswpout counters of a /proc/vmstat
// file.
func parseVMStat(b []byte) (in, out uint64, err error) {
	c, _, err := parseVMStatAll(b)
	return c.in, c.out, err
}

// parseVMStatAll reads a /proc/vmstat file: lines of "name value". Lines it
// does not want are skipped unparsed, so a kernel adding counters does not
// break it; a malformed line it wants is an error. pswpin and pswpout are
// required; the memory counters are not (a kernel before 5.9 has one
// workingset_refault, counted as file refaults; the allocstall_* of all
// zones are summed).
func parseVMStatAll(b []byte) (swapCounters, memCounters, error) {
	var c swapCounters
	var m memCounters
	var haveIn, haveOut bool
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		name, value, ok := bytes.Cut(line, []byte{' '})
		if !ok {
			continue
		}
		var dst *uint64
		add := false
		switch string(name) {
		case "pswpin":
			dst, haveIn = &c.in, true
		case "pswpout":
			dst, haveOut = &c.out, true
		case "workingset_refault_anon":
			dst = &m.refaultAnon
		case "workingset_refault_file", "workingset_refault":
			dst = &m.refaultFile
		case "pgmajfault":
			dst = &m.majFaults
		case "oom_kill":
			dst = &m.oomKills
		default:
			if !bytes.HasPrefix(name, []byte("allocstall_")) {
				continue
			}
			dst, add = &m.allocStalls, true
		}
		v, err := strconv.ParseUint(string(bytes.TrimSpace(value)), 10, 64)
		if err != nil {
			return swapCounters{}, memCounters{}, fmt.Errorf("%w: %s: %v", ErrParse, name, err)
		}
		if add {
			*dst += v
		} else {
			*dst = v
		}
	}
	if !haveIn || !haveOut {
		return swapCounters{}, memCounters{}, fmt.Errorf("%w: %w", ErrParse, errNoSwapCounters)
	}
	c.ok = true
	return c, m, nil
}

// swapRates turns two readings into pages per second. A counter that went
// backwards has no meaningful delta; with no way to say "unknown" in the
// Report, it reads as no swapping this interval, and cur is the next
// baseline.
func swapRates(prev, cur swapCounters, intervalNanos int64) (in, out float64) {
	if !prev.ok || !cur.ok || intervalNanos <= 0 {
		return 0, 0
	}
	secs := float64(intervalNanos) / 1e9
	rate := func(p, c uint64) float64 {
		if c < p {
			return 0
		}
		return min(float64(c-p)/secs, maxRatePerSec)
	}
	return rate(prev.in, cur.in), rate(prev.out, cur.out)
}

// readFileInto reads at most limit bytes of path into buf, growing it as
// needed, and returns the filled slice. It exists so that files read every
// second reuse one buffer; /proc files report size 0, so os.ReadFile's size
// hint does not help.
func readFileInto(path string, buf []byte, limit int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return buf, err
	}
	defer f.Close()
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := f.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
		if len(buf) > limit {
			return buf, fmt.Errorf("longer than %d bytes", limit)
		}
	}
}
