package parse

// Byte-level helpers shared by the formats. None allocates; all treat any
// input as possible and report failure with ok=false.

import "math"

var pow10 = [...]float64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18}

// maxDecimal bounds durations: a request longer than ten years in any unit is
// not a request. It keeps every later sum and square finite.
const maxDecimal = 1e12

// decimal parses an unsigned decimal such as "0.004", "12" or "+130" (HAProxy
// logasap). No exponent, at most 18 significant digits.
func decimal(b []byte) (float64, bool) {
	if len(b) > 0 && b[0] == '+' {
		b = b[1:]
	}
	if len(b) == 0 {
		return 0, false
	}
	var m uint64
	digits, frac := 0, -1
	for i, c := range b {
		switch {
		case c >= '0' && c <= '9':
			if digits < 18 {
				m = m*10 + uint64(c-'0')
				digits++
				if frac >= 0 {
					frac++
				}
			} else if frac < 0 {
				return 0, false // too large
			}
		case c == '.' && frac < 0 && i+1 < len(b):
			frac = 0
		default:
			return 0, false
		}
	}
	if digits == 0 {
		return 0, false
	}
	v := float64(m)
	if frac > 0 {
		v /= pow10[frac]
	}
	if v > maxDecimal {
		return 0, false
	}
	return v, true
}

// integer parses an unsigned decimal integer of at most 18 digits.
func integer(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// status parses an HTTP status: 1 to 3 digits.
func status(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 3 {
		return 0, false
	}
	n, ok := integer(b)
	return int(n), ok
}

// digits2/digits4 read fixed-width numbers.
func digitsN(b []byte) (int, bool) {
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, len(b) > 0
}

var monthNames = [12]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}

func month(b []byte) (int, bool) {
	if len(b) != 3 {
		return 0, false
	}
	for i, m := range monthNames {
		if b[0]|0x20 == m[0]|0x20 && b[1]|0x20 == m[1] && b[2]|0x20 == m[2] {
			return i + 1, true
		}
	}
	return 0, false
}

// daysFromCivil is days since 1970-01-01 of a proleptic Gregorian date
// (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms").
func daysFromCivil(y, m, d int) int64 {
	if m <= 2 {
		y--
	}
	era := y / 400
	if y < 0 && y%400 != 0 {
		era--
	}
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return int64(era)*146097 + int64(doe) - 719468
}

var monthDays = [13]int{0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}

// civil checks a date and time and returns Unix seconds.
func civil(y, mo, d, h, mi, s int) (int64, bool) {
	if y < 1970 || y > 2200 || mo < 1 || mo > 12 || d < 1 || d > monthDays[mo] ||
		h > 23 || mi > 59 || s > 60 {
		return 0, false
	}
	if mo == 2 && d == 29 && !(y%4 == 0 && (y%100 != 0 || y%400 == 0)) {
		return 0, false
	}
	return daysFromCivil(y, mo, d)*86400 + int64(h*3600+mi*60+s), true
}

// fraction parses ".123" at the start of b: nanoseconds, resolution, bytes used.
func fraction(b []byte) (nanos, res int64, n int) {
	res = 1e9
	if len(b) < 2 || b[0] != '.' {
		return 0, res, 0
	}
	i := 1
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		if i <= 9 {
			nanos = nanos*10 + int64(b[i]-'0')
			res /= 10
		}
	}
	if i == 1 {
		return 0, 1e9, 0
	}
	return nanos * res, res, i
}

// zone parses "+hhmm", "-hh:mm" or "Z" and returns its offset in seconds.
func zone(b []byte) (int64, bool) {
	if len(b) == 1 && (b[0] == 'Z' || b[0] == 'z') {
		return 0, true
	}
	if len(b) == 6 && b[3] == ':' {
		b = []byte{b[0], b[1], b[2], b[4], b[5]} // small, stays on the stack
	}
	if len(b) != 5 || (b[0] != '+' && b[0] != '-') {
		return 0, false
	}
	h, ok1 := digitsN(b[1:3])
	m, ok2 := digitsN(b[3:5])
	if !ok1 || !ok2 || h > 23 || m > 59 {
		return 0, false
	}
	off := int64(h*3600 + m*60)
	if b[0] == '-' {
		off = -off
	}
	return off, true
}

// clfTime parses "10/Oct/2000:13:55:36 -0700" (the zone optional, a
// ".123" fraction allowed after the seconds as HAProxy writes it).
func clfTime(b []byte) (nanos, res int64, ok bool) {
	if len(b) < 20 || b[2] != '/' || b[6] != '/' || b[11] != ':' || b[14] != ':' || b[17] != ':' {
		return 0, 0, false
	}
	d, ok1 := digitsN(b[0:2])
	mo, ok2 := month(b[3:6])
	y, ok3 := digitsN(b[7:11])
	h, ok4 := digitsN(b[12:14])
	mi, ok5 := digitsN(b[15:17])
	s, ok6 := digitsN(b[18:20])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) {
		return 0, 0, false
	}
	sec, ok := civil(y, mo, d, h, mi, s)
	if !ok {
		return 0, 0, false
	}
	frac, res, n := fraction(b[20:])
	rest := b[20+n:]
	if len(rest) > 0 {
		if rest[0] != ' ' {
			return 0, 0, false
		}
		off, ok := zone(rest[1:])
		if !ok {
			return 0, 0, false
		}
		sec -= off
	}
	return sec*1e9 + frac, res, true
}

// isoDate parses "2015-01-13".
func isoDate(b []byte) (y, mo, d int, ok bool) {
	if len(b) != 10 || b[4] != '-' || b[7] != '-' {
		return 0, 0, 0, false
	}
	y, ok1 := digitsN(b[0:4])
	mo, ok2 := digitsN(b[5:7])
	d, ok3 := digitsN(b[8:10])
	return y, mo, d, ok1 && ok2 && ok3
}

// isoClock parses "00:32:17" with an optional fraction; returns seconds of
// the day, nanoseconds, resolution and the bytes used.
func isoClock(b []byte) (sec int, nanos, res int64, n int, ok bool) {
	if len(b) < 8 || b[2] != ':' || b[5] != ':' {
		return 0, 0, 0, 0, false
	}
	h, ok1 := digitsN(b[0:2])
	mi, ok2 := digitsN(b[3:5])
	s, ok3 := digitsN(b[6:8])
	if !(ok1 && ok2 && ok3) || h > 23 || mi > 59 || s > 60 {
		return 0, 0, 0, 0, false
	}
	nanos, res, fn := fraction(b[8:])
	return h*3600 + mi*60 + s, nanos, res, 8 + fn, true
}

// rfc3339 parses "2006-01-02T15:04:05[.999999999](Z|±07:00|±0700)"; a space
// may stand for the T and the zone may be missing (UTC).
func rfc3339(b []byte) (nanos, res int64, ok bool) {
	if len(b) < 19 || (b[10] != 'T' && b[10] != 't' && b[10] != ' ') {
		return 0, 0, false
	}
	y, mo, d, ok := isoDate(b[:10])
	if !ok {
		return 0, 0, false
	}
	s, frac, res, n, ok := isoClock(b[11:])
	if !ok {
		return 0, 0, false
	}
	sec, ok := civil(y, mo, d, 0, 0, 0)
	if !ok {
		return 0, 0, false
	}
	sec += int64(s)
	if rest := b[11+n:]; len(rest) > 0 {
		off, ok := zone(rest)
		if !ok {
			return 0, 0, false
		}
		sec -= off
	}
	return sec*1e9 + frac, res, true
}

// field returns the next space-separated token of b starting at i and the
// index after it (skipping one run of spaces).
func token(b []byte, i int) (tok []byte, next int) {
	for i < len(b) && b[i] == ' ' {
		i++
	}
	j := i
	for j < len(b) && b[j] != ' ' {
		j++
	}
	return b[i:j], j
}

// quoted reads a double-quoted field starting at b[i] == '"', honouring
// backslash escapes (Apache writes \", nginx \x22). It returns the index
// after the closing quote, or -1.
func quoted(b []byte, i int) int {
	for i < len(b) && b[i] == ' ' {
		i++
	}
	if i >= len(b) || b[i] != '"' {
		return -1
	}
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return -1
}

// bracketed reads "[...]" starting at b[i] (after spaces) and returns its
// contents and the index after ']'.
func bracketed(b []byte, i int) (in []byte, next int, ok bool) {
	for i < len(b) && b[i] == ' ' {
		i++
	}
	if i >= len(b) || b[i] != '[' {
		return nil, 0, false
	}
	for j := i + 1; j < len(b); j++ {
		if b[j] == ']' {
			return b[i+1 : j], j + 1, true
		}
	}
	return nil, 0, false
}

// timeSum sums an nginx upstream time list: "0.100, 0.004", "0.1 : 0.2", "-".
// It reports whether any value was present, and fails on anything that is
// neither a number nor a separator.
func timeSum(b []byte) (sum float64, any, ok bool) {
	i := 0
	for i < len(b) {
		for i < len(b) && (b[i] == ' ' || b[i] == ',' || b[i] == ':') {
			i++
		}
		j := i
		for j < len(b) && b[j] != ' ' && b[j] != ',' && b[j] != ':' {
			j++
		}
		if j == i {
			break
		}
		tok := b[i:j]
		if !(len(tok) == 1 && tok[0] == '-') {
			v, ok := decimal(tok)
			if !ok {
				return 0, false, false
			}
			sum += v
			any = true
		}
		i = j
	}
	return sum, any, !math.IsInf(sum, 0)
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\r') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// cut splits b at the first sep.
func cut(b []byte, sep byte) (before, after []byte, found bool) {
	for i, c := range b {
		if c == sep {
			return b[:i], b[i+1:], true
		}
	}
	return b, nil, false
}

// maxUnixSeconds keeps Unix nanoseconds inside int64 (years up to 2242).
const maxUnixSeconds = 1 << 33
