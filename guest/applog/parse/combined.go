package parse

// The NCSA family: Common Log Format and its extensions.
//
//	clf       %h %l %u %t "%r" %>s %b
//	combined  clf "%{Referer}i" "%{User-agent}i"
//	apache    combined %D                      (µs; LogFormat "... %D")
//	nginx     combined $request_time [$upstream_response_time]
//	ingress   combined $request_length $request_time [$proxy_upstream_name]
//	          [$proxy_alternative_upstream_name] $upstream_addr
//	          $upstream_response_length $upstream_response_time $upstream_status $req_id
//
// Apache's %t and nginx's $time_local are whole seconds. Apache stamps the
// arrival of a request; nginx stamps the end. We take both as the arrival:
// with whole-second stamps, moving each request back by its duration would
// scatter requests of one second over two bins (0.000 s and 0.001 s
// durations) and add variance that is not in the arrivals.
//
// For sub-second arrival times the bracketed time may instead be Unix
// seconds with a fraction (nginx [$msec], Apache
// [%{sec}t.%{msec_frac}t]) or ISO 8601 with a fraction (nginx
// [$time_iso8601] has whole seconds). nginx's $msec is when the request
// ended: with such a stamp and the request's own duration ($request_time)
// the arrival is moved back by the duration.

// maxDuration bounds the duration an arrival is moved back by (a day).
const maxDuration = 86400

type ncsaKind uint8

const (
	kindCLF ncsaKind = iota
	kindCombined
	kindApache
	kindNginx
	kindIngress
)

type ncsa struct {
	kind     ncsaKind
	unit     float64
	upstream bool
}

func newCLF(o Options, unit float64) (Parser, error) { return &ncsa{kind: kindCLF}, nil }
func newCombined(o Options, unit float64) (Parser, error) {
	return &ncsa{kind: kindCombined}, nil
}
func newApache(o Options, unit float64) (Parser, error) {
	return &ncsa{kind: kindApache, unit: unit}, nil
}
func newNginx(o Options, unit float64) (Parser, error) {
	return &ncsa{kind: kindNginx, unit: unit, upstream: o.Upstream}, nil
}
func newIngress(o Options, unit float64) (Parser, error) {
	return &ncsa{kind: kindIngress, unit: unit, upstream: o.Upstream}, nil
}

// clfPrefix parses `host ident user [time] "request" status bytes` and
// returns the index after bytes.
func clfPrefix(b []byte, rec *Record) (int, Reason) {
	host, i := token(b, 0)
	if len(host) == 0 {
		return 0, Syntax
	}
	ident, i := token(b, i)
	if len(ident) == 0 {
		return 0, Syntax
	}
	// The user may hold spaces in broken logs; the time starts at the next '['.
	for i < len(b) && b[i] != '[' {
		i++
	}
	ts, i, ok := bracketed(b, i)
	if !ok {
		return 0, Syntax
	}
	t, res, ok := clfTime(ts)
	if !ok {
		t, res, ok = unixTime(ts, "unix")
	}
	if !ok {
		t, res, ok = rfc3339(ts)
	}
	if !ok {
		return 0, BadTime
	}
	j := quoted(b, i)
	if j < 0 {
		return 0, Syntax
	}
	st, i := token(b, j)
	s, ok := status(st)
	if !ok {
		return 0, BadStatus
	}
	size, i := token(b, i)
	if len(size) == 0 {
		return 0, Syntax
	}
	rec.Time, rec.TimeRes, rec.Status = t, res, s
	rec.Duration, rec.HasDuration = 0, false
	return i, OK
}

func (p *ncsa) Parse(line []byte, rec *Record) Reason {
	if len(trimSpace(line)) == 0 {
		return Meta
	}
	i, r := clfPrefix(line, rec)
	if r != OK || p.kind == kindCLF {
		return r
	}
	// Referer and user agent.
	if i = quoted(line, i); i < 0 {
		return Syntax
	}
	if i = quoted(line, i); i < 0 {
		return Syntax
	}
	switch p.kind {
	case kindApache:
		d, _ := token(line, i)
		v, ok := decimal(d)
		if !ok {
			return BadDuration
		}
		rec.Duration, rec.HasDuration = v*p.unit, true
	case kindNginx:
		d, j := token(line, i)
		v, ok := decimal(d)
		if !ok {
			return BadDuration
		}
		if !p.upstream {
			rec.Duration, rec.HasDuration = v*p.unit, true
			if rec.TimeRes < 1e9 { // [$msec]: the end of the request
				rec.Time -= int64(min(max(rec.Duration, 0), maxDuration) * 1e9)
			}
			return OK
		}
		up, any, ok := timeSum(trimSpace(line[j:]))
		if !ok {
			return BadDuration
		}
		rec.Duration, rec.HasDuration = up*p.unit, any
	case kindIngress:
		if _, i = token(line, i); i >= len(line) { // $request_length
			return Syntax
		}
		d, j := token(line, i)
		v, ok := decimal(d)
		if !ok {
			return BadDuration
		}
		if !p.upstream {
			rec.Duration, rec.HasDuration = v*p.unit, true
			return OK
		}
		for k := 0; k < 2; k++ { // [$proxy_upstream_name] [$proxy_alternative_upstream_name]
			if _, j, ok = bracketed(line, j); !ok {
				return Syntax
			}
		}
		j = skipList(line, j) // $upstream_addr
		j = skipList(line, j) // $upstream_response_length
		k := skipList(line, j)
		up, any, ok := timeSum(trimSpace(line[j:k]))
		if !ok || k == j {
			return BadDuration
		}
		rec.Duration, rec.HasDuration = up*p.unit, any
	}
	return OK
}

// skipList skips one ingress-nginx list value ("a, b, c" or a single token)
// and returns the index after it.
func skipList(b []byte, i int) int {
	for {
		tok, j := token(b, i)
		i = j
		if len(tok) == 0 || tok[len(tok)-1] != ',' {
			return i
		}
	}
}
