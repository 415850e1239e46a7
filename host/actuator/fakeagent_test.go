package actuator

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"
)

// pipeChannel is a channel.Channel whose connections a test makes with
// net.Pipe: the test plays the guest.
type pipeChannel struct {
	conns  chan net.Conn
	once   sync.Once
	closed chan struct{}
}

func newPipeChannel() *pipeChannel {
	return &pipeChannel{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (p *pipeChannel) Accept(ctx context.Context) (net.Conn, error) {
	select {
	case c := <-p.conns:
		return c, nil
	case <-p.closed:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *pipeChannel) Close() error   { p.once.Do(func() { close(p.closed) }); return nil }
func (p *pipeChannel) String() string { return "pipe" }

// dial gives the actuator a new connection and returns the guest's end.
func (p *pipeChannel) dial(t *testing.T) net.Conn {
	guest, host := net.Pipe()
	select {
	case p.conns <- host:
	case <-time.After(10 * time.Second):
		t.Fatal("actuator did not accept a connection")
	}
	return guest
}

// dialer returns a dial function handing the actuator the other end.
func (p *pipeChannel) dialer(t *testing.T) func(context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		guest, host := net.Pipe()
		select {
		case p.conns <- host:
			return guest, nil
		case <-p.closed:
			return nil, net.ErrClosed
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
