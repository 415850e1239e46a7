package parse

import (
	"fmt"
	"regexp"
)

// regexParser is the one format that uses package regexp: a user's own
// expression with named groups time (required), status and duration. It
// allocates per line (regexp has no allocation-free submatch API) and is
// several times slower than the built-in scanners; prefer a built-in format.
type regexParser struct {
	re                *regexp.Regexp
	unit              float64
	tf                timeFormat
	time, status, dur int // submatch indices, -1 when absent
	idx               []int
}

func newRegex(o Options, unit float64) (Parser, error) {
	if o.Regex == "" {
		return nil, fmt.Errorf("%w: the regex format needs a regular expression", ErrFormat)
	}
	re, err := regexp.Compile(o.Regex)
	if err != nil {
		return nil, fmt.Errorf("%w: regular expression: %v", ErrFormat, err)
	}
	tf, err := newTimeFormat(o.TimeFormat)
	if err != nil {
		return nil, err
	}
	p := &regexParser{re: re, unit: unit, tf: tf,
		time: re.SubexpIndex("time"), status: re.SubexpIndex("status"), dur: re.SubexpIndex("duration")}
	if p.time < 0 {
		return nil, fmt.Errorf("%w: regular expression has no (?P<time>…) group", ErrFormat)
	}
	return p, nil
}

func (p *regexParser) group(line []byte, m []int, g int) []byte {
	if g < 0 || 2*g+1 >= len(m) || m[2*g] < 0 {
		return nil
	}
	return line[m[2*g]:m[2*g+1]]
}

func (p *regexParser) Parse(line []byte, rec *Record) Reason {
	if len(trimSpace(line)) == 0 {
		return Meta
	}
	m := p.re.FindSubmatchIndex(line)
	if m == nil {
		return NoMatch
	}
	tv := p.group(line, m, p.time)
	t, res, ok := p.tf.parse(tv)
	if !ok {
		return BadTime
	}
	s := 0
	if sv := p.group(line, m, p.status); len(sv) > 0 && !(len(sv) == 1 && sv[0] == '-') {
		if s, ok = status(sv); !ok {
			return BadStatus
		}
	}
	rec.Time, rec.TimeRes, rec.Status = t, res, s
	rec.Duration, rec.HasDuration = 0, false
	if dv := p.group(line, m, p.dur); len(dv) > 0 && !(len(dv) == 1 && dv[0] == '-') {
		v, ok := decimal(dv)
		if !ok {
			return BadDuration
		}
		rec.Duration, rec.HasDuration = v*p.unit, true
	}
	return OK
}
