package sim

import (
	"bufio"
	"bytes"
	"io"
	"math"
	"strconv"
	"time"
)

// PlanetLabInterval is the CoMon sampling interval of the PlanetLab traces.
const PlanetLabInterval = 300 * time.Second

// parsePlanetLab reads one PlanetLab CoMon file (the CloudSim workload
// folders): one CPU utilisation in percent, 0–100, per line, every 300 s.
// Demand is utilisation × requested vCPUs: the traces are from PlanetLab
// nodes, and which size a user would ask for is the caller's assumption.
// start is the time of the first sample (the folder's date).
func parsePlanetLab(name string, r io.Reader, requested int, start time.Time) (*Trace, error) {
	t := &Trace{Name: name, Requested: requested, Interval: PlanetLabInterval}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 4096)
	line, blank := 0, 0
	for sc.Scan() {
		line++
		f := bytes.TrimSpace(sc.Bytes())
		if len(f) == 0 {
			blank = line // only trailing blank lines are allowed
			continue
		}
		if blank != 0 {
			return nil, parseError(name, blank, "blank line inside the trace")
		}
		v, err := strconv.ParseFloat(string(f), 64)
		if err != nil || math.IsNaN(v) || v < 0 || v > 100 {
			return nil, parseError(name, line, "want a CPU utilisation in percent, 0–100, got %.40q", f)
		}
		t.Time = append(t.Time, start.Add(time.Duration(len(t.Demand))*PlanetLabInterval).UnixMilli())
		// Multiplying first rounds once: for whole percentages v×requested
		// is exact, so demand is the double nearest to the true value and
		// whole CPUs stay whole.
		t.Demand = append(t.Demand, v*float64(requested)/100)
	}
	if err := sc.Err(); err != nil {
		return nil, parseError(name, line+1, "%v", err)
	}
	return t, t.check()
}
