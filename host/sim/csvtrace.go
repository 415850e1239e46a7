package sim

import (
	"bufio"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// parseCSV reads the plain format `timestamp,demand_cpus`, one sample per
// line, for traces from anywhere else. The timestamp is Unix seconds
// (fractions allowed; values of 1e11 and more are taken as milliseconds) or
// RFC 3339; demand is in CPUs. A first line that does not parse is taken as
// a header; `#` starts a comment line. The interval is the median step.
func parseCSV(name string, r io.Reader, requested int) (*Trace, error) {
	t := &Trace{Name: name, Requested: requested}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 4096)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || text[0] == '#' {
			continue
		}
		ts, demand, ok := strings.Cut(text, ",")
		at, errT := parseTimestamp(strings.TrimSpace(ts))
		d, errD := strconv.ParseFloat(strings.TrimSpace(demand), 64)
		if len(t.Time) == 0 && line == 1 && (errT != nil || errD != nil) {
			continue // header
		}
		switch {
		case !ok || strings.Contains(demand, ","):
			return nil, parseError(name, line, "want `timestamp,demand_cpus`, got %.60q", text)
		case errT != nil:
			return nil, parseError(name, line, "timestamp: %v", errT)
		case errD != nil || math.IsNaN(d) || math.IsInf(d, 0) || d < 0:
			return nil, parseError(name, line, "demand_cpus: want a non-negative number, got %.40q", strings.TrimSpace(demand))
		}
		if n := len(t.Time); n > 0 && at <= t.Time[n-1] {
			return nil, parseError(name, line, "timestamp %s is not after the previous line's", strings.TrimSpace(ts))
		}
		t.Time = append(t.Time, at)
		t.Demand = append(t.Demand, d)
	}
	if err := sc.Err(); err != nil {
		return nil, parseError(name, line+1, "%v", err)
	}
	t.Interval = medianStep(t.Time)
	if len(t.Time) == 1 {
		return nil, parseError(name, line, "one sample: the interval cannot be known")
	}
	return t, t.check()
}

// parseTimestamp returns Unix milliseconds.
func parseTimestamp(s string) (int64, error) {
	if v, err := strconv.ParseFloat(s, 64); err == nil {
		ms := v * 1000
		if v >= unixMillisFloor {
			ms = v
		}
		if math.IsNaN(v) || v < 0 || ms > 1<<53 {
			return 0, strconv.ErrRange
		}
		return int64(math.Round(ms)), nil
	}
	at, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, errNotTimestamp(s)
	}
	return at.UnixMilli(), nil
}

type errNotTimestamp string

func (e errNotTimestamp) Error() string {
	return "want Unix seconds or an RFC 3339 time, got " + strconv.Quote(truncate(string(e), 40))
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
