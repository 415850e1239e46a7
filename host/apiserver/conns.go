package apiserver

import (
	"container/list"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
)

// Limits of a TCP listener, whose peers are untrusted until they send the
// token.
const (
	// tcpMaxConns bounds a TCP listener's open connections. When it is
	// reached, a new connection is taken by closing the oldest one that
	// has not sent a request yet (or sits idle between requests), so
	// peers that connect and say nothing cannot lock the operator out.
	tcpMaxConns = 256
	// tcpMaxConnsPerAddr bounds the open connections of one peer address.
	tcpMaxConnsPerAddr = 16
)

// connLimiter is a TCP listener that bounds connections per peer address
// and in all, evicting the stalest connection without a request in flight
// to admit a new one. Its ConnState hook must be given to the
// http.Server, which is how it learns which connections are busy.
type connLimiter struct {
	net.Listener
	perAddr, total int

	mu     sync.Mutex
	byAddr map[string]int
	open   int
	quiet  list.List // *limitedConn not serving a request: new or idle, oldest first

	refusedAddr, evicted atomic.Uint64
}

func newConnLimiter(ln net.Listener, perAddr, total int) *connLimiter {
	return &connLimiter{Listener: ln, perAddr: perAddr, total: total, byAddr: map[string]int{}}
}

type limitedConn struct {
	net.Conn
	l    *connLimiter
	addr string
	elem *list.Element // in l.quiet, or nil (under l.mu)
	once sync.Once
}

// Accept returns the next connection within the limits; connections over
// an address's limit are closed at once.
func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		addr := peerHost(c.RemoteAddr())
		l.mu.Lock()
		if l.byAddr[addr] >= l.perAddr {
			l.mu.Unlock()
			l.refusedAddr.Add(1)
			c.Close()
			continue
		}
		var evict *limitedConn
		if l.open >= l.total {
			front := l.quiet.Front()
			if front == nil { // every connection is serving a request
				l.mu.Unlock()
				l.evicted.Add(1)
				c.Close()
				continue
			}
			evict = l.quiet.Remove(front).(*limitedConn)
			evict.elem = nil
		}
		lc := &limitedConn{Conn: c, l: l, addr: addr}
		l.byAddr[addr]++
		l.open++
		lc.elem = l.quiet.PushBack(lc)
		l.mu.Unlock()
		if evict != nil {
			l.evicted.Add(1)
			evict.Close()
		}
		return lc, nil
	}
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		l := c.l
		l.mu.Lock()
		defer l.mu.Unlock()
		if c.elem != nil {
			l.quiet.Remove(c.elem)
			c.elem = nil
		}
		l.open--
		if l.byAddr[c.addr]--; l.byAddr[c.addr] <= 0 {
			delete(l.byAddr, c.addr)
		}
	})
	return err
}

// connState is the http.Server's ConnState hook: a connection serving a
// request cannot be evicted; a new or idle one can.
func (l *connLimiter) connState(c net.Conn, st http.ConnState) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	lc, ok := c.(*limitedConn)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch st {
	case http.StateActive:
		if lc.elem != nil {
			l.quiet.Remove(lc.elem)
			lc.elem = nil
		}
	case http.StateIdle:
		if lc.elem == nil {
			lc.elem = l.quiet.PushBack(lc)
		}
	}
}

// peerHost is the address part of a peer's address: what the
// per-address limits count.
func peerHost(a net.Addr) string {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}
