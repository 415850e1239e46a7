package propbridge

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// The chunk size keeps every value within the service's limit.
func TestChunkFits(t *testing.T) {
	for _, maxValue := range []int{127, 1023} {
		c := New(nopIO{}, "0123456789abcdef", "g", "h", maxValue, time.Second)
		value := fmt.Sprintf("%s.%d.%s", "0123456789abcdef", uint64(1<<64-1), strings.Repeat("A", (c.b.chunk+2)/3*4))
		if len(value) > maxValue {
			t.Errorf("MaxValue %d: a full chunk makes a %d-byte value", maxValue, len(value))
		}
		c.b.shutdown(nil, false)
	}
}

type nopIO struct{}

func (nopIO) List(ctx context.Context) (map[string]string, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}
func (nopIO) Set(context.Context, string, string) error { return nil }
func (nopIO) Wait(ctx context.Context, _ time.Duration) { <-ctx.Done() }

// FuzzChunkFor: whatever the peer puts in a slot, a receiver takes only
// the chunk it expects and never panics.
func FuzzChunkFor(f *testing.F) {
	f.Add("0123456789abcdef.1.eA==", uint64(1))
	f.Add("0123456789abcdef.9.eA==", uint64(1))
	f.Fuzz(func(t *testing.T, v string, seq uint64) {
		if seq == 0 {
			seq = 1
		}
		b := &bridge{sess: "0123456789abcdef", peer: "g"}
		props := map[string]string{fmt.Sprintf("g/d%d", (seq-1)%Window): v}
		data, got, err := b.chunkFor(props, seq)
		if err == nil && got != 0 && (got != seq || len(data) == 0 || len(data) > MaxValue) {
			t.Fatalf("chunk %d of %d bytes for seq %d", got, len(data), seq)
		}
	})
}
