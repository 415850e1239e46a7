package transport

import (
	"context"
	"fmt"
	"io"

	"github.com/mdlayher/vsock"
)

// Vsock dials the actuator over AF_VSOCK.
type Vsock struct {
	// CID of the actuator: 2 (vsock.Host) for the hypervisor host.
	CID  uint32
	Port uint32
}

var _ Dialer = (*Vsock)(nil)

// Dial connects. ctx bounds only the wait before the attempt: the vsock
// package's Dial has no context and fails fast when no one listens.
func (v *Vsock) Dial(ctx context.Context) (io.ReadWriteCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c, err := vsock.Dial(v.CID, v.Port, nil)
	if err != nil {
		return nil, fmt.Errorf("vsock dial cid %d port %d: %w", v.CID, v.Port, err)
	}
	return c, nil
}

func (v *Vsock) String() string { return fmt.Sprintf("vsock:%d:%d", v.CID, v.Port) }
