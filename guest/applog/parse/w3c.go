package parse

import (
	"bytes"
	"strings"
)

// W3C extended log format (IIS, Oracle Web Cache, IIS Advanced Logging).
// The `#Fields:` directive names the columns of the lines after it and may
// come again mid-file with other columns; each Parser therefore belongs to
// one file. Columns are separated by runs of spaces or tabs; a field may be
// double-quoted with "" standing for a quote inside it. A time without a
// date column takes its date from the last `#Date:` directive. IIS writes
// UTC; time-taken is in milliseconds (the W3C draft says seconds, IIS and
// most others use ms; set the unit if yours differs).

// maxW3CFields bounds the columns of one `#Fields:` header.
const maxW3CFields = 256

type w3c struct {
	unit  float64
	names Fields
	have  bool
	// column indices, -1 when absent
	date, time, status, dur, last int
	// date of the last #Date: directive, Unix days; valid when dirDate
	dirDays int64
	dirDate bool
}

func newW3C(o Options, unit float64) (Parser, error) {
	return &w3c{unit: unit, names: o.Fields}, nil
}

func pick(name []byte, override string, defaults ...string) bool {
	if override != "" {
		return strings.EqualFold(string(name), override)
	}
	for _, d := range defaults {
		if strings.EqualFold(string(name), d) {
			return true
		}
	}
	return false
}

func (p *w3c) header(b []byte) Reason {
	p.have = false
	p.date, p.time, p.status, p.dur, p.last = -1, -1, -1, -1, -1
	n := 0
	for i := 0; ; {
		for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
			i++
		}
		j := i
		for j < len(b) && b[j] != ' ' && b[j] != '\t' {
			j++
		}
		if j == i {
			break
		}
		if n == maxW3CFields {
			return Syntax
		}
		name := b[i:j]
		switch {
		case p.date < 0 && pick(name, p.names.Date, "date", "date-local"):
			p.date = n
		case p.time < 0 && pick(name, p.names.Time, "time", "time-local"):
			p.time = n
		case p.status < 0 && pick(name, p.names.Status, "sc-status"):
			p.status = n
		case p.dur < 0 && pick(name, p.names.Duration, "time-taken", "TimeTakenMS"):
			p.dur = n
		}
		n++
		i = j
	}
	if n == 0 {
		return Syntax
	}
	p.last = max(p.date, p.time, p.status, p.dur)
	p.have = true
	return Meta
}

func (p *w3c) directive(b []byte) Reason {
	if rest, ok := bytes.CutPrefix(b, []byte("#Fields:")); ok {
		return p.header(rest)
	}
	if rest, ok := bytes.CutPrefix(b, []byte("#Date:")); ok {
		rest = trimSpace(rest)
		if len(rest) >= 10 {
			if y, mo, d, ok := isoDate(rest[:10]); ok {
				if _, ok := civil(y, mo, d, 0, 0, 0); ok {
					p.dirDays, p.dirDate = daysFromCivil(y, mo, d), true
				}
			}
		}
	}
	return Meta
}

// w3cField returns the field starting at or after b[i] and the index after it.
func w3cField(b []byte, i int) (f []byte, next int, r Reason) {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t') {
		i++
	}
	if i >= len(b) {
		return nil, i, Syntax
	}
	if b[i] == '"' {
		for j := i + 1; j < len(b); j++ {
			if b[j] == '"' {
				if j+1 < len(b) && b[j+1] == '"' {
					j++
					continue
				}
				return b[i : j+1], j + 1, OK
			}
		}
		return nil, i, Syntax
	}
	j := i
	for j < len(b) && b[j] != ' ' && b[j] != '\t' {
		j++
	}
	return b[i:j], j, OK
}

func (p *w3c) Parse(line []byte, rec *Record) Reason {
	line = trimSpace(line)
	if len(line) == 0 {
		return Meta
	}
	if line[0] == '#' {
		return p.directive(line)
	}
	if !p.have {
		return NoHeader
	}
	var date, tm, st, dur []byte
	i := 0
	for n := 0; n <= p.last; n++ {
		f, j, r := w3cField(line, i)
		if r != OK {
			return r
		}
		i = j
		switch n {
		case p.date:
			date = f
		case p.time:
			tm = f
		case p.status:
			st = f
		case p.dur:
			dur = f
		}
	}
	if tm == nil {
		return BadTime
	}
	var days int64
	switch {
	case date != nil:
		y, mo, d, ok := isoDate(date)
		if !ok {
			return BadTime
		}
		if _, ok := civil(y, mo, d, 0, 0, 0); !ok {
			return BadTime
		}
		days = daysFromCivil(y, mo, d)
	case p.dirDate:
		days = p.dirDays
	default:
		return BadTime
	}
	sec, frac, res, n, ok := isoClock(tm)
	if !ok || n != len(tm) {
		return BadTime
	}
	s := 0
	if st != nil && !(len(st) == 1 && st[0] == '-') {
		if s, ok = status(st); !ok {
			return BadStatus
		}
	}
	rec.Time, rec.TimeRes, rec.Status = (days*86400+int64(sec))*1e9+frac, res, s
	rec.Duration, rec.HasDuration = 0, false
	if dur != nil && !(len(dur) == 1 && dur[0] == '-') {
		v, ok := decimal(dur)
		if !ok {
			return BadDuration
		}
		rec.Duration, rec.HasDuration = v*p.unit, true
	}
	return OK
}
