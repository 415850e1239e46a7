package qmp

import "sync/atomic"

// Subscription receives the events that match its filter. Create it with
// Client.Subscribe before the command whose event you wait for (e.g. before
// device_del when waiting for DEVICE_DELETED), so the event cannot be missed.
type Subscription struct {
	c      *Client
	filter func(Event) bool
	ch     chan Event
	closed bool // guarded by c.mu
	// dropped counts events that matched but found ch full.
	dropped atomic.Uint64
}

// Subscribe registers for events for which filter returns true (all events
// when filter is nil). buffer is the channel's capacity, at least 1: when it
// is full the reader drops the event for this subscriber rather than wait,
// counts it in Dropped and logs it. filter runs on the reader goroutine and
// must be quick and must not call the Client.
//
// The channel is closed by Close and when the connection ends. Subscribing
// to a closed Client returns a Subscription whose channel is already closed.
func (c *Client) Subscribe(filter func(Event) bool, buffer int) *Subscription {
	if buffer < 1 {
		buffer = 1
	}
	s := &Subscription{c: c, filter: filter, ch: make(chan Event, buffer)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.subs == nil { // connection already ended
		s.closeLocked()
		return s
	}
	c.subs[s] = struct{}{}
	return s
}

// C delivers matching events in the order QEMU sent them.
func (s *Subscription) C() <-chan Event { return s.ch }

// Dropped is how many matching events were lost because C was full.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Close unregisters the subscription and closes C. It is idempotent.
func (s *Subscription) Close() {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	if s.c.subs != nil {
		delete(s.c.subs, s)
	}
	s.closeLocked()
}

func (s *Subscription) closeLocked() {
	if !s.closed {
		s.closed = true
		close(s.ch)
	}
}

// publish hands ev to every matching subscriber without blocking. Sends
// happen under c.mu so they cannot race with Close closing the channel.
func (c *Client) publish(ev Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delivered := 0
	for s := range c.subs {
		if s.filter != nil && !s.filter(ev) {
			continue
		}
		select {
		case s.ch <- ev:
			delivered++
		default:
			n := s.dropped.Add(1)
			c.log.Warn("subscriber too slow, dropping QMP event", "event", ev.Name, "dropped_total", n)
		}
	}
	c.log.Trace("QMP event", "event", ev.Name, "data", string(ev.Data), "subscribers", delivered)
}
