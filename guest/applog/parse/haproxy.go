package parse

// HAProxy `option httplog`:
//
//	%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %CC %CS %tsc %ac/%fc/%bc/%sc/%rc %sq/%bq %hr %hs %{+Q}r
//
// usually behind a syslog header ("Feb 25 16:20:13 host haproxy[7]: ").
// The accept date [%tr] is when the connection was accepted, in
// milliseconds and the proxy's local time without a zone: we read it as
// UTC, which shifts every arrival alike and leaves inter-arrival times
// exact (except across a DST change). The duration is %Ta (total active
// time) or, upstream, %Tr (the server's response time); -1 in that timer
// (aborted request) leaves the record without a duration. A status of -1
// (no response) becomes 0.

type haproxy struct {
	unit     float64
	upstream bool
}

func newHAProxy(o Options, unit float64) (Parser, error) {
	return &haproxy{unit: unit, upstream: o.Upstream}, nil
}

func (p *haproxy) Parse(line []byte, rec *Record) Reason {
	if len(trimSpace(line)) == 0 {
		return Meta
	}
	r := p.parse(line, rec)
	if r == OK {
		return OK
	}
	// Not at the start: skip a syslog header up to the first ": ".
	for i := 0; i+1 < len(line); i++ {
		if line[i] == ':' && line[i+1] == ' ' {
			return p.parse(line[i+2:], rec)
		}
	}
	return r
}

func (p *haproxy) parse(b []byte, rec *Record) Reason {
	client, i := token(b, 0)
	if len(client) == 0 {
		return NotRequest
	}
	ts, i, ok := bracketed(b, i)
	if !ok {
		return NotRequest
	}
	t, res, ok := clfTime(ts)
	if !ok {
		return BadTime
	}
	if fe, j := token(b, i); len(fe) == 0 || fe[len(fe)-1] == ':' {
		return NotRequest // "fe/be: SSL handshake failure" and other errors
	} else {
		i = j
	}
	be, i := token(b, i)
	if len(be) == 0 {
		return NotRequest
	}
	timers, i := token(b, i)
	var tv [5]int64
	n := 0
	for {
		f, rest, more := cut(timers, '/')
		if n == len(tv) {
			return NotRequest
		}
		neg := false
		if len(f) > 0 && (f[0] == '-' || f[0] == '+') {
			neg = f[0] == '-'
			f = f[1:]
		}
		v, ok := integer(f)
		if !ok || (neg && v != 1) {
			return NotRequest
		}
		if neg {
			v = -1
		}
		tv[n] = v
		n++
		if !more {
			break
		}
		timers = rest
	}
	if n != 5 {
		return NotRequest // tcplog (Tw/Tc/Tt) or not a request line
	}
	st, _ := token(b, i)
	s := 0
	if !(len(st) == 2 && st[0] == '-' && st[1] == '1') {
		if s, ok = status(st); !ok {
			return BadStatus
		}
	}
	d := tv[4]
	if p.upstream {
		d = tv[3]
	}
	rec.Time, rec.TimeRes, rec.Status = t, res, s
	rec.Duration, rec.HasDuration = float64(max(d, 0))*p.unit, d >= 0
	return OK
}
