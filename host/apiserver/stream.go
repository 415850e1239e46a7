package apiserver

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/hotplugheaven/hotplug/host/actuator"
	"github.com/hotplugheaven/hotplug/host/api"
	"github.com/hotplugheaven/hotplug/host/engine"
	"github.com/hotplugheaven/hotplug/host/eventlog"
)

// Limits of the stream.
const (
	// clientBuffer is how many messages wait for a slow client before it
	// starts missing them.
	clientBuffer = 256
	// slowGrace is how long a client may stay behind (its buffer full,
	// messages missed) before it is dropped: it is not keeping up.
	slowGrace = 5 * time.Second
	// maxClients bounds concurrent stream clients per transport, so
	// network peers never take the unix socket's (the local dashboard's)
	// slots; more get 503.
	maxClients = 64
	// maxClientsPerAddr bounds one TCP peer address's stream clients.
	maxClientsPerAddr = 8
	// streamSendBuffer is the socket send buffer of a TCP stream client:
	// small, so one that does not read is found out after kilobytes, not
	// megabytes.
	streamSendBuffer = 32 << 10
	// rejectedEvery and rejectedBurst bound "rejected" messages per VM; a
	// guest whose every message is refused would otherwise decide the
	// stream's volume. The rest are counted in the next one.
	rejectedEvery = time.Second
	rejectedBurst = 5
	// historyLen is how many points per VM the hub keeps for a dashboard
	// opened late (an hour at 5 s).
	historyLen = 720
	// keepalive is the comment line sent to idle clients, so proxies and
	// dead peers are noticed.
	keepalive = 15 * time.Second
	// streamWriteTimeout drops a client whose socket stays full.
	streamWriteTimeout = 5 * time.Second
)

// message is one encoded stream message.
type message struct {
	id   uint64
	typ  string
	vm   string
	data []byte
}

// Hub is the actuator observer behind GET /v1/stream: it encodes each
// report, decision, event and rejection once and hands it to every
// subscribed client without ever waiting for one. Each client has a
// bounded buffer; a client that falls behind is told how many messages
// it missed, and one that stops reading altogether is dropped.
//
// It also keeps the last historyLen points of each VM for the dashboard.
type Hub struct {
	nextID atomic.Uint64

	mu       sync.Mutex
	clients  map[*client]struct{}
	count    map[origin]int // clients per transport, and per TCP peer address
	history  map[string]*ring
	policy   map[string]engine.Policy // each VM's policy at its last report
	rejected map[string]*rejectBudget
	now      func() time.Time // the clock (tests set it)
}

var _ actuator.Observer = (*Hub)(nil)

// NewHub returns a hub with no clients.
func NewHub() *Hub {
	return &Hub{clients: map[*client]struct{}{}, count: map[origin]int{}, history: map[string]*ring{},
		policy: map[string]engine.Policy{}, rejected: map[string]*rejectBudget{}, now: time.Now}
}

// origin is where a stream client came from: a transport, and for TCP
// the peer's address.
type origin struct{ transport, addr string }

type client struct {
	ch     chan message
	vm     string          // empty: all VMs
	types  map[string]bool // nil: all types
	from   origin
	missed atomic.Uint64
	behind time.Time     // when it first missed a message since it last caught up (under Hub.mu)
	gone   chan struct{} // closed when the hub drops the client
	once   sync.Once
}

func (c *client) wants(m message) bool {
	return (c.vm == "" || m.vm == "" || c.vm == m.vm) && (c.types == nil || c.types[m.typ])
}

func (c *client) drop() { c.once.Do(func() { close(c.gone) }) }

// errTooMany says why a client was not subscribed.
type errTooMany string

func (e errTooMany) Error() string { return string(e) }

// subscribe adds a client from o, within its transport's budget and,
// over TCP, its address's.
func (h *Hub) subscribe(vm string, types map[string]bool, o origin) (*client, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	all := origin{transport: o.transport}
	if h.count[all] >= maxClients {
		return nil, errTooMany(fmt.Sprintf("too many stream clients on %s (at most %d)", o.transport, maxClients))
	}
	if o.addr != "" && h.count[o] >= maxClientsPerAddr {
		return nil, errTooMany(fmt.Sprintf("too many stream clients from %s (at most %d)", o.addr, maxClientsPerAddr))
	}
	c := &client{ch: make(chan message, clientBuffer), vm: vm, types: types, from: o, gone: make(chan struct{})}
	h.clients[c] = struct{}{}
	h.count[all]++
	if o.addr != "" {
		h.count[o]++
	}
	return c, nil
}

// removeLocked forgets c and drops it.
func (h *Hub) removeLocked(c *client) {
	if _, ok := h.clients[c]; ok {
		delete(h.clients, c)
		dec := func(k origin) {
			if h.count[k]--; h.count[k] <= 0 {
				delete(h.count, k)
			}
		}
		dec(origin{transport: c.from.transport})
		if c.from.addr != "" {
			dec(c.from)
		}
	}
	c.drop()
}

func (h *Hub) unsubscribe(c *client) {
	h.mu.Lock()
	h.removeLocked(c)
	h.mu.Unlock()
}

// Clients is the number of connected stream clients.
func (h *Hub) Clients() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients)
}

// publish encodes v once and offers it to every client that wants it.
// It never blocks: a full buffer counts a missed message instead, and a
// client that stays behind for slowGrace is dropped.
func (h *Hub) publish(typ, vm string, v any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.publishLocked(typ, vm, v, h.now())
}

func (h *Hub) publishLocked(typ, vm string, v any, now time.Time) {
	if len(h.clients) == 0 {
		return
	}
	data, err := json.Marshal(v)
	if err != nil {
		// Only NaN or infinite numbers from a guest get here; the
		// report is already sanitised by the engine, so drop the message
		// rather than the stream.
		return
	}
	m := message{id: h.nextID.Add(1), typ: typ, vm: vm, data: data}
	for c := range h.clients {
		if !c.wants(m) {
			continue
		}
		select {
		case c.ch <- m:
			if len(c.ch) < clientBuffer/2 {
				c.behind = time.Time{} // it is reading
			}
		default:
			c.missed.Add(1)
			if c.behind.IsZero() {
				c.behind = now
			} else if now.Sub(c.behind) >= slowGrace {
				h.removeLocked(c)
			}
		}
	}
}

// Report implements actuator.Observer. The history point is cheap; the
// VM view (with its explanation text) is built only when a client wants
// the message.
func (h *Hub) Report(vm string, st actuator.Status) {
	h.record(vm, st)
	if !h.wanted(api.TypeReport, vm) {
		return
	}
	h.publish(api.TypeReport, vm, viewOf(st))
}

// wanted reports whether any client would take a message of typ about vm.
func (h *Hub) wanted(typ, vm string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := message{typ: typ, vm: vm}
	for c := range h.clients {
		if c.wants(m) {
			return true
		}
	}
	return false
}

// Decision implements actuator.Observer.
func (h *Hub) Decision(vm string, d engine.Decision, at time.Time) {
	if !h.wanted(api.TypeDecision, vm) {
		return
	}
	h.mu.Lock()
	p, ok := h.policy[vm]
	h.mu.Unlock()
	if !ok {
		p = engine.DefaultPolicy() // no report yet: only Upper is used, to mark samples
	}
	x, hot := api.Explain(d, at, p)
	h.publish(api.TypeDecision, vm, api.DecisionMessage{VM: vm, At: at, Decision: d, Hotspot: hot, Explanation: x})
}

// Event implements actuator.Observer.
func (h *Hub) Event(ev eventlog.Event, committed bool) {
	h.publish(api.TypeEvent, ev.VM, api.EventMessage{Event: ev, Committed: committed})
}

// rejectBudget bounds one VM's "rejected" messages.
type rejectBudget struct {
	lim        *rate.Limiter
	suppressed uint64
}

// Rejected implements actuator.Observer. At most rejectedBurst messages,
// then one per rejectedEvery, go out per VM; each says how many were
// held back before it.
func (h *Hub) Rejected(vm, reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	b := h.rejected[vm]
	if b == nil {
		b = &rejectBudget{lim: rate.NewLimiter(rate.Every(rejectedEvery), rejectedBurst)}
		h.rejected[vm] = b
	}
	now := h.now()
	if !b.lim.AllowN(now, 1) {
		b.suppressed++
		return
	}
	n := b.suppressed
	b.suppressed = 0
	h.publishLocked(api.TypeRejected, vm, api.RejectedMessage{VM: vm, Reason: reason, Suppressed: n}, now)
}

// point is one report's figures as the ring keeps them: with its time
// (kept apart, so nothing is padded) 28 bytes, a fifth of an api.Point,
// so an hour of history costs about 20 KB per VM.
type point struct {
	util, runq, resp, sla float32
	online, current       uint16
}

func pointOf(st actuator.Status) point {
	g := st.Signals
	p := point{util: float32(finite(g.Utilisation)), runq: float32(finite(g.RunQ.P95)),
		online: uint16(min(st.Online, math.MaxUint16)), current: uint16(min(st.Current, math.MaxUint16))}
	if len(g.Apps) > 0 {
		a := g.Apps[0]
		sla := a.SLATarget
		if sla <= 0 {
			sla = a.SLAMean
		}
		p.resp, p.sla = float32(finite(a.RespP95)), float32(finite(sla))
	}
	return p
}

func (p point) api(at int64) api.Point {
	return api.Point{At: time.Unix(0, at).UTC(), Utilisation: f64(p.util), RunQP95: f64(p.runq),
		Online: int(p.online), Current: int(p.current), RespP95: f64(p.resp), SLA: f64(p.sla)}
}

// f64 widens f to the float64 that prints as f does (0.7, not
// 0.699999988079071).
func f64(f float32) float64 {
	v, _ := strconv.ParseFloat(strconv.FormatFloat(float64(f), 'g', -1, 32), 64)
	return v
}

// memPoint is one report's memory figures, MiB: kept only for VMs with a
// memory device, so the others pay nothing for them.
type memPoint struct{ vm, guestTotal, guestUsed uint32 }

func memPointOf(st actuator.Status) memPoint {
	g := st.Signals
	mib := func(b uint64) uint32 { return uint32(min(b>>20, math.MaxUint32)) }
	return memPoint{vm: mib(st.Memory.Total), guestTotal: mib(g.MemTotal), guestUsed: mib(g.MemTotal - min(g.MemAvailable, g.MemTotal))}
}

// ring is a fixed-size history of points.
type ring struct {
	at   [historyLen]int64 // unix ns
	pts  [historyLen]point
	mem  *[historyLen]memPoint // nil until the VM has a memory device
	next int
	n    int
}

func (h *Hub) record(vm string, st actuator.Status) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.history[vm]
	if r == nil {
		r = &ring{}
		h.history[vm] = r
	}
	h.policy[vm] = st.Policy
	r.at[r.next], r.pts[r.next] = st.Signals.At.UnixNano(), pointOf(st)
	if st.Memory.Device != "" && r.mem == nil {
		r.mem = new([historyLen]memPoint)
	}
	if r.mem != nil {
		r.mem[r.next] = memPointOf(st)
	}
	r.next = (r.next + 1) % historyLen
	r.n = min(r.n+1, historyLen)
}

// History returns the VM's recent points, oldest first.
func (h *Hub) History(vm string) []api.Point {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.history[vm]
	if r == nil {
		return []api.Point{}
	}
	out := make([]api.Point, 0, r.n)
	for i := range r.n {
		j := (r.next - r.n + i + historyLen) % historyLen
		p := r.pts[j].api(r.at[j])
		if r.mem != nil {
			m := r.mem[j]
			p.Memory, p.GuestTotal, p.GuestUsed = uint64(m.vm)<<20, uint64(m.guestTotal)<<20, uint64(m.guestUsed)<<20
		}
		out = append(out, p)
	}
	return out
}

// serveStream is GET /v1/stream: server-sent events. Query: vm (one VM),
// types (comma-separated subset of report, decision, event, rejected).
func (s *Server) serveStream(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	vm := q.Get("vm")
	if vm != "" && s.act.VM(vm) == nil {
		writeError(w, http.StatusNotFound, "vm", fmt.Sprintf("no VM named %q", vm))
		return
	}
	var types map[string]bool
	if t := q.Get("types"); t != "" {
		types = map[string]bool{}
		for _, x := range strings.Split(t, ",") {
			if !slices.Contains(api.StreamTypes, x) {
				writeError(w, http.StatusBadRequest, "types", fmt.Sprintf("unknown type %q (known: %s)", x, strings.Join(api.StreamTypes, ", ")))
				return
			}
			types[x] = true
		}
	}
	o := origin{transport: transportUnix}
	if t, _ := r.Context().Value(transportKey).(string); t == transportTCP {
		o = origin{transport: transportTCP, addr: remoteHost(r.RemoteAddr)}
	}
	c, err := s.hub.subscribe(vm, types, o)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "", err.Error())
		return
	}
	defer s.hub.unsubscribe(c)
	if o.transport == transportTCP {
		shrinkSendBuffer(r.Context())
	}

	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	write := func(f func() error) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
		return f() == nil && rc.Flush() == nil
	}
	// Tell the client how long to wait before reconnecting, and that it
	// is connected (EventSource fires open on the first bytes).
	if !write(func() error { _, err := fmt.Fprint(w, "retry: 2000\n: connected\n\n"); return err }) {
		return
	}
	tick := time.NewTicker(keepalive)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.done:
			return
		case <-c.gone:
			// Dropped for not reading: it will not see this, but a
			// client that was merely slow might.
			write(func() error {
				return writeMessage(w, 0, api.TypeMissed, mustJSON(api.MissedMessage{Missed: c.missed.Load()}))
			})
			return
		case <-tick.C:
			if !write(func() error { _, err := fmt.Fprint(w, ": keepalive\n\n"); return err }) {
				return
			}
		case m := <-c.ch:
			ok := write(func() error {
				if n := c.missed.Swap(0); n > 0 {
					if err := writeMessage(w, 0, api.TypeMissed, mustJSON(api.MissedMessage{Missed: n})); err != nil {
						return err
					}
				}
				return writeMessage(w, m.id, m.typ, m.data)
			})
			if !ok {
				return
			}
		}
	}
}

// remoteHost is the address part of an http.Request's RemoteAddr.
func remoteHost(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}

// shrinkSendBuffer gives a TCP stream connection a small send buffer.
func shrinkSendBuffer(ctx context.Context) {
	c, _ := ctx.Value(connKey).(net.Conn)
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	if lc, ok := c.(*limitedConn); ok {
		c = lc.Conn
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(streamSendBuffer)
	}
}

func writeMessage(w http.ResponseWriter, id uint64, typ string, data []byte) error {
	var err error
	if id > 0 {
		_, err = fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", id, typ, data)
	} else {
		_, err = fmt.Fprintf(w, "event: %s\ndata: %s\n\n", typ, data)
	}
	return err
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only for our own fixed types
	}
	return b
}
