// Command runqcheck runs inside a test guest and drives guest/runq the way
// the agent does, for integration/runq_test.go:
//
//	runqcheck watch [-interval 1s] [-mode auto] [-uid N]
//	    opens a runq.Source (after dropping to uid N, if given), prints
//	    "CHOICE <source> <why>" and then one JSON line per interval with
//	    what Fill put into the Report; exits on SIGTERM/SIGINT.
//	runqcheck sleeper [-every 5ms]
//	    sleeps and wakes up forever, one OS thread in nanosleep: the
//	    steady trickle of wake-ups any real guest has.
//	runqcheck pingpong [-n 20000]
//	    two processes bounce one byte over a pair of pipes n times and
//	    print "PINGPONG n=… ns_per_roundtrip=…": a scheduler-heavy load,
//	    every round trip two wake-ups and two context switches.
//
// Test support only (under testdata, so `go build ./...` skips it).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/hotplugheaven/hotplug/guest/runq"
	"github.com/hotplugheaven/hotplug/proto"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: runqcheck watch|pingpong [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "watch":
		err = watch(os.Args[2:])
	case "pingpong":
		err = pingpong(os.Args[2:])
	case "sleeper":
		err = sleeper(os.Args[2:])
	case "pingpong-child":
		err = pingpongChild()
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Println("FAIL", err)
		os.Exit(1)
	}
}

// Line is one interval as watch prints it.
type Line struct {
	UnixMilli int64    `json:"t"`
	Source    string   `json:"src"`
	P50       int64    `json:"p50"`
	P95       int64    `json:"p95"`
	P99       int64    `json:"p99"`
	Waits     uint64   `json:"waits"`
	Buckets   []uint64 `json:"buckets,omitempty"`
	Lost      uint64   `json:"lost"`
}

func watch(args []string) error {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	interval := fs.Duration("interval", time.Second, "sampling interval")
	mode := fs.String("mode", "auto", "runq_source")
	uid := fs.Int("uid", -1, "drop to this uid (and gid) first")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *uid >= 0 {
		// Go applies these to every thread of the process.
		if err := syscall.Setgid(*uid); err != nil {
			return err
		}
		if err := syscall.Setuid(*uid); err != nil {
			return err
		}
	}
	m, err := runq.ParseMode(*mode)
	if err != nil {
		return err
	}
	src, err := runq.New(runq.Options{Mode: m})
	if err != nil {
		return err
	}
	defer src.Close()
	fmt.Printf("CHOICE %s %s\n", src.Choice().Source, src.Choice())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	t := time.NewTicker(*interval)
	defer t.Stop()
	enc := json.NewEncoder(os.Stdout)
	for seq := uint64(1); ; seq++ {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		r := &proto.Report{Seq: seq, IntervalNanos: int64(*interval)}
		if err := src.Fill(r); err != nil {
			return err
		}
		if err := r.Validate(); err != nil {
			return err
		}
		q := r.RunQueue
		l := Line{UnixMilli: time.Now().UnixMilli(), Source: q.Source, P50: q.P50Nanos, P95: q.P95Nanos, P99: q.P99Nanos,
			Buckets: q.Buckets, Lost: src.LostWaits()}
		for _, n := range q.Buckets {
			l.Waits += n
		}
		if err := enc.Encode(l); err != nil {
			return err
		}
	}
}

// pingpong bounces a byte to a child process and back n times over
// blocking pipes, with plain read/write system calls so that each side
// really sleeps in the kernel and is woken by the other.
func pingpong(args []string) error {
	fs := flag.NewFlagSet("pingpong", flag.ContinueOnError)
	n := fs.Int("n", 20000, "round trips")
	if err := fs.Parse(args); err != nil {
		return err
	}
	runtime.GOMAXPROCS(1)
	runtime.LockOSThread()
	// Close-on-exec: the child gets only its two ends, as fds 3 and 4,
	// and sees EOF when the parent closes its write end.
	var toChild, fromChild [2]int
	if err := syscall.Pipe2(toChild[:], syscall.O_CLOEXEC); err != nil {
		return err
	}
	if err := syscall.Pipe2(fromChild[:], syscall.O_CLOEXEC); err != nil {
		return err
	}
	childIn, childOut := os.NewFile(uintptr(toChild[0]), "in"), os.NewFile(uintptr(fromChild[1]), "out")
	child := exec.Command("/proc/self/exe", "pingpong-child")
	child.ExtraFiles = []*os.File{childIn, childOut}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		return err
	}
	childIn.Close()
	childOut.Close()
	b := []byte{0}
	start := time.Now()
	for i := 0; i < *n; i++ {
		if _, err := syscall.Write(toChild[1], b); err != nil {
			return err
		}
		if k, err := syscall.Read(fromChild[0], b); err != nil || k != 1 {
			return fmt.Errorf("read from child: %d, %v", k, err)
		}
	}
	elapsed := time.Since(start)
	syscall.Close(toChild[1])
	if err := child.Wait(); err != nil {
		return err
	}
	fmt.Printf("PINGPONG n=%d ns_per_roundtrip=%d elapsed=%s\n", *n, elapsed.Nanoseconds()/int64(*n), elapsed)
	return nil
}

// pingpongChild echoes every byte from fd 3 to fd 4 until EOF.
func pingpongChild() error {
	runtime.GOMAXPROCS(1)
	runtime.LockOSThread()
	b := []byte{0}
	for {
		k, err := syscall.Read(3, b)
		if k == 0 && err == nil {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := syscall.Write(4, b); err != nil {
			return err
		}
	}
}

func sleeper(args []string) error {
	fs := flag.NewFlagSet("sleeper", flag.ContinueOnError)
	every := fs.Duration("every", 5*time.Millisecond, "sleep between wake-ups")
	if err := fs.Parse(args); err != nil {
		return err
	}
	runtime.LockOSThread()
	ts := syscall.NsecToTimespec(every.Nanoseconds())
	for {
		if err := syscall.Nanosleep(&ts, nil); err != nil && err != syscall.EINTR {
			return err
		}
	}
}
