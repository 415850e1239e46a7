package actuator

import (
	"bytes"
	"encoding/binary"
	"math"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotplugheaven/hotplug/host/actuator/fakeguest"
	"github.com/hotplugheaven/hotplug/host/channel"
	"github.com/hotplugheaven/hotplug/host/eventlog"
	"github.com/hotplugheaven/hotplug/host/hypervisor"
	"github.com/hotplugheaven/hotplug/host/qmp/qmptest"
	"github.com/hotplugheaven/hotplug/proto"
)

// transportRig runs one actuator with a "victim" VM whose agent is hostile
// and a "bystander" VM with an honest fake guest, over a real transport.
type transportRig struct {
	name    string
	connect func(t *testing.T) net.Conn // a new connection from the hostile guest
	rec     *recorder
	act     *Actuator
	good    *fakeguest.Guest
	goodQMP *qmptest.Server
	evilQMP *qmptest.Server
	logs    *lineCounter
}

// lineCounter passes log lines to the test's log and counts them per VM.
type lineCounter struct {
	t     testing.TB
	mu    sync.Mutex
	lines map[string]int
	quiet bool // count without passing on (a flood test's own lines)
}

func (w *lineCounter) Write(b []byte) (int, error) {
	line := string(b)
	w.mu.Lock()
	for _, vm := range []string{"victim", "bystander"} {
		if strings.Contains(line, "vm="+vm) {
			w.lines[vm]++
		}
	}
	quiet := w.quiet
	w.mu.Unlock()
	if !quiet {
		w.t.Log(strings.TrimRight(line, "\n"))
	}
	return len(b), nil
}

func (w *lineCounter) count(vm string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lines[vm]
}

// hostileTransports builds one rig per transport the host serves here.
// vsock cannot run on this host (no vhost-vsock); its channel is exercised
// inside a guest by integration/vsock_test.go.
func hostileTransports(t *testing.T) []func() *transportRig {
	return []func() *transportRig{
		func() *transportRig {
			tcp, err := channel.ListenTCP("127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			return startTransportRig(t, "tcp", tcp, func(t *testing.T) net.Conn {
				c, err := net.DialTimeout("tcp", tcp.Addr().String(), 5*time.Second)
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
				return c
			}, 300*time.Millisecond)
		},
		func() *transportRig {
			// virtio-serial: the actuator dials QEMU's chardev socket; here
			// the test listens on that socket and plays the guest behind it.
			dir := t.TempDir()
			path := filepath.Join(dir, "agent.sock")
			ln, err := net.Listen("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			return startTransportRig(t, "virtio-serial", &channel.VirtioSerial{Path: path, MaxBackoff: 200 * time.Millisecond},
				func(t *testing.T) net.Conn {
					ln.(*net.UnixListener).SetDeadline(time.Now().Add(15 * time.Second))
					c, err := ln.Accept()
					if err != nil {
						t.Fatalf("actuator did not dial the chardev socket: %v", err)
					}
					return c
				}, 300*time.Millisecond)
		},
	}
}

func startTransportRig(t *testing.T, name string, evilCh channel.Channel, connect func(*testing.T) net.Conn, backoff time.Duration) *transportRig {
	r := &transportRig{name: name, connect: connect, rec: &recorder{}, logs: &lineCounter{t: t, lines: map[string]int{}}}
	r.goodQMP, r.evilQMP = qmptest.Start(t, nil), qmptest.Start(t, nil)
	events, err := eventlog.Open(filepath.Join(t.TempDir(), "events.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	goodCh := fakeguest.NewPipeChannel()
	r.good = fakeguest.New(r.goodQMP)
	evilPolicy := fastPolicy()
	evilPolicy.MaxVCPUs = 2
	logger := hclog.New(&hclog.LoggerOptions{Level: hclog.Warn, Output: r.logs})
	r.act, err = New([]VMConfig{
		{Name: "bystander", Policy: fastPolicy(), Channel: goodCh, CommandTimeout: 5 * time.Second,
			Hypervisor: hypervisor.NewQEMU(r.goodQMP.Path(), hypervisor.QEMUOptions{})},
		{Name: "victim", Policy: evilPolicy, Channel: evilCh, CommandTimeout: 2 * time.Second, HelloTimeout: time.Second, MaxBackoff: backoff,
			Hypervisor: hypervisor.NewQEMU(r.evilQMP.Path(), hypervisor.QEMUOptions{})},
	}, events, 5, logger, r.rec)
	if err != nil {
		t.Fatal(err)
	}
	stop := run(r.act, r.good, goodCh)
	t.Cleanup(func() {
		stop()
		events.Close()
	})
	return r
}

func hdr(t proto.MsgType, n uint32) []byte {
	h := []byte{'H', 'P', byte(t), 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(h[4:], n)
	return h
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func hello() *proto.Hello {
	return &proto.Hello{MinVersion: 1, MaxVersion: 1, Possible: proto.NewCPUSet(0, 1, 2, 3), Present: proto.NewCPUSet(0),
		Online: proto.NewCPUSet(0), IntervalNanos: int64(interval)}
}

// TestHostileGuests drives a malicious agent over each transport. Every
// attack must end with the connection dropped or the message refused, a
// reason counted, memory and goroutines bounded, the victim never above
// its max or the host budget, and the bystander VM still scaled.
func TestHostileGuests(t *testing.T) {
	for _, mk := range hostileTransports(t) {
		r := mk()
		t.Run(r.name, func(t *testing.T) {
			r.good.SetDemand(2)
			var before runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			goroutines := runtime.NumGoroutine()

			attacks := []struct {
				name   string
				run    func(c net.Conn)
				reason string // expected Rejected reason, "" if the drop is silent on the wire
				count  int    // how many rejections at least (default 1)
			}{
				{"garbage bytes", func(c net.Conn) { c.Write([]byte("\x00\xffGET / HTTP/1.1\r\n\r\n")) }, RejectHandshake, 1},
				{"frame just over the limit", func(c net.Conn) { c.Write(hdr(proto.TypeHello, proto.MaxPayload+1)) }, RejectHandshake, 1},
				{"frame far over the limit", func(c net.Conn) { c.Write(hdr(proto.TypeHello, math.MaxUint32)) }, RejectHandshake, 1},
				{"slow-loris partial frame", func(c net.Conn) {
					b := mustMarshal(t, hello())
					for i := 0; i < 3; i++ { // one byte a little slower than never
						c.Write(b[i : i+1])
						time.Sleep(400 * time.Millisecond)
					}
				}, RejectHandshake, 1},
				{"msgpack bomb: huge declared array", func(c net.Conn) {
					c.Write(append(hdr(proto.TypeHello, 11), 0x81, 0xa4, 'c', 'p', 'u', 's', 0xdd, 0xff, 0xff, 0xff, 0xff))
				}, RejectHandshake, 1},
				{"msgpack bomb: deep nesting", func(c net.Conn) {
					deep := bytes.Repeat([]byte{0x91}, 100000)
					c.Write(append(hdr(proto.TypeHello, uint32(len(deep))), deep...))
				}, RejectHandshake, 1},
				{"wrong protocol version", func(c net.Conn) {
					h := hello()
					h.MinVersion, h.MaxVersion = 7, 9
					c.Write(mustMarshal(t, h))
				}, RejectHandshake, 1},
				{"replayed and out-of-order reports", func(c net.Conn) {
					c.Write(mustMarshal(t, hello()))
					for _, seq := range []uint64{5, 5, 3, 4} {
						c.Write(mustMarshal(t, &proto.Report{Seq: seq, IntervalNanos: int64(interval), Online: proto.NewCPUSet(0), Present: proto.NewCPUSet(0)}))
					}
				}, RejectReplayed, 3},
				{"absurd values", func(c net.Conn) {
					c.Write(mustMarshal(t, hello()))
					// Encoded by hand: Marshal of a valid message cannot carry NaN
					// past Validate on the other side, which is the point.
					for i, r := range []*proto.Report{
						{CPUs: []proto.CPUStat{{CPU: 0, Busy: float32(math.NaN())}}},
						{CPUs: []proto.CPUStat{{CPU: 0, Busy: -1}}},
						{Load1: 1e12},
						{RunDelay: []proto.RunDelay{{CPU: 0, WaitNanos: math.MaxUint64}}},
						{WallUnixNanos: time.Now().Add(100 * 365 * 24 * time.Hour).UnixNano()},
					} {
						r.Seq, r.IntervalNanos = uint64(100+i), int64(interval)
						r.Online, r.Present = proto.NewCPUSet(0), proto.NewCPUSet(0)
						c.Write(append(hdr(proto.TypeReport, 0)[:0], frameNoValidate(t, r)...))
					}
				}, RejectInvalid, 5},
				{"greedy but well-formed: 10⁵ tasks waiting", func(c net.Conn) {
					c.Write(mustMarshal(t, hello()))
					for i := uint64(1); i < 30; i++ {
						c.Write(mustMarshal(t, &proto.Report{Seq: i, IntervalNanos: int64(interval), Online: proto.NewCPUSet(0), Present: proto.NewCPUSet(0),
							CPUs: []proto.CPUStat{{CPU: 0, Busy: 1}}, RunDelay: []proto.RunDelay{{CPU: 0, WaitNanos: uint64(1e5 * float64(interval))}}}))
						time.Sleep(interval)
					}
				}, "", 0},
			}
			for _, a := range attacks {
				r.rec.mu.Lock()
				before := r.rec.rejected[a.reason]
				r.rec.mu.Unlock()
				c := r.connect(t)
				c.SetDeadline(time.Now().Add(20 * time.Second))
				a.run(c)
				if a.reason != "" {
					waitFor(t, 15*time.Second, a.name+": rejected as "+a.reason, func() bool {
						r.rec.mu.Lock()
						defer r.rec.mu.Unlock()
						return r.rec.rejected[a.reason] >= before+max(a.count, 1)
					})
				}
				c.Close()
				if n := r.evilQMP.Plugged(); n > 2 {
					t.Fatalf("%s: victim has %d vCPUs, policy max 2", a.name, n)
				}
				if total := r.evilQMP.Plugged() + r.goodQMP.Plugged(); total > 5 {
					t.Fatalf("%s: %d vCPUs in all, budget 5", a.name, total)
				}
			}
			waitFor(t, 20*time.Second, "the bystander VM to be scaled regardless", func() bool { return r.goodQMP.Plugged() >= 2 })

			runtime.GC()
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			if grown := int64(after.HeapInuse) - int64(before.HeapInuse); grown > 16<<20 {
				t.Errorf("heap grew by %d MiB over the attacks", grown>>20)
			}
			time.Sleep(500 * time.Millisecond)
			if g := runtime.NumGoroutine(); g > goroutines+10 {
				t.Errorf("goroutines %d → %d", goroutines, g)
			}
		})
	}
}

// frameNoValidate frames a report without validating it (proto.Marshal
// does not validate either; this keeps the intent explicit).
func frameNoValidate(t *testing.T, r *proto.Report) []byte {
	var b bytes.Buffer
	if err := proto.NewWriter(&b).Write(r); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestReconnectFlood: a guest reconnecting a thousand times a second gets
// nowhere and costs the actuator little; the bystander is unaffected.
func TestReconnectFlood(t *testing.T) {
	tcp, err := channel.ListenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := startTransportRig(t, "tcp", tcp, nil, 0) // default backoff: the flood's brake
	r.good.SetDemand(2)
	var wg sync.WaitGroup
	stop := time.Now().Add(3 * time.Second)
	attempts := 0
	var mu sync.Mutex
	for w := 0; w < 10; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				c, err := net.DialTimeout("tcp", tcp.Addr().String(), 100*time.Millisecond)
				mu.Lock()
				attempts++
				mu.Unlock()
				if err == nil {
					c.Write([]byte("junk"))
					c.Close()
				}
				time.Sleep(10 * time.Millisecond) // 10 workers × 100/s
			}
		}()
	}
	wg.Wait()
	t.Logf("%d connection attempts in 3 s", attempts)
	if attempts < 2000 {
		t.Fatalf("only %d attempts: the flood did not happen", attempts)
	}
	waitFor(t, 20*time.Second, "the bystander VM to be scaled during and after the flood", func() bool { return r.goodQMP.Plugged() >= 2 })
	if st := r.act.VM("victim").Status(); st.Agent.Connected || st.Agent.Reports > 0 {
		t.Fatalf("flooding guest got a session: %+v", st)
	}
}
