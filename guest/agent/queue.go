package agent

import (
	"context"
	"sync"
	"time"

	"github.com/hotplugheaven/hotplug/guest/collector"
	"github.com/hotplugheaven/hotplug/proto"
)

// queue holds reports not yet sent. It is bounded: when full, the oldest
// report is dropped and counted, so sampling never waits for the network.
type queue struct {
	mu      sync.Mutex
	items   []*proto.Report // oldest first
	max     int
	dropped uint64 // dropped since the last pop handed them on
	ready   chan struct{}
	// now returns CLOCK_MONOTONIC in ns, the clock reports are stamped with.
	now func() int64
}

func newQueue(max int) *queue {
	return &queue{max: max, ready: make(chan struct{}, 1), now: func() int64 {
		mono, _ := collector.SystemClock{}.Now()
		return mono
	}}
}

func (q *queue) push(r *proto.Report) {
	q.mu.Lock()
	if len(q.items) == q.max {
		q.items = q.items[1:]
		q.dropped++
	}
	q.items = append(q.items, r)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// pop waits for a report no older than maxAge and returns it with the count
// of reports dropped since the previous pop. ok is false when ctx ended.
func (q *queue) pop(ctx context.Context, maxAge time.Duration) (r *proto.Report, dropped uint64, ok bool) {
	for {
		q.mu.Lock()
		for len(q.items) > 0 {
			r, q.items = q.items[0], q.items[1:]
			if q.now()-r.MonotonicNanos <= int64(maxAge) {
				dropped, q.dropped = q.dropped, 0
				q.mu.Unlock()
				return r, dropped, true
			}
			q.dropped++
		}
		q.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, 0, false
		case <-q.ready:
		}
	}
}

// unpop returns a report that could not be sent to the front of the queue.
func (q *queue) unpop(r *proto.Report) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.dropped += r.Dropped
	r.Dropped = 0
	if len(q.items) == q.max {
		q.dropped++
		return
	}
	q.items = append([]*proto.Report{r}, q.items...)
}

func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}
