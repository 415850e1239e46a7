package parse

// JSON lines: one object per line, top-level keys only (nested objects are
// skipped, not searched). The time may be a string (TimeFormat, rfc3339 by
// default) or a number (Unix seconds unless TimeFormat says unix_ms…); the
// status and the duration may be numbers or numeric strings; null means
// absent. Keys are compared as written: an escaped key never matches.
// Nesting is tracked with a counter, not recursion.

type jsonLines struct {
	unit              float64
	time, status, dur []byte
	tf                timeFormat
}

func newJSON(o Options, unit float64) (Parser, error) {
	tf, err := newTimeFormat(o.TimeFormat)
	if err != nil {
		return nil, err
	}
	p := &jsonLines{unit: unit, tf: tf, time: []byte("time"), status: []byte("status"), dur: []byte("duration")}
	if o.Fields.Time != "" {
		p.time = []byte(o.Fields.Time)
	}
	if o.Fields.Status != "" {
		p.status = []byte(o.Fields.Status)
	}
	if o.Fields.Duration != "" {
		p.dur = []byte(o.Fields.Duration)
	}
	return p, nil
}

func jsonWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
		i++
	}
	return i
}

// jsonString returns the raw contents of the string at b[i] == '"' and the
// index after it, or next = -1.
func jsonString(b []byte, i int) (s []byte, next int, escaped bool) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
			escaped = true
		case '"':
			return b[i+1 : j], j + 1, escaped
		}
	}
	return nil, -1, false
}

// jsonValue returns the value at b[i] (a scalar's raw bytes, a string's
// contents) and the index after it; composite values are skipped and
// returned as nil.
func jsonValue(b []byte, i int) (v []byte, str bool, next int) {
	if i >= len(b) {
		return nil, false, -1
	}
	switch b[i] {
	case '"':
		s, j, esc := jsonString(b, i)
		if esc {
			return nil, true, j // escaped strings are never one of our values
		}
		return s, true, j
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return nil, false, j + 1
				}
			case '"':
				_, k, _ := jsonString(b, j)
				if k < 0 {
					return nil, false, -1
				}
				j = k - 1
			}
		}
		return nil, false, -1
	}
	j := i
	for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ' ' && b[j] != '\t' && b[j] != ']' {
		j++
	}
	if j == i {
		return nil, false, -1
	}
	return b[i:j], false, j
}

func eq(a, b []byte) bool { return string(a) == string(b) }

func (p *jsonLines) Parse(line []byte, rec *Record) Reason {
	i := jsonWS(line, 0)
	if i == len(line) {
		return Meta
	}
	if line[i] != '{' {
		return BadJSON
	}
	var tv, sv, dv []byte
	var tstr bool
	i = jsonWS(line, i+1)
	if i < len(line) && line[i] == '}' {
		i++
	} else {
		for {
			if i >= len(line) || line[i] != '"' {
				return BadJSON
			}
			key, j, _ := jsonString(line, i)
			if j < 0 {
				return BadJSON
			}
			j = jsonWS(line, j)
			if j >= len(line) || line[j] != ':' {
				return BadJSON
			}
			v, str, k := jsonValue(line, jsonWS(line, j+1))
			if k < 0 {
				return BadJSON
			}
			if v != nil && !(!str && eq(v, []byte("null"))) {
				switch {
				case eq(key, p.time):
					tv, tstr = v, str
				case eq(key, p.status):
					sv = v
				case eq(key, p.dur):
					dv = v
				}
			}
			i = jsonWS(line, k)
			if i < len(line) && line[i] == ',' {
				i = jsonWS(line, i+1)
				continue
			}
			if i < len(line) && line[i] == '}' {
				i++
				break
			}
			return BadJSON
		}
	}
	if jsonWS(line, i) != len(line) {
		return BadJSON
	}
	if tv == nil {
		return BadTime
	}
	var t, res int64
	var ok bool
	if !tstr && (p.tf.kind == "rfc3339" || p.tf.kind == "clf" || p.tf.kind == "layout") {
		t, res, ok = unixTime(tv, "unix") // a number where a date string was expected
	} else {
		t, res, ok = p.tf.parse(tv)
	}
	if !ok {
		return BadTime
	}
	s := 0
	if sv != nil {
		if s, ok = status(sv); !ok {
			return BadStatus
		}
	}
	rec.Time, rec.TimeRes, rec.Status = t, res, s
	rec.Duration, rec.HasDuration = 0, false
	if dv != nil {
		v, ok := decimal(dv)
		if !ok {
			return BadDuration
		}
		rec.Duration, rec.HasDuration = v*p.unit, true
	}
	return OK
}
