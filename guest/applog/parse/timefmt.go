package parse

import (
	"fmt"
	"time"
)

// timeFormat parses the time field of json and regex lines.
type timeFormat struct {
	kind   string // rfc3339, clf, unix, unix_ms, unix_us, unix_ns, layout
	layout string
}

// TimeFormats are the named time formats; anything else is a Go layout.
var TimeFormats = []string{"rfc3339", "clf", "unix", "unix_ms", "unix_us", "unix_ns"}

func newTimeFormat(s string) (timeFormat, error) {
	switch s {
	case "", "rfc3339", "iso8601":
		return timeFormat{kind: "rfc3339"}, nil
	case "clf", "unix", "unix_ms", "unix_us", "unix_ns":
		return timeFormat{kind: s}, nil
	}
	// A Go layout must at least round-trip its own reference time.
	ref := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	if _, err := time.Parse(s, ref.Format(s)); err != nil || ref.Format(s) == s {
		return timeFormat{}, fmt.Errorf("%w: time format %q is neither one of %v nor a Go time layout", ErrFormat, s, TimeFormats)
	}
	return timeFormat{kind: "layout", layout: s}, nil
}

func (f timeFormat) parse(b []byte) (nanos, res int64, ok bool) {
	if len(b) >= 2 && b[0] == '[' && b[len(b)-1] == ']' {
		b = b[1 : len(b)-1]
	}
	switch f.kind {
	case "rfc3339":
		return rfc3339(b)
	case "clf":
		return clfTime(b)
	case "unix", "unix_ms", "unix_us", "unix_ns":
		return unixTime(b, f.kind)
	}
	t, err := time.Parse(f.layout, string(b))
	if err != nil || t.Year() < 1970 || t.Year() > 2200 {
		return 0, 0, false
	}
	res = 1e9
	if t.Nanosecond() != 0 {
		res = 1
	}
	return t.UnixNano(), res, true
}

// unixTime parses "1700000000", "1700000000.123" in the unit of kind.
func unixTime(b []byte, kind string) (nanos, res int64, ok bool) {
	whole, rest, _ := cut(b, '.')
	w, ok := integer(whole)
	if !ok {
		return 0, 0, false
	}
	var scale int64 = 1e9
	switch kind {
	case "unix_ms":
		scale = 1e6
	case "unix_us":
		scale = 1e3
	case "unix_ns":
		scale = 1
	}
	if w > maxUnixSeconds*(1e9/scale) {
		return 0, 0, false
	}
	nanos, res = w*scale, scale
	if len(rest) > 0 {
		fr, fres, n := fraction(b[len(whole):])
		if n != len(rest)+1 {
			return 0, 0, false
		}
		// fr is in units of 1e-9 of one "scale"
		nanos += fr * scale / 1e9
		res = max(fres*scale/1e9, 1)
	} else if len(b) != len(whole) {
		return 0, 0, false
	}
	return nanos, res, true
}
