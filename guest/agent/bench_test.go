package agent

import (
	"io"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/guest/collector"
	"github.com/hotplugheaven/hotplug/proto"
)

// stepClock advances one second per reading, so every Sample covers a
// full interval on the fixture tree.
type stepClock struct{ mono int64 }

func (c *stepClock) Now() (int64, time.Time) {
	c.mono += int64(time.Second)
	return c.mono, time.Unix(0, c.mono)
}

// BenchmarkSampleAndSend is the agent's whole per-interval work on a 4-CPU
// guest: read and parse every /proc and /sys source, build the Report,
// frame and encode it. CPU time per sample is ns/op; memory is B/op and
// allocs/op.
func BenchmarkSampleAndSend(b *testing.B) {
	opts := fixture(b)
	opts.Clock = &stepClock{}
	s, err := collector.New(opts)
	if err != nil {
		b.Fatal(err)
	}
	s.Sample() // prime
	w := proto.NewWriter(io.Discard)
	var seq uint64
	b.ReportAllocs()
	for b.Loop() {
		r, err := s.Sample()
		if err != nil {
			b.Fatal(err)
		}
		seq++
		r.Seq = seq
		if err := w.Write(r); err != nil {
			b.Fatal(err)
		}
	}
}
