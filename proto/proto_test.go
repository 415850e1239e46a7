package proto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

func sampleReport() *Report {
	return &Report{
		Seq: 7, MonotonicNanos: 123456789, WallUnixNanos: time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC).UnixNano(),
		IntervalNanos: int64(time.Second),
		CPUs:          []CPUStat{{CPU: 0, Busy: 0.5, Idle: 0.4, IOWait: 0.05, Steal: 0.05}, {CPU: 1, Busy: 1}},
		Online:        NewCPUSet(0, 1), Present: NewCPUSet(0, 1, 2),
		Load1:         1.5,
		PSI:           &PSI{SomeAvg10: 12.5, SomeTotalMicros: 99},
		RunDelay:      []RunDelay{{CPU: 0, WaitNanos: 5e8, Timeslices: 10}},
		MemTotalBytes: 1 << 30, MemAvailableBytes: 1 << 29, SwapInPerSec: 1, SwapOutPerSec: 2,
		Memory: &MemoryStats{HavePSI: true, PSISomeMicros: 200_000, PSIFullMicros: 50_000, RefaultAnon: 10, RefaultFile: 300,
			MajorFaults: 40, AllocStalls: 2, OOMKills: 0, BlockBytes: 128 << 20, BlocksOnline: 8, BlocksOffline: 2},
	}
}

func TestRoundTrip(t *testing.T) {
	msgs := []Message{
		&Hello{MinVersion: 1, MaxVersion: 1, AgentVersion: "v1.2.3", MachineID: "abc", ProductUUID: "u",
			Possible: NewCPUSet(0, 1, 2, 3), Present: NewCPUSet(0, 1), Online: NewCPUSet(0),
			Topology: []CPUTopology{{CPU: 0, APICID: 0}}, IntervalNanos: int64(time.Second)},
		&Welcome{Version: 1, VM: "vm1", IntervalNanos: int64(2 * time.Second)},
		&Welcome{Error: "no common protocol version"},
		sampleReport(),
		&Command{ID: 9, Online: NewCPUSet(2, 3)},
		&Command{ID: 10, Offline: NewCPUSet(3), IntervalNanos: int64(time.Second)},
		&Ack{ID: 9, OK: true, Online: NewCPUSet(0, 1), Present: NewCPUSet(0, 1), Topology: []CPUTopology{{CPU: 1, APICID: 1}}},
		&Ack{ID: 10, Error: "cpu 3 busy", Failed: []CPUError{{CPU: 3, Error: "EBUSY"}}, Online: NewCPUSet(0, 3), Present: NewCPUSet(0, 3)},
	}
	var stream bytes.Buffer
	w := NewWriter(&stream)
	for _, m := range msgs {
		if err := w.Write(m); err != nil {
			t.Fatalf("write %v: %v", m.Type(), err)
		}
	}
	r := NewReader(&stream, 0)
	for _, want := range msgs {
		got, err := r.Next()
		if err != nil {
			t.Fatalf("read %v: %v", want.Type(), err)
		}
		// DeepEqual, not a comparison of encodings: an encoder that drops
		// a field would drop it from both.
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%v round trip:\n got %+v\nwant %+v", want.Type(), got, want)
		}
	}
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("after last frame: %v, want io.EOF", err)
	}
}

// normalise re-encodes a message; struct encoding is deterministic, so equal
// bytes mean equal field values (CPUSets compare by members, not capacity).
func normalise(m Message) string {
	b, err := msgpack.Marshal(m)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// TestUnknownFieldsIgnored: a newer agent may add fields.
func TestUnknownFieldsIgnored(t *testing.T) {
	payload, err := msgpack.Marshal(map[string]any{"id": 5, "online": "1", "future_field": []int{1, 2, 3}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := Decode(TypeCommand, payload)
	if err != nil {
		t.Fatalf("decode with unknown field: %v", err)
	}
	c := m.(*Command)
	if c.ID != 5 || !c.Online.Equal(NewCPUSet(1)) {
		t.Fatalf("got %+v", c)
	}
}

func frame(t MsgType, payload []byte) []byte {
	h := []byte{'H', 'P', byte(t), 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(h[4:], uint32(len(payload)))
	return append(h, payload...)
}

func TestReaderErrors(t *testing.T) {
	good, _ := Marshal(&Command{ID: 1, Online: NewCPUSet(1)})
	deep := bytes.Repeat([]byte{0x91}, 40) // [[[[…]]]]
	deep = append(deep, 0x01)
	tests := []struct {
		name  string
		input []byte
		want  error
	}{
		{"garbage", []byte("GET / HTTP/1.1\r\n\r\n"), ErrBadMagic},
		{"just over the limit", frame(TypeReport, make([]byte, MaxPayload+1))[:HeaderSize], ErrFrameTooLarge},
		{"far over the limit", []byte{'H', 'P', 3, 0, 0xff, 0xff, 0xff, 0xff}, ErrFrameTooLarge},
		{"truncated payload", good[:len(good)-2], io.ErrUnexpectedEOF},
		{"truncated header", good[:5], io.ErrUnexpectedEOF},
		{"unknown type", frame(99, []byte{0x80}), ErrUnknownType},
		{"not msgpack", frame(TypeCommand, []byte{0xc1}), ErrMalformed},
		{"wrong shape", frame(TypeCommand, []byte{0x93, 1, 2, 3}), ErrMalformed},
		{"deep nesting", frame(TypeCommand, deep), ErrMalformed},
		{"huge array", frame(TypeReport, []byte{0x81, 0xa4, 'c', 'p', 'u', 's', 0xdd, 0xff, 0xff, 0xff, 0xff}), ErrMalformed},
		{"huge string", frame(TypeHello, []byte{0x81, 0xa5, 'a', 'g', 'e', 'n', 't', 0xdb, 0x7f, 0xff, 0xff, 0xff}), ErrMalformed},
		{"trailing bytes", frame(TypeCommand, append(good[HeaderSize:], 0x01)), ErrMalformed},
		{"extension", frame(TypeCommand, []byte{0xd4, 1, 1}), ErrMalformed},
		{"cpu list past MaxCPUs", frame(TypeCommand, mustMsgpack(t, map[string]any{"id": 1, "online": "0-5000"})), ErrMalformed},
		{"invalid values", mustFrame(t, &Command{ID: 0}), ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewReader(bytes.NewReader(tc.input), 0).Next()
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestReaderLimit(t *testing.T) {
	b := mustFrame(t, sampleReport())
	if _, err := NewReader(bytes.NewReader(b), 16).Next(); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("16-byte limit: got %v", err)
	}
}

func TestResync(t *testing.T) {
	good := mustFrame(t, &Command{ID: 3})
	stream := append([]byte("leftover bytes of an old connection"), good...)
	r := NewReader(bytes.NewReader(stream), 0)
	skipped, err := r.Resync(1024)
	if err != nil || skipped != len("leftover bytes of an old connection") {
		t.Fatalf("Resync = %d, %v", skipped, err)
	}
	m, err := r.Next()
	if err != nil || m.(*Command).ID != 3 {
		t.Fatalf("after resync: %v %v", m, err)
	}
	if _, err := NewReader(bytes.NewReader(bytes.Repeat([]byte{'x'}, 100)), 0).Resync(50); !errors.Is(err, ErrBadMagic) {
		t.Fatalf("resync without magic: %v", err)
	}
}

func TestValidateReport(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(r *Report)
	}{
		{"seq zero", func(r *Report) { r.Seq = 0 }},
		{"NaN busy", func(r *Report) { r.CPUs[0].Busy = float32(math.NaN()) }},
		{"negative idle", func(r *Report) { r.CPUs[0].Idle = -0.1 }},
		{"fractions over one", func(r *Report) { r.CPUs[0].Busy, r.CPUs[0].Idle = 0.9, 0.9 }},
		{"repeated cpu", func(r *Report) { r.CPUs[1].CPU = 0 }},
		{"cpu id too high", func(r *Report) { r.CPUs[1].CPU = MaxCPUs }},
		{"infinite load", func(r *Report) { r.Load1 = math.Inf(1) }},
		{"absurd load", func(r *Report) { r.Load1 = 1e9 }},
		{"online not present", func(r *Report) { r.Online = NewCPUSet(0, 5) }},
		{"zero interval", func(r *Report) { r.IntervalNanos = 0 }},
		{"negative wall", func(r *Report) { r.WallUnixNanos = -1 }},
		{"avail above total", func(r *Report) { r.MemAvailableBytes = r.MemTotalBytes + 1 }},
		{"negative swap", func(r *Report) { r.SwapInPerSec = -1 }},
		{"psi NaN", func(r *Report) { r.PSI.SomeAvg10 = math.NaN() }},
		{"absurd run delay", func(r *Report) { r.RunDelay[0].WaitNanos = math.MaxUint64 }},
		{"memory stall past the interval", func(r *Report) { r.Memory.PSISomeMicros = 2_000_000 }},
		{"memory full above some", func(r *Report) { r.Memory.PSIFullMicros = r.Memory.PSISomeMicros + 1 }},
		{"memory stall without PSI", func(r *Report) { r.Memory.HavePSI = false }},
		{"absurd refaults", func(r *Report) { r.Memory.RefaultFile = math.MaxUint64 }},
		{"absurd OOM kills", func(r *Report) { r.Memory.OOMKills = 1 << 40 }},
		{"block size not a power of two", func(r *Report) { r.Memory.BlockBytes = 3 << 20 }},
		{"blocks without a size", func(r *Report) { r.Memory.BlockBytes = 0 }},
		{"too many blocks", func(r *Report) { r.Memory.BlocksOffline = 1 << 30 }},
		{"online blocks past any memory", func(r *Report) { r.Memory.BlockBytes, r.Memory.BlocksOnline = 1<<40, 1<<20 }},
	}
	if err := sampleReport().Validate(); err != nil {
		t.Fatalf("sample report invalid: %v", err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := sampleReport()
			tc.mutate(r)
			if err := r.Validate(); !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestNegotiate(t *testing.T) {
	if v, err := Negotiate(&Hello{MinVersion: 1, MaxVersion: 5}); err != nil || v != MaxVersion {
		t.Fatalf("1..5: %d %v", v, err)
	}
	if _, err := Negotiate(&Hello{MinVersion: MaxVersion + 1, MaxVersion: MaxVersion + 3}); err == nil ||
		!strings.Contains(err.Error(), "no common protocol version") {
		t.Fatalf("future-only agent: %v", err)
	}
}

func TestCPUList(t *testing.T) {
	tests := []struct {
		in   string
		want []int
		out  string
		bad  bool
	}{
		{in: "", want: []int{}, out: ""},
		{in: "0\n", want: []int{0}, out: "0"},
		{in: "0-3", want: []int{0, 1, 2, 3}, out: "0-3"},
		{in: "0,2-3,7", want: []int{0, 2, 3, 7}, out: "0,2-3,7"},
		{in: "5,1,1,0", want: []int{0, 1, 5}, out: "0-1,5"},
		{in: "63-65", want: []int{63, 64, 65}, out: "63-65"},
		{in: "3-1", bad: true},
		{in: "a", bad: true},
		{in: "-1", bad: true},
		{in: "1,,2", bad: true},
		{in: "1024", bad: true},
		{in: "0-99999999999", bad: true},
	}
	for _, tc := range tests {
		s, err := ParseCPUList(tc.in)
		if tc.bad {
			if !errors.Is(err, ErrCPUList) {
				t.Errorf("%q: err = %v, want ErrCPUList", tc.in, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(s.Slice(), tc.want) || s.String() != tc.out {
			t.Errorf("%q: got %v %q %v", tc.in, s.Slice(), s.String(), err)
		}
	}
	s := NewCPUSet(1, 5, 70)
	if s.Max() != 70 || s.Min() != 1 || s.Len() != 3 || !s.Has(70) || s.Has(2) {
		t.Fatalf("set ops wrong: %v", s)
	}
	s.Remove(70)
	if s.Max() != 5 || !NewCPUSet(1).SubsetOf(s) || s.SubsetOf(NewCPUSet(1)) {
		t.Fatalf("after remove: %v", s)
	}
}

func mustMsgpack(t *testing.T, v any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustFrame(t *testing.T, m Message) []byte {
	t.Helper()
	b, err := msgpack.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return frame(m.Type(), b)
}

func TestCPUSetCloneUnion(t *testing.T) {
	a := NewCPUSet(1, 2)
	b := a.Clone()
	b.Add(70)
	if a.Has(70) || !b.Has(70) {
		t.Fatal("Clone shares storage")
	}
	u := a.Union(NewCPUSet(2, 100))
	if u.String() != "1-2,100" || a.String() != "1-2" {
		t.Fatalf("Union = %s, a = %s", u, a)
	}
}

func TestValidateExtensions(t *testing.T) {
	good := func() *Report {
		r := sampleReport()
		r.RunQueue = &RunQueue{Source: RunQSourceTPBTF, Buckets: []uint64{1, 2, 3}, P50Nanos: 1000, P95Nanos: 5000, P99Nanos: 9000}
		r.Apps = []AppStats{{Name: "web", Arrivals: 100, Drops: 2, ArrivalRate: 20, InterArrivalMean: 0.05, InterArrivalVar: 0.001,
			ServiceMean: 0.01, ServiceVar: 0.0001, RespP50: 0.01, RespP95: 0.03, RespP99: 0.05, SLAPercentile: 0.95, SLATarget: 0.1}}
		return r
	}
	if err := good().Validate(); err != nil {
		t.Fatalf("good report: %v", err)
	}
	b, _ := Marshal(good())
	m, err := NewReader(bytes.NewReader(b), 0).Next()
	if err != nil || !reflect.DeepEqual(m, good()) {
		t.Fatalf("round trip: %v\n%+v", err, m)
	}
	for name, mutate := range map[string]func(*Report){
		"unknown source":     func(r *Report) { r.RunQueue.Source = "magic" },
		"too many buckets":   func(r *Report) { r.RunQueue.Buckets = make([]uint64, MaxRunQBuckets+1) },
		"percentile order":   func(r *Report) { r.RunQueue.P95Nanos = 10 },
		"too many apps":      func(r *Report) { r.Apps = make([]AppStats, MaxApps+1) },
		"nameless app":       func(r *Report) { r.Apps[0].Name = "" },
		"more drops":         func(r *Report) { r.Apps[0].Drops = 101 },
		"NaN service":        func(r *Report) { r.Apps[0].ServiceMean = math.NaN() },
		"negative rate":      func(r *Report) { r.Apps[0].ArrivalRate = -1 },
		"p99 below p95":      func(r *Report) { r.Apps[0].RespP99 = 0.001 },
		"sla percentile 1":   func(r *Report) { r.Apps[0].SLAPercentile = 1 },
		"absurd service var": func(r *Report) { r.Apps[0].ServiceVar = math.Inf(1) },
	} {
		r := good()
		mutate(r)
		if err := r.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Validate = %v", name, err)
		}
	}
}

// BusyCPUs counts only online CPUs; WaitingTasks is the summed run delay
// per interval, 0 without an interval.
func TestReportDerivedFigures(t *testing.T) {
	r := &Report{
		IntervalNanos: 2e9,
		Online:        NewCPUSet(0, 2),
		CPUs:          []CPUStat{{CPU: 0, Busy: 0.5}, {CPU: 1, Busy: 1}, {CPU: 2, Busy: 0.25}},
		RunDelay:      []RunDelay{{CPU: 0, WaitNanos: 1e9}, {CPU: 2, WaitNanos: 2e9}},
	}
	if got := r.BusyCPUs(); got != 0.75 {
		t.Errorf("BusyCPUs = %v, want 0.75 (CPU 1 is offline)", got)
	}
	if got := r.WaitingTasks(); got != 1.5 {
		t.Errorf("WaitingTasks = %v, want 1.5", got)
	}
	r.IntervalNanos = 0
	if got := r.WaitingTasks(); got != 0 {
		t.Errorf("WaitingTasks without an interval = %v, want 0", got)
	}
}

func TestHelloApps(t *testing.T) {
	h := func(apps ...string) *Hello {
		return &Hello{MinVersion: 1, MaxVersion: MaxVersion, IntervalNanos: int64(time.Second), Apps: apps}
	}
	if err := h("web", "php8.2-fpm", "db_1").Validate(); err != nil {
		t.Fatalf("valid names refused: %v", err)
	}
	many := make([]string, MaxApps+1)
	for i := range many {
		many[i] = fmt.Sprintf("app%d", i)
	}
	for name, hh := range map[string]*Hello{
		"too many":    h(many...),
		"repeated":    h("web", "web"),
		"empty":       h(""),
		"label junk":  h("web\"} 1\nevil"),
		"too long":    h(strings.Repeat("a", 65)),
		"leading dot": h(".hidden"),
	} {
		if err := hh.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	r := &Report{Seq: 1, IntervalNanos: int64(time.Second), Online: NewCPUSet(0), Present: NewCPUSet(0),
		Apps: []AppStats{{Name: "web"}, {Name: "web"}}}
	if err := r.Validate(); !errors.Is(err, ErrInvalid) {
		t.Errorf("a report naming one application twice: %v", err)
	}
	r.Apps[1].Name = "a b"
	if err := r.Validate(); !errors.Is(err, ErrInvalid) {
		t.Errorf("a report with an application name that is not one: %v", err)
	}
}
