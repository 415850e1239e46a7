package channel

import (
	"context"
	"fmt"
	"net"
)

// TCP listens on one address per VM; the agent dials it. Meant for
// development and for guests without virtio-serial or vsock: anyone who can
// reach the address speaks for the VM, so bind it to a private network.
type TCP struct {
	ln net.Listener
}

var _ Channel = (*TCP)(nil)

// ListenTCP binds addr ("127.0.0.1:7001").
func ListenTCP(addr string) (*TCP, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("agent channel tcp:%s: %w", addr, err)
	}
	return &TCP{ln: ln}, nil
}

// Addr is the bound address (useful with port 0).
func (t *TCP) Addr() net.Addr { return t.ln.Addr() }

// Accept waits for the next connection.
func (t *TCP) Accept(ctx context.Context) (net.Conn, error) {
	return acceptCtx(ctx, t.ln)
}

// Close stops listening.
func (t *TCP) Close() error { return t.ln.Close() }

func (t *TCP) String() string { return "tcp:" + t.ln.Addr().String() }

// acceptCtx is net.Listener.Accept that also returns when ctx ends.
func acceptCtx(ctx context.Context, ln net.Listener) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		done <- result{c, err}
	}()
	select {
	case r := <-done:
		return r.c, r.err
	case <-ctx.Done():
		// Unblock the Accept by closing the listener; the caller is
		// shutting down anyway.
		ln.Close()
		if r := <-done; r.c != nil {
			r.c.Close()
		}
		return nil, ctx.Err()
	}
}
