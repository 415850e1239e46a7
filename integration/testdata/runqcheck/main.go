// Command runqcheck runs inside a test guest and drives guest/runq the way
// the agent does, for integration/runq_test.go:
//
//	runqcheck watch [-interval 1s] [-mode auto] [-uid N] [-wakeups] [-progstats]
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
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/hotplugheaven/hotplug/bpf"
	"github.com/hotplugheaven/hotplug/guest/collector"
	"github.com/hotplugheaven/hotplug/guest/runq"
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
	// Progs (with -progstats): each loaded runqlat program's runs and
	// total run time in ns since it was loaded, from the kernel's BPF
	// statistics.
	Progs map[string][2]uint64 `json:"progs,omitempty"`
}

func watch(args []string) error {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	interval := fs.Duration("interval", time.Second, "sampling interval")
	mode := fs.String("mode", "auto", "runq_source")
	uid := fs.Int("uid", -1, "drop to this uid (and gid) first")
	wakeups := fs.Bool("wakeups", false, "tp_btf: keep the wake-up programs rather than sched_switch alone on sched_info")
	progStats := fs.Bool("progstats", false, "turn on the kernel's BPF run-time statistics and report each program's")
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
	src, err := runq.New(runq.Options{Mode: m, WakeupPrograms: *wakeups})
	if err != nil {
		return err
	}
	defer src.Close()
	var progNames map[string]bool // runqlat.c's programs, with -progstats
	if *progStats {
		spec, err := bpf.LoadRunqlat()
		if err != nil {
			return err
		}
		progNames = map[string]bool{}
		for name := range spec.Programs {
			progNames[name] = true
		}
		// Held for as long as watch runs; the kernel counts while any
		// holder has it open.
		st, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
		if err != nil {
			return fmt.Errorf("enabling BPF statistics: %w", err)
		}
		defer st.Close()
	}
	// The Report comes from the collector with the run-queue source as
	// its extra, as in the agent: the schedstat flavour reads the
	// collector's RunDelay deltas.
	sampler, err := collector.New(collector.Options{Extra: []collector.Source{src}})
	if err != nil {
		return err
	}
	if _, err := sampler.Sample(); err != nil && !errors.Is(err, collector.ErrNoBaseline) {
		return err
	}
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
		r, err := sampler.Sample()
		if err != nil {
			return err
		}
		r.Seq = seq
		for _, st := range sampler.Sources() {
			if st.Name == src.Name() && !st.InUse {
				return fmt.Errorf("interval %d: %s: %v", seq, st.Name, st.Err)
			}
		}
		if err := r.Validate(); err != nil {
			return err
		}
		q := r.RunQueue
		if q == nil {
			return fmt.Errorf("interval %d: %s filled no run-queue figures", seq, src.Choice().Source)
		}
		l := Line{UnixMilli: time.Now().UnixMilli(), Source: q.Source, P50: q.P50Nanos, P95: q.P95Nanos, P99: q.P99Nanos,
			Buckets: q.Buckets, Lost: src.LostWaits()}
		for _, n := range q.Buckets {
			l.Waits += n
		}
		if *progStats {
			if l.Progs, err = progStatsOf(progNames); err != nil {
				return err
			}
		}
		if err := enc.Encode(l); err != nil {
			return err
		}
	}
}

// progStatsOf returns runs and run time of every loaded program whose name
// is in names.
func progStatsOf(names map[string]bool) (map[string][2]uint64, error) {
	out := map[string][2]uint64{}
	for id := ebpf.ProgramID(0); ; {
		var err error
		id, err = ebpf.ProgramGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // unloaded since
		}
		info, ierr := p.Info()
		st, serr := p.Stats()
		p.Close()
		if ierr != nil || serr != nil || !names[info.Name] {
			continue
		}
		c := out[info.Name]
		out[info.Name] = [2]uint64{c[0] + st.RunCount, c[1] + uint64(st.Runtime)}
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
	var b [1]byte
	start := time.Now()
	for i := 0; i < *n; i++ {
		if _, err := rawIO(unix.SYS_WRITE, toChild[1], &b); err != nil {
			return err
		}
		if k, err := rawIO(unix.SYS_READ, fromChild[0], &b); err != nil || k != 1 {
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
	var b [1]byte
	for {
		k, err := rawIO(unix.SYS_READ, 3, &b)
		if k == 0 && err == nil {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := rawIO(unix.SYS_WRITE, 4, &b); err != nil {
			return err
		}
	}
}

// rawIO reads or writes one byte with a raw system call, which the Go
// runtime does not see. Through syscall.Read the runtime would mark each
// blocking read as a system call, and its monitor thread would take the
// processor back from any that lasts over 20 µs and then wake every 20 µs
// itself: extra threads and context switches, more of them the slower the
// switch path is, which made the probes' cost look several times larger
// than it is (seen under QEMU -icount: 2.35 switches per round trip
// without probes, 3.4 with the wake-up programs). Go's handlers use
// SA_RESTART, so its preemption signal does not interrupt the read; EINTR
// is retried anyway.
func rawIO(trap uintptr, fd int, b *[1]byte) (int, error) {
	for {
		n, _, errno := syscall.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), 1)
		if errno == syscall.EINTR {
			continue
		}
		if errno != 0 {
			return int(n), errno
		}
		return int(n), nil
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
