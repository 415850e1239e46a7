package channel

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// VirtioSerial connects to the host end of a virtio-serial port: the unix
// socket of a QEMU `-chardev socket,server=on` (or a libvirt `<channel
// type='unix'>`). QEMU is the listener, so "accepting" means dialling it,
// retrying while QEMU is not there yet.
//
// The stream outlives our connections: bytes the guest wrote while no one
// was connected wait in the port, and a frame may have been cut when an
// earlier connection ended. The session layer resynchronises on Hello.
type VirtioSerial struct {
	Path string
	// MaxBackoff caps the wait between dial attempts (default 5 s).
	MaxBackoff time.Duration
	Logger     hclog.Logger

	mu     sync.Mutex
	closed bool
}

var _ Channel = (*VirtioSerial)(nil)

// Accept dials the socket, retrying with backoff until it answers or ctx
// ends. The first failure of a run of failures is logged; the rest are not.
func (v *VirtioSerial) Accept(ctx context.Context) (net.Conn, error) {
	maxWait := v.MaxBackoff
	if maxWait <= 0 {
		maxWait = 5 * time.Second
	}
	var d net.Dialer
	for attempt := 0; ; attempt++ {
		v.mu.Lock()
		closed := v.closed
		v.mu.Unlock()
		if closed {
			return nil, net.ErrClosed
		}
		conn, err := d.DialContext(ctx, "unix", v.Path)
		if err == nil {
			return conn, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if attempt == 0 && v.Logger != nil {
			v.Logger.Warn("agent channel not reachable, retrying", "socket", v.Path, "error", err,
				"hint", "is the VM running with a virtserialport on this chardev socket?")
		}
		if err := Sleep(ctx, backoff(attempt, maxWait)); err != nil {
			return nil, err
		}
	}
}

// Close makes later Accept calls fail.
func (v *VirtioSerial) Close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.closed = true
	return nil
}

func (v *VirtioSerial) String() string { return fmt.Sprintf("virtio-serial:%s", v.Path) }
