// Command httpsvc is test support for the gray-box end-to-end test: inside
// the guest it serves HTTP requests that each burn a fixed amount of CPU
// time and logs them in nginx's combined format with $request_time, and it
// generates paced load against itself. Under testdata, so `go build ./...`
// skips it.
//
//	httpsvc serve -addr 127.0.0.1:8080 -cost 10ms -log /var/log/app/access.log
//	httpsvc load  -url http://127.0.0.1:8080/ -rate 150 -for 60s
//	httpsvc play  -step 8s -demand 0.1,2.1,0,1.1   (CPUs of work per step: replays a trace)
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: httpsvc serve|load [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "load":
		err = load(os.Args[2:])
	case "play":
		err = play(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "httpsvc:", err)
		os.Exit(1)
	}
}

// burn spins until the calling thread has used d of CPU time: a request
// costs the same CPU whatever else runs, and waits longer when the vCPUs
// are contended, like real work.
func burn(d time.Duration) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	end := ts.Nano() + d.Nanoseconds()
	x := 1.0
	for {
		for i := 0; i < 2000; i++ {
			x = x*1.0000001 + 1e-9
		}
		unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
		if ts.Nano() >= end {
			break
		}
	}
	_ = x
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8080", "listen address")
	cost := fs.Duration("cost", 10*time.Millisecond, "CPU time per request")
	logPath := fs.String("log", "/var/log/app/access.log", "access log (nginx combined + $request_time)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	f, err := os.OpenFile(*logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	return http.ListenAndServe(*addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		burn(*cost)
		io.WriteString(w, "ok\n")
		took := time.Since(start)
		// log_format main '$remote_addr - $remote_user [$time_local] "$request" $status
		//   $body_bytes_sent "$http_referer" "$http_user_agent" $request_time';
		line := fmt.Sprintf("127.0.0.1 - - [%s] \"%s %s %s\" 200 3 \"-\" \"httpsvc-load\" %.3f\n",
			time.Now().Format("02/Jan/2006:15:04:05 -0700"), r.Method, r.URL.Path, r.Proto, took.Seconds())
		mu.Lock()
		f.WriteString(line)
		mu.Unlock()
	}))
}

// load sends requests at a fixed rate (open loop: a slow server does not
// slow the arrivals, as with real users).
func load(args []string) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	url := fs.String("url", "http://127.0.0.1:8080/", "target")
	rate := fs.Float64("rate", 100, "requests per second")
	dur := fs.Duration("for", time.Minute, "how long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *dur)
	defer cancel()
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 512}}
	tick := time.NewTicker(time.Duration(float64(time.Second) / *rate))
	defer tick.Stop()
	var wg sync.WaitGroup
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return nil
		case <-tick.C:
			wg.Add(1)
			go func() {
				defer wg.Done()
				if resp, err := client.Get(*url); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}()
		}
	}
}

// play replays a CPU demand trace: for each step, demand d CPUs' worth of
// work is done by four threads, thread i busy min(1, max(0, d−i)) of each
// 100 ms period. On fewer vCPUs than threads the rest waits in the run
// queue, as real work would.
func play(args []string) error {
	fs := flag.NewFlagSet("play", flag.ContinueOnError)
	step := fs.Duration("step", 8*time.Second, "duration of each trace step")
	list := fs.String("demand", "", "comma-separated CPUs of demand per step")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var demand []float64
	for _, f := range strings.Split(*list, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || v < 0 || v > 4 {
			return fmt.Errorf("demand %q: want CPUs in [0, 4]", f)
		}
		demand = append(demand, v)
	}
	start := time.Now()
	end := start.Add(time.Duration(len(demand)) * *step)
	current := func() float64 {
		i := int(time.Since(start) / *step)
		if i >= len(demand) {
			return 0
		}
		return demand[i]
	}
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			const period = 100 * time.Millisecond
			for time.Now().Before(end) {
				duty := min(1, max(0, current()-float64(w)))
				if duty > 0 {
					burn(time.Duration(duty * float64(period)))
				}
				if rest := time.Duration((1 - duty) * float64(period)); rest > 0 {
					time.Sleep(rest)
				}
			}
		}()
	}
	wg.Wait()
	return nil
}
