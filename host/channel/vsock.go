package channel

import (
	"context"
	"fmt"
	"net"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/mdlayher/vsock"
)

// cidAny is VMADDR_CID_ANY (linux/vm_sockets.h).
const cidAny = 0xFFFFFFFF

// VsockHub listens on one vsock port for all VMs and hands each connection
// to the channel registered for the peer's context id (CID). The CID is set
// by the hypervisor, not the guest, so it is a trustworthy binding; a
// connection from an unregistered CID is closed and logged.
type VsockHub struct {
	ln     net.Listener
	logger hclog.Logger

	mu    sync.Mutex
	byCID map[uint32]*Vsock
	done  chan struct{}
	err   error
}

// ListenVsock listens on port on the host (any CID).
func ListenVsock(port uint32, logger hclog.Logger) (*VsockHub, error) {
	// Bind to VMADDR_CID_ANY: the host's own CID is 2 under vhost-vsock,
	// 1 (local) under vsock_loopback; the peer's CID is what binds a
	// connection to a VM, not ours.
	ln, err := vsock.ListenContextID(cidAny, port, nil)
	if err != nil {
		return nil, fmt.Errorf("agent channel vsock port %d: %w (is the vhost_vsock module loaded?)", port, err)
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	h := &VsockHub{ln: ln, logger: logger, byCID: map[uint32]*Vsock{}, done: make(chan struct{})}
	go h.serve()
	return h, nil
}

func (h *VsockHub) serve() {
	defer close(h.done)
	for {
		c, err := h.ln.Accept()
		if err != nil {
			h.mu.Lock()
			h.err = err
			for _, v := range h.byCID {
				close(v.conns)
			}
			h.byCID = map[uint32]*Vsock{}
			h.mu.Unlock()
			return
		}
		addr, ok := c.RemoteAddr().(*vsock.Addr)
		h.mu.Lock()
		var v *Vsock
		if ok {
			v = h.byCID[addr.ContextID]
		}
		h.mu.Unlock()
		if v == nil {
			h.logger.Warn("vsock connection from an unknown CID refused", "remote", c.RemoteAddr())
			c.Close()
			continue
		}
		select {
		case v.conns <- c:
		default:
			h.logger.Warn("vsock connection refused: the VM's previous connection is still pending", "vm_cid", addr.ContextID)
			c.Close()
		}
	}
}

// Channel registers and returns the channel for cid.
func (h *VsockHub) Channel(cid uint32) (*Vsock, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err != nil {
		return nil, h.err
	}
	if _, dup := h.byCID[cid]; dup {
		return nil, fmt.Errorf("vsock CID %d is bound to two VMs", cid)
	}
	v := &Vsock{hub: h, cid: cid, conns: make(chan net.Conn, 1)}
	h.byCID[cid] = v
	return v, nil
}

// Close stops listening.
func (h *VsockHub) Close() error {
	err := h.ln.Close()
	<-h.done
	return err
}

// Vsock is one VM's share of a VsockHub.
type Vsock struct {
	hub   *VsockHub
	cid   uint32
	conns chan net.Conn
}

var _ Channel = (*Vsock)(nil)

// Accept waits for the VM's next connection.
func (v *Vsock) Accept(ctx context.Context) (net.Conn, error) {
	select {
	case c, ok := <-v.conns:
		if !ok {
			return nil, net.ErrClosed
		}
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close unregisters the CID.
func (v *Vsock) Close() error {
	v.hub.mu.Lock()
	defer v.hub.mu.Unlock()
	if v.hub.byCID[v.cid] == v {
		delete(v.hub.byCID, v.cid)
	}
	return nil
}

func (v *Vsock) String() string { return fmt.Sprintf("vsock:cid=%d", v.cid) }
