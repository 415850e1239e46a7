package proto

import (
	"encoding/binary"
	"fmt"
)

// checkStructure walks one msgpack object in b without recursion and without
// allocating per element. It refuses what a decoder would otherwise chase:
// nesting deeper than maxDepth, a container or string that declares more
// bytes or elements than remain in b, extension types (we send none), the
// reserved byte 0xc1, and trailing bytes after the object. After it passes,
// decoding allocates at most in proportion to len(b).
//
// Format: https://github.com/msgpack/msgpack/blob/master/spec.md
func checkStructure(b []byte, maxDepth int) error {
	var stack [32]int // pending element counts of enclosing containers
	if maxDepth > len(stack) {
		maxDepth = len(stack)
	}
	depth := 0
	pending := 1 // objects still to read at the current level
	i := 0
	for {
		for pending == 0 {
			if depth == 0 {
				if i != len(b) {
					return fmt.Errorf("%d trailing bytes after the message", len(b)-i)
				}
				return nil
			}
			depth--
			pending = stack[depth]
		}
		if i >= len(b) {
			return fmt.Errorf("truncated at byte %d", i)
		}
		pending--
		c := b[i]
		i++
		var skip, items int // bytes to skip; elements the object contains
		switch {
		case c <= 0x7f || c >= 0xe0: // positive and negative fixint
		case c <= 0x8f:
			items = 2 * int(c&0x0f)
		case c <= 0x9f:
			items = int(c & 0x0f)
		case c <= 0xbf:
			skip = int(c & 0x1f)
		case c == 0xc0 || c == 0xc2 || c == 0xc3: // nil, false, true
		case c == 0xc4 || c == 0xd9: // bin8, str8
			n, err := length(b, i, 1)
			if err != nil {
				return err
			}
			i, skip = i+1, n
		case c == 0xc5 || c == 0xda: // bin16, str16
			n, err := length(b, i, 2)
			if err != nil {
				return err
			}
			i, skip = i+2, n
		case c == 0xc6 || c == 0xdb: // bin32, str32
			n, err := length(b, i, 4)
			if err != nil {
				return err
			}
			i, skip = i+4, n
		case c == 0xcc || c == 0xd0:
			skip = 1
		case c == 0xcd || c == 0xd1:
			skip = 2
		case c == 0xca || c == 0xce || c == 0xd2:
			skip = 4
		case c == 0xcb || c == 0xcf || c == 0xd3:
			skip = 8
		case c == 0xdc || c == 0xde: // array16, map16
			n, err := length(b, i, 2)
			if err != nil {
				return err
			}
			i, items = i+2, n
			if c == 0xde {
				items *= 2
			}
		case c == 0xdd || c == 0xdf: // array32, map32
			n, err := length(b, i, 4)
			if err != nil {
				return err
			}
			i, items = i+4, n
			if c == 0xdf {
				items *= 2
			}
		case c >= 0xc7 && c <= 0xc9, c >= 0xd4 && c <= 0xd8:
			return fmt.Errorf("extension type %#02x at byte %d is not used by this protocol", c, i-1)
		default: // 0xc1
			return fmt.Errorf("reserved byte %#02x at byte %d", c, i-1)
		}
		if rest := len(b) - i; skip > rest {
			return fmt.Errorf("value at byte %d declares %d bytes, %d remain", i, skip, len(b)-i)
		}
		i += skip
		if items > 0 {
			// Every element takes at least one byte.
			if items > len(b)-i {
				return fmt.Errorf("container at byte %d declares %d elements, %d bytes remain", i, items, len(b)-i)
			}
			if depth >= maxDepth {
				return fmt.Errorf("nesting deeper than %d", maxDepth)
			}
			stack[depth] = pending
			depth++
			pending = items
		}
	}
}

// length reads a big-endian length of size bytes at b[i:].
func length(b []byte, i, size int) (int, error) {
	if len(b)-i < size {
		return 0, fmt.Errorf("truncated length at byte %d", i)
	}
	switch size {
	case 1:
		return int(b[i]), nil
	case 2:
		return int(binary.BigEndian.Uint16(b[i:])), nil
	default:
		return int(binary.BigEndian.Uint32(b[i:])), nil
	}
}
