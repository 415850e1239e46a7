package transport

import (
	"context"
	"io"
	"net"
	"time"
)

// TCP dials the actuator over TCP: for development and guests without
// virtio-serial or vsock.
type TCP struct {
	Addr string
}

var _ Dialer = (*TCP)(nil)

// Dial connects with keepalives so a vanished host is noticed.
func (t *TCP) Dial(ctx context.Context) (io.ReadWriteCloser, error) {
	d := net.Dialer{KeepAlive: 15 * time.Second}
	return d.DialContext(ctx, "tcp", t.Addr)
}

func (t *TCP) String() string { return "tcp:" + t.Addr }
