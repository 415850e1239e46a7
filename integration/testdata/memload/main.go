// Command memload is the phased memory workload of the memory-elasticity
// tests: it holds a resident set that moves through phases, touching every
// page of it continuously, and prints each second how many pages it
// touched — its throughput, which memory pressure slows down.
//
//	memload -phases 300M/0/20,1200M/30/30,500M/0/60
//
// Each phase is SIZE/RAMP/HOLD: go to SIZE (MiB suffix M, GiB G) over RAMP
// seconds (0: at once; shrinking is always at once), then hold it for HOLD
// seconds. After the last phase memload prints "DONE" and exits. Output
// lines are "T <seconds> TARGET <MiB> RESIDENT <MiB> TOUCHED <pages>".
//
// Test support only (under testdata, so `go build ./...` skips it).
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
)

const (
	chunk = 1 << 20
	page  = 4096
)

type phase struct {
	size       int // MiB
	ramp, hold time.Duration
}

func parse(spec string) ([]phase, error) {
	var out []phase
	for _, p := range strings.Split(spec, ",") {
		f := strings.Split(p, "/")
		if len(f) != 3 {
			return nil, fmt.Errorf("phase %q: want SIZE/RAMP/HOLD", p)
		}
		mult := 1
		s := f[0]
		switch {
		case strings.HasSuffix(s, "G"):
			mult, s = 1024, strings.TrimSuffix(s, "G")
		case strings.HasSuffix(s, "M"):
			s = strings.TrimSuffix(s, "M")
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("phase %q: size %q", p, f[0])
		}
		ramp, err1 := strconv.Atoi(f[1])
		hold, err2 := strconv.Atoi(f[2])
		if err1 != nil || err2 != nil || ramp < 0 || hold < 0 {
			return nil, fmt.Errorf("phase %q: ramp and hold are whole seconds", p)
		}
		out = append(out, phase{n * mult, time.Duration(ramp) * time.Second, time.Duration(hold) * time.Second})
	}
	return out, nil
}

func main() {
	spec := flag.String("phases", "300M/0/10", "SIZE/RAMP/HOLD,...")
	flag.Parse()
	phases, err := parse(*spec)
	if err != nil {
		fmt.Fprintln(os.Stderr, "memload:", err)
		os.Exit(2)
	}
	debug.SetGCPercent(-1) // the chunks are the heap; no collector runs
	var chunks [][]byte
	start := time.Now()
	touched, cursor := 0, 0
	next := start.Add(time.Second)
	target := 0
	resize := func(want int) {
		for len(chunks) < want {
			chunks = append(chunks, make([]byte, chunk))
		}
		if len(chunks) > want {
			for i := want; i < len(chunks); i++ {
				chunks[i] = nil
			}
			chunks = chunks[:want]
			debug.FreeOSMemory()
		}
	}
	for _, ph := range phases {
		from := len(chunks)
		phStart := time.Now()
		end := phStart.Add(ph.ramp + ph.hold)
		for time.Now().Before(end) {
			// Where the resident set should be now.
			target = ph.size
			if el := time.Since(phStart); ph.size > from && el < ph.ramp {
				target = from + int(float64(ph.size-from)*el.Seconds()/ph.ramp.Seconds())
			}
			resize(target)
			// One pass over a slice of the pages, so the loop comes back
			// to the clock often.
			for i := 0; i < 64 && len(chunks) > 0; i++ {
				cursor = (cursor + 1) % len(chunks)
				c := chunks[cursor]
				for off := 0; off < chunk; off += page {
					c[off]++
				}
				touched += chunk / page
			}
			if now := time.Now(); !now.Before(next) {
				fmt.Printf("T %d TARGET %d RESIDENT %d TOUCHED %d\n", int(now.Sub(start).Seconds()), target, len(chunks), touched)
				touched = 0
				next = next.Add(time.Second)
			}
			if len(chunks) == 0 {
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	fmt.Println("DONE")
}
