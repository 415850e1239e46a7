package actuator

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/time/rate"

	"github.com/hotplugheaven/hotplug/host/actuator/fakeguest"
	"github.com/hotplugheaven/hotplug/host/engine"
	"github.com/hotplugheaven/hotplug/host/eventlog"
	"github.com/hotplugheaven/hotplug/proto"
)

// BenchmarkReport is the VM loop's cost of one agent report: checks,
// engine observe and decide, status publish (the agent connection's
// decoding is not in it). The figure per op is the actuator's CPU per
// report per VM, bar decoding and observers.
func BenchmarkReport(b *testing.B) {
	r := newLoopRig(b, 4, 1)
	r.l.vm.log = hclog.NewNullLogger()
	r.l.paused = true // decide, never act
	r.handle(evSession{s: r.sess})
	online := proto.NewCPUSet(0)
	rep := proto.Report{IntervalNanos: int64(time.Second), Online: online, Present: online,
		CPUs:     []proto.CPUStat{{CPU: 0, Busy: 0.5, Idle: 0.5}},
		RunQueue: &proto.RunQueue{Source: proto.RunQSourceSchedstat, P50Nanos: 1e5, P95Nanos: 5e5, P99Nanos: 1e6}}
	at := time.Now()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		rr := rep
		rr.Seq = uint64(i + 1)
		at = at.Add(time.Second)
		r.handle(evReport{s: r.sess, r: &rr, at: at})
	}
}

// BenchmarkReportThroughConn is one report from the agent's bytes on the
// channel to the published status: agentConn's framing and decoding, the
// hand-over to the VM loop, and BenchmarkReport's work.
func BenchmarkReportThroughConn(b *testing.B) {
	hyp := newMemHyp(4, 1)
	ch := fakeguest.NewPipeChannel()
	events, err := eventlog.Open(filepath.Join(b.TempDir(), "events.jsonl"))
	if err != nil {
		b.Fatal(err)
	}
	defer events.Close()
	p := fastPolicy()
	p.Interval = engine.Duration(time.Second)
	act, err := New([]VMConfig{{Name: "vm1", Policy: p, Channel: ch, Hypervisor: hyp}}, events, 0, hclog.NewNullLogger())
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { act.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	if err := act.VM("vm1").Pause(ctx); err != nil {
		b.Fatal(err)
	}
	// Reports here come as fast as the loop takes them, far above the
	// rate an agent may report at: lift the guard's limit to measure the
	// path behind it (the refusal path is flood_test's).
	v := act.VM("vm1")
	v.conn.guard.rateOf = func(time.Duration) rate.Limit { return rate.Inf }
	v.conn.guard.reports.SetLimit(rate.Inf)
	conn, err := ch.Dial(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	w, rd := proto.NewWriter(conn), proto.NewReader(conn, 0)
	online := proto.NewCPUSet(0)
	if err := w.Write(&proto.Hello{MinVersion: 1, MaxVersion: proto.MaxVersion, Possible: proto.NewCPUSet(0, 1, 2, 3), Present: online,
		Online: online, IntervalNanos: int64(time.Second)}); err != nil {
		b.Fatal(err)
	}
	if _, err := rd.Next(); err != nil {
		b.Fatal(err)
	}
	go func() { // drain what the actuator sends
		for {
			if _, err := rd.Next(); err != nil {
				return
			}
		}
	}()
	rep := proto.Report{IntervalNanos: int64(time.Second), Online: online, Present: online,
		CPUs:     []proto.CPUStat{{CPU: 0, Busy: 0.5, Idle: 0.5}},
		RunQueue: &proto.RunQueue{Source: proto.RunQSourceSchedstat, P50Nanos: 1e5, P95Nanos: 5e5, P99Nanos: 1e6}}
	b.ReportAllocs()
	seq := uint64(0)
	for b.Loop() {
		seq++
		rep.Seq = seq
		if err := w.Write(&rep); err != nil {
			b.Fatal(err)
		}
	}
	for v.Status().Agent.Reports < seq {
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkHeapPerVM is the live heap one VM costs the actuator with its
// agent reporting: N VMs on in-memory hypervisors with fake guests on
// pipes run for a few seconds, then the heap after a GC, less the heap
// before, over N. The fake guests' own memory is in the figure (it is
// small), the API hub's history is not (apiserver's
// BenchmarkHubHistoryPerVM). Run with -benchtime 1x.
func BenchmarkHeapPerVM(b *testing.B) {
	const n = 200
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		events, err := eventlog.Open(filepath.Join(b.TempDir(), "events.jsonl"))
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var cfgs []VMConfig
		var guests []*fakeguest.Guest
		var chans []*fakeguest.PipeChannel
		for i := range n {
			h := newMemHyp(4, 1)
			ch := fakeguest.NewPipeChannel()
			g := fakeguest.New(h)
			g.SetDemand(0.5)
			p := fastPolicy()
			p.Interval = engine.Duration(time.Second)
			cfgs = append(cfgs, VMConfig{Name: fmt.Sprintf("vm%d", i), Policy: p, Channel: ch, Hypervisor: h})
			guests, chans = append(guests, g), append(chans, ch)
		}
		act, err := New(cfgs, events, 0, hclog.NewNullLogger())
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan struct{})
		go func() { act.Run(ctx); close(done) }()
		var wg sync.WaitGroup
		for i, g := range guests {
			wg.Go(func() { g.Run(ctx, chans[i].Dial, time.Second) })
		}
		time.Sleep(5 * time.Second)
		seen := uint64(0)
		for _, v := range act.VMs() {
			seen += v.Status().Agent.Reports
		}
		if seen < n*3 {
			b.Fatalf("only %d reports from %d VMs in 5 s", seen, n)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heap-B/VM")
		cancel()
		<-done
		wg.Wait()
		events.Close()
	}
}
