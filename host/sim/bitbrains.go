package sim

import (
	"bufio"
	"io"
	"math"
	"strconv"
	"strings"
)

// Bitbrains GWA-T-12 columns the reader needs, by header name.
const (
	bbTimestamp = "Timestamp [ms]"
	bbCores     = "CPU cores"
	bbCapacity  = "CPU capacity provisioned [MHZ]"
	bbUsage     = "CPU usage [MHZ]"
)

// unixMillisFloor tells Unix seconds from Unix milliseconds: a timestamp at
// or above it (1e11 s is the year 5138) can only be milliseconds.
const unixMillisFloor = 1e11

// parseBitbrains reads one VM of the Bitbrains GWA-T-12 traces: a header
// row, then `;`-separated rows (tabs around the values) every 300 s.
//
// The header says "Timestamp [ms]" but the values are Unix seconds
// (1372629804 is July 2013; as milliseconds it would be January 1970). The
// reader goes by the value: below 1e11 it is seconds, above it
// milliseconds, so a corrected file reads the same.
//
// Demand is CPU usage in MHz ÷ the MHz of one core (provisioned capacity ÷
// cores); the VM's requested size is its core count (the largest, if it
// changes).
func parseBitbrains(name string, r io.Reader) (*Trace, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 64*1024)
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return nil, parseError(name, 1, "%v", err)
		}
		return nil, parseError(name, 1, "empty file")
	}
	col := map[string]int{}
	for i, h := range strings.Split(sc.Text(), ";") {
		col[strings.TrimSpace(h)] = i
	}
	need := [...]string{bbTimestamp, bbCores, bbCapacity, bbUsage}
	var at [len(need)]int // need[i] is column at[i]
	for i, h := range need {
		c, ok := col[h]
		if !ok {
			return nil, parseError(name, 1, "header has no %q column (not a Bitbrains GWA-T-12 file?)", h)
		}
		at[i] = c
	}
	width := 0
	for _, i := range col {
		width = max(width, i+1)
	}
	t := &Trace{Name: name}
	line := 1
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		f := strings.Split(text, ";")
		if len(f) < width {
			return nil, parseError(name, line, "want at least %d `;`-separated columns, got %d", width, len(f))
		}
		var v [len(need)]float64 // timestamp, cores, capacity, usage
		for i, h := range need {
			s := strings.TrimSpace(f[at[i]])
			x, err := strconv.ParseFloat(s, 64)
			if err != nil || math.IsNaN(x) || math.IsInf(x, 0) || x < 0 {
				return nil, parseError(name, line, "column %q: want a non-negative number, got %.40q", h, s)
			}
			v[i] = x
		}
		ts, cores, capacity, usage := v[0], v[1], v[2], v[3]
		if cores < 1 || cores > 1024 || cores != math.Trunc(cores) || capacity <= 0 {
			return nil, parseError(name, line, "want whole CPU cores in [1, 1024] and a positive capacity, got %v cores, %v MHz", cores, capacity)
		}
		ms := ts * 1000
		if ts >= unixMillisFloor {
			ms = ts
		}
		if ms > 1<<53 {
			return nil, parseError(name, line, "timestamp %v is out of range", ts)
		}
		at := int64(ms)
		if n := len(t.Time); n > 0 && at <= t.Time[n-1] {
			return nil, parseError(name, line, "timestamp %v is not after the previous row's", ts)
		}
		demand := usage / (capacity / cores)
		if math.IsInf(demand, 0) {
			return nil, parseError(name, line, "usage %v MHz on %v MHz per core is out of range", usage, capacity/cores)
		}
		t.Time = append(t.Time, at)
		t.Demand = append(t.Demand, demand)
		t.Requested = max(t.Requested, int(cores))
	}
	if err := sc.Err(); err != nil {
		return nil, parseError(name, line+1, "%v", err)
	}
	t.Interval = medianStep(t.Time)
	if len(t.Time) == 1 {
		t.Interval = PlanetLabInterval // GWA-T-12's interval; nothing better to go by
	}
	return t, t.check()
}
