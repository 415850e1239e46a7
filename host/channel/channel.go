// Package channel gives the actuator connections from one VM's agent.
//
// A channel is bound to exactly one VM by configuration: whoever connects
// through it speaks for that VM and no other, whatever identity the guest
// claims. Each transport is one file implementing Channel. The package
// moves bytes; it must not parse or trust them (that is proto's job).
package channel

import (
	"context"
	"net"
	"time"
)

// Channel yields successive connections from one VM's agent. Accept blocks
// until the next connection or ctx ends; callers serve one connection at a
// time.
type Channel interface {
	Accept(ctx context.Context) (net.Conn, error)
	Close() error
	String() string
}

// backoff returns the wait before attempt n (0-based): 100 ms doubling to
// max.
func backoff(n int, max time.Duration) time.Duration {
	d := 100 * time.Millisecond
	for i := 0; i < n && d < max; i++ {
		d *= 2
	}
	return min(d, max)
}

// Sleep waits d or until ctx ends, and then returns ctx's error.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
