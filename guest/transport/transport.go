// Package transport opens the agent's connection to the actuator. Each
// transport (virtio-serial, vsock, TCP) is one file implementing Dialer.
//
// It moves bytes only: framing and the protocol are proto's, retries and
// backoff are the agent's.
package transport

import (
	"context"
	"io"
)

// Dialer opens one connection to the actuator.
type Dialer interface {
	Dial(ctx context.Context) (io.ReadWriteCloser, error)
	String() string
}
