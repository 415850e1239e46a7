package proto

import (
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"

	"github.com/vmihailenco/msgpack/v5"
)

// MaxCPUs bounds every CPU number on the wire. Linux distributions build
// kernels with NR_CPUS up to 8192, but no VM we size has more than a few
// hundred vCPUs; 1024 keeps per-CPU arrays, and so frames, small.
const MaxCPUs = 1024

// maxCPUListLen bounds the text form of a CPUSet before it is parsed. The
// worst honest case, every other CPU of 1024 ("0,2,4,…,1022"), is under 4 KiB.
const maxCPUListLen = 4096

// ErrCPUList reports a CPU list that is not in the kernel's list format or
// names a CPU outside [0, MaxCPUs).
var ErrCPUList = errors.New("invalid CPU list")

// CPUSet is a set of CPU numbers. On the wire and in sysfs it is the kernel's
// list format ("0-3,5"), see Documentation/admin-guide/cputopology.rst. The
// zero value is the empty set.
//
// Copies of a CPUSet share storage, like slices: Clone before changing a
// copy that someone else may read.
type CPUSet struct {
	words []uint64
}

// NewCPUSet returns the set holding cpus. It panics on a CPU outside
// [0, MaxCPUs); use it only with trusted numbers (tests, constants).
func NewCPUSet(cpus ...int) CPUSet {
	var s CPUSet
	for _, c := range cpus {
		if c < 0 || c >= MaxCPUs {
			panic(fmt.Sprintf("proto.NewCPUSet: cpu %d out of range", c))
		}
		s.Add(c)
	}
	return s
}

// ParseCPUList parses the kernel's list format, as found in
// /sys/devices/system/cpu/online. Surrounding white space is ignored.
func ParseCPUList(text string) (CPUSet, error) {
	var s CPUSet
	text = strings.TrimSpace(text)
	if len(text) > maxCPUListLen {
		return s, fmt.Errorf("%w: %d bytes, limit %d", ErrCPUList, len(text), maxCPUListLen)
	}
	if text == "" {
		return s, nil
	}
	for _, part := range strings.Split(text, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := parseCPU(lo)
		if err != nil {
			return CPUSet{}, fmt.Errorf("%w: %q: %v", ErrCPUList, part, err)
		}
		b := a
		if isRange {
			if b, err = parseCPU(hi); err != nil {
				return CPUSet{}, fmt.Errorf("%w: %q: %v", ErrCPUList, part, err)
			}
			if b < a {
				return CPUSet{}, fmt.Errorf("%w: %q: range runs backwards", ErrCPUList, part)
			}
		}
		for c := a; c <= b; c++ {
			s.Add(c)
		}
	}
	return s, nil
}

func parseCPU(s string) (int, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("not a CPU number")
	}
	if n >= MaxCPUs {
		return 0, fmt.Errorf("cpu %d is past the limit of %d", n, MaxCPUs)
	}
	return int(n), nil
}

// Add puts cpu in the set. Numbers outside [0, MaxCPUs) are ignored.
func (s *CPUSet) Add(cpu int) {
	if cpu < 0 || cpu >= MaxCPUs {
		return
	}
	w := cpu / 64
	for len(s.words) <= w {
		s.words = append(s.words, 0)
	}
	s.words[w] |= 1 << (cpu % 64)
}

// Remove takes cpu out of the set.
func (s *CPUSet) Remove(cpu int) {
	if cpu < 0 || cpu/64 >= len(s.words) {
		return
	}
	s.words[cpu/64] &^= 1 << (cpu % 64)
}

// Has reports whether cpu is in the set.
func (s CPUSet) Has(cpu int) bool {
	if cpu < 0 || cpu/64 >= len(s.words) {
		return false
	}
	return s.words[cpu/64]&(1<<(cpu%64)) != 0
}

// Len is the number of CPUs in the set.
func (s CPUSet) Len() int {
	n := 0
	for _, w := range s.words {
		n += bits.OnesCount64(w)
	}
	return n
}

// Slice returns the CPUs in ascending order.
func (s CPUSet) Slice() []int {
	out := make([]int, 0, s.Len())
	for i, w := range s.words {
		for w != 0 {
			b := bits.TrailingZeros64(w)
			out = append(out, i*64+b)
			w &^= 1 << b
		}
	}
	return out
}

// Max returns the highest CPU in the set, or -1 when it is empty.
func (s CPUSet) Max() int {
	for i := len(s.words) - 1; i >= 0; i-- {
		if w := s.words[i]; w != 0 {
			return i*64 + 63 - bits.LeadingZeros64(w)
		}
	}
	return -1
}

// Min returns the lowest CPU in the set, or -1 when it is empty.
func (s CPUSet) Min() int {
	for i, w := range s.words {
		if w != 0 {
			return i*64 + bits.TrailingZeros64(w)
		}
	}
	return -1
}

// Clone returns a copy that shares nothing with s.
func (s CPUSet) Clone() CPUSet {
	return CPUSet{words: append([]uint64(nil), s.words...)}
}

// Union returns the CPUs in s or o, in a new set.
func (s CPUSet) Union(o CPUSet) CPUSet {
	out := s.Clone()
	for i, w := range o.words {
		if i < len(out.words) {
			out.words[i] |= w
		} else {
			out.words = append(out.words, w)
		}
	}
	return out
}

// Difference returns the CPUs in s that are not in o.
func (s CPUSet) Difference(o CPUSet) CPUSet {
	out := CPUSet{words: make([]uint64, len(s.words))}
	for i, w := range s.words {
		if i < len(o.words) {
			w &^= o.words[i]
		}
		out.words[i] = w
	}
	return out
}

// SubsetOf reports whether every CPU in s is also in o.
func (s CPUSet) SubsetOf(o CPUSet) bool {
	return s.Difference(o).Len() == 0
}

// Equal reports whether both sets hold the same CPUs.
func (s CPUSet) Equal(o CPUSet) bool {
	return s.SubsetOf(o) && o.SubsetOf(s)
}

// String formats the set in the kernel's list format ("0-3,5"); the empty
// set is "".
func (s CPUSet) String() string {
	var b strings.Builder
	cpus := s.Slice()
	for i := 0; i < len(cpus); {
		j := i
		for j+1 < len(cpus) && cpus[j+1] == cpus[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(cpus[i]))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(cpus[j]))
		}
		i = j + 1
	}
	return b.String()
}

// IsZero reports whether the set is empty. msgpack's omitempty relies on it:
// without it a struct with only unexported fields always counts as empty.
func (s CPUSet) IsZero() bool { return s.Len() == 0 }

// EncodeMsgpack writes the set as its list-format string.
func (s CPUSet) EncodeMsgpack(enc *msgpack.Encoder) error {
	return enc.EncodeString(s.String())
}

// DecodeMsgpack reads a list-format string, bounded and range-checked.
func (s *CPUSet) DecodeMsgpack(dec *msgpack.Decoder) error {
	text, err := dec.DecodeString()
	if err != nil {
		return err
	}
	parsed, err := ParseCPUList(text)
	if err != nil {
		return err
	}
	*s = parsed
	return nil
}

// MarshalText makes CPUSet print as "0-3,5" in JSON and TOML.
func (s CPUSet) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses the list format.
func (s *CPUSet) UnmarshalText(b []byte) error {
	parsed, err := ParseCPUList(string(b))
	if err != nil {
		return err
	}
	*s = parsed
	return nil
}
