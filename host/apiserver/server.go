// Package apiserver serves the actuator's HTTP API: VM status with the
// reasons for each decision, the event log, a live stream of reports, decisions and
// scaling events, operator controls, Prometheus metrics and the embedded
// dashboard. It is served on a unix socket (access by file permissions)
// and, optionally, on TCP with a bearer token.
//
// Every client is untrusted: request bodies are bounded, invalid input
// is a 4xx naming the field, and nothing a client sends or fails to read
// can block a VM's controller. The package decides nothing about scaling
// and changes VMs only through the actuator's controls. The API's types
// and its client are package api, which imports neither the actuator nor
// the hypervisors.
package apiserver

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/net/netutil"

	"github.com/hotplugheaven/hotplug/host/actuator"
	"github.com/hotplugheaven/hotplug/host/api"
	"github.com/hotplugheaven/hotplug/host/engine"
)

// Options configure a Server.
type Options struct {
	// Actuator is the actuator served. Required.
	Actuator *actuator.Actuator
	// Hub and Metrics are the observers given to actuator.New; nil
	// disables /v1/stream and /metrics.
	Hub     *Hub
	Metrics *Metrics
	// EventLog is the path of the event log file.
	EventLog string
	// Version is reported by /healthz.
	Version string
	Logger  hclog.Logger
}

// Server serves the API.
type Server struct {
	act      *actuator.Actuator
	hub      *Hub
	metrics  *Metrics
	eventLog string
	version  string
	log      hclog.Logger
	handler  http.Handler
	started  time.Time

	done     chan struct{} // closed by Shutdown: ends streams
	doneOnce sync.Once
	mu       sync.Mutex
	servers  []*http.Server
}

// Request limits.
const (
	maxBody          = 64 << 10
	maxHeaderBytes   = 32 << 10
	controlTimeout   = 10 * time.Minute // a manual resize may unplug several CPUs, each waiting for the guest
	jsonWriteTimeout = 30 * time.Second
	// maxConns bounds open connections on the unix socket (TCP has its
	// own limits: conns.go).
	maxConns = 256
)

// New builds the server. It opens no socket: see Serve.
func New(o Options) (*Server, error) {
	if o.Actuator == nil {
		return nil, errors.New("api: no actuator")
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	s := &Server{act: o.Actuator, hub: o.Hub, metrics: o.Metrics, eventLog: o.EventLog, version: o.Version,
		log: o.Logger, started: time.Now(), done: make(chan struct{})}
	if s.hub == nil {
		s.hub = NewHub() // never fed: the stream stays silent
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.serveHealth)
	mux.HandleFunc("GET /v1/vms", s.serveVMs)
	mux.HandleFunc("GET /v1/vms/{id}", s.withVM(s.serveVM))
	mux.HandleFunc("GET /v1/vms/{id}/history", s.withVM(s.serveHistory))
	mux.HandleFunc("PUT /v1/vms/{id}/policy", s.withVM(s.servePolicy))
	mux.HandleFunc("POST /v1/vms/{id}/pause", s.withVM(s.servePause))
	mux.HandleFunc("POST /v1/vms/{id}/resume", s.withVM(s.serveResume))
	mux.HandleFunc("POST /v1/vms/{id}/vcpus", s.withVM(s.serveVCPUs))
	mux.HandleFunc("POST /v1/vms/{id}/memory", s.withVM(s.serveMemory))
	mux.HandleFunc("GET /v1/events", s.serveEvents)
	mux.HandleFunc("GET /v1/stream", s.serveStream)
	if s.metrics != nil {
		s.metrics.attach(s.act)
		mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{
			ErrorLog: stdLog(s.log), MaxRequestsInFlight: 4, Timeout: 10 * time.Second}))
	}
	mux.Handle("GET /", dashboard())
	// A browser page of another site must not drive the actuator through
	// a user's forwarded socket or token (CSRF): unsafe methods from a
	// cross-origin browser context are refused.
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusForbidden, "", "cross-origin request refused")
	}))
	s.handler = cop.Handler(recoverer(s.log, mux))
	return s, nil
}

// Handler is the API without authentication, as served on the unix
// socket (whose file mode is the access control).
func (s *Server) Handler() http.Handler { return s.handler }

// Listen says how Serve serves one listener.
type Listen struct {
	// Token, when set, is required of every request but /healthz and the
	// dashboard's static files ("Authorization: Bearer TOKEN"). A TCP
	// listener must have one.
	Token *Token
	// TLS, when set, serves HTTPS on a TCP listener (HTTP/1.1 only).
	TLS *tls.Config
}

// Transports, as the stream's budgets and the request context know them.
const (
	transportUnix = "unix"
	transportTCP  = "tcp"
)

type ctxKey int

const (
	transportKey ctxKey = iota // the listener's transport
	connKey                    // the request's net.Conn
)

// Timeouts per transport. TCP peers are untrusted until they send the
// token: a connection that says nothing useful is closed quickly.
const (
	tcpReadHeaderTimeout  = 5 * time.Second
	tcpIdleTimeout        = 30 * time.Second
	unixReadHeaderTimeout = 10 * time.Second
	unixIdleTimeout       = 2 * time.Minute
)

// Serve serves the API on ln until ctx ends or Shutdown. A unix socket
// (access by file mode) needs no token; a TCP listener needs one, and
// has its connections bounded per peer address and in all (see
// connLimiter), and its stream clients budgeted apart from the socket's.
func (s *Server) Serve(ctx context.Context, ln net.Listener, o Listen) error {
	transport := transportUnix
	if strings.HasPrefix(ln.Addr().Network(), "tcp") {
		transport = transportTCP
	}
	if transport == transportTCP && o.Token == nil {
		ln.Close()
		return errors.New("api: a TCP listener needs a token")
	}
	if transport == transportUnix && o.TLS != nil {
		ln.Close()
		return errors.New("api: TLS is for TCP listeners")
	}
	h := s.handler
	if o.Token != nil {
		h = o.Token.require(h)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: unixReadHeaderTimeout, ReadTimeout: 30 * time.Second,
		IdleTimeout: unixIdleTimeout, MaxHeaderBytes: maxHeaderBytes, ErrorLog: stdLog(s.log),
		BaseContext: func(net.Listener) context.Context { return context.WithValue(ctx, transportKey, transport) },
		ConnContext: func(ctx context.Context, c net.Conn) context.Context { return context.WithValue(ctx, connKey, c) }}
	if transport == transportTCP {
		lim := newConnLimiter(ln, tcpMaxConnsPerAddr, tcpMaxConns)
		ln = lim
		srv.ConnState = lim.connState
		srv.ReadHeaderTimeout, srv.IdleTimeout = tcpReadHeaderTimeout, tcpIdleTimeout
		if o.TLS != nil {
			cfg := o.TLS.Clone()
			cfg.NextProtos = []string{"http/1.1"}
			if cfg.MinVersion == 0 {
				cfg.MinVersion = tls.VersionTLS12
			}
			// No HTTP/2: one request per connection at a time keeps the
			// connection limits and stream budgets what they say.
			srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
			ln = tls.NewListener(ln, cfg)
		}
	} else {
		ln = netutil.LimitListener(ln, maxConns)
	}
	s.mu.Lock()
	select {
	case <-s.done:
		s.mu.Unlock()
		ln.Close()
		return nil
	default:
	}
	s.servers = append(s.servers, srv)
	s.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { s.Shutdown() })
	defer stop()
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops every Serve: streams end at once, other requests get up
// to five seconds to finish.
func (s *Server) Shutdown() {
	s.doneOnce.Do(func() { close(s.done) })
	s.mu.Lock()
	servers := s.servers
	s.servers = nil
	s.mu.Unlock()
	for _, srv := range servers {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if srv.Shutdown(ctx) != nil {
			srv.Close()
		}
		cancel()
	}
}

func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, api.Health{Status: "ok", Version: s.version,
		UptimeSeconds: time.Since(s.started).Seconds(), VMs: len(s.act.VMs())})
}

func (s *Server) serveVMs(w http.ResponseWriter, r *http.Request) {
	list := api.VMList{VMs: []api.VM{}}
	for _, v := range s.act.VMs() {
		list.VMs = append(list.VMs, viewOf(v.Status()))
	}
	list.Host.VCPUBudget, list.Host.VCPUs = s.act.Budget()
	writeJSON(w, http.StatusOK, list)
}

// withVM resolves {id} to a VM or answers 404.
func (s *Server) withVM(h func(http.ResponseWriter, *http.Request, *actuator.VM)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		v := s.act.VM(id)
		if v == nil {
			writeError(w, http.StatusNotFound, "id", fmt.Sprintf("no VM named %q", clip(id)))
			return
		}
		h(w, r, v)
	}
}

func (s *Server) serveVM(w http.ResponseWriter, r *http.Request, v *actuator.VM) {
	writeJSON(w, http.StatusOK, viewOf(v.Status()))
}

func (s *Server) serveHistory(w http.ResponseWriter, r *http.Request, v *actuator.VM) {
	writeJSON(w, http.StatusOK, api.History{Points: s.hub.History(v.Name())})
}

func (s *Server) servePause(w http.ResponseWriter, r *http.Request, v *actuator.VM) {
	s.control(w, r, v, "pause", func(ctx context.Context) error { return v.Pause(ctx) })
}

func (s *Server) serveResume(w http.ResponseWriter, r *http.Request, v *actuator.VM) {
	s.control(w, r, v, "resume", func(ctx context.Context) error { return v.Resume(ctx) })
}

func (s *Server) serveVCPUs(w http.ResponseWriter, r *http.Request, v *actuator.VM) {
	var req api.VCPUsRequest
	if aerr := decodeBody(w, r, &req, map[string]bool{"vcpus": true}); aerr != nil {
		aerr.write(w)
		return
	}
	if req.VCPUs < 1 || req.VCPUs > 1024 {
		writeError(w, http.StatusBadRequest, "vcpus", fmt.Sprintf("must be from 1 to 1024, got %d", req.VCPUs))
		return
	}
	s.control(w, r, v, fmt.Sprintf("set vcpus to %d", req.VCPUs), func(ctx context.Context) error { return v.SetVCPUs(ctx, req.VCPUs) })
}

// maxMemoryRequest bounds a memory request: 64 TiB.
const maxMemoryRequest = 64 << 40

func (s *Server) serveMemory(w http.ResponseWriter, r *http.Request, v *actuator.VM) {
	var req api.MemoryRequest
	if aerr := decodeBody(w, r, &req, map[string]bool{"bytes": true, "force": true}); aerr != nil {
		aerr.write(w)
		return
	}
	if req.Bytes < 1<<20 || req.Bytes > maxMemoryRequest {
		writeError(w, http.StatusBadRequest, "bytes", fmt.Sprintf("must be from 1 MiB to 64 TiB, got %d", req.Bytes))
		return
	}
	s.control(w, r, v, fmt.Sprintf("set memory to %d MiB", req.Bytes>>20), func(ctx context.Context) error { return v.SetMemory(ctx, req.Bytes, req.Force) })
}

// control runs an operator action and answers with the VM's view.
func (s *Server) control(w http.ResponseWriter, r *http.Request, v *actuator.VM, what string, f func(context.Context) error) {
	ctx, cancel := context.WithTimeout(r.Context(), controlTimeout)
	defer cancel()
	err := f(ctx)
	s.log.Info("operator request", "vm", v.Name(), "action", what, "remote", remote(r), "error", err)
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, viewOf(v.Status()))
	case errors.As(err, new(*engine.FieldError)):
		policyError(w, err)
	case errors.Is(err, actuator.ErrOutOfRange):
		writeError(w, http.StatusBadRequest, "", fmt.Sprintf("vm %s: %s: %v", v.Name(), what, err))
	case errors.Is(err, actuator.ErrUnsupported):
		writeError(w, http.StatusConflict, "", fmt.Sprintf("vm %s: %s: %v", v.Name(), what, err))
	case errors.Is(err, actuator.ErrNotRunning):
		writeError(w, http.StatusServiceUnavailable, "", fmt.Sprintf("vm %s: %v", v.Name(), err))
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusGatewayTimeout, "", fmt.Sprintf("vm %s: %s did not finish in time; it may still complete (see the events)", v.Name(), what))
	default:
		// The actuator tried and the hypervisor or guest failed.
		writeError(w, http.StatusBadGateway, "", fmt.Sprintf("vm %s: %s: %v", v.Name(), what, err))
	}
}

func stdLog(l hclog.Logger) *log.Logger {
	return l.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})
}

func remote(r *http.Request) string {
	if r.RemoteAddr == "" || r.RemoteAddr == "@" {
		return "unix"
	}
	return r.RemoteAddr
}

type apiError struct {
	status int
	api.Error
}

func (e *apiError) write(w http.ResponseWriter) { writeJSON(w, e.status, e.Error) }

func badRequest(field, msg string) *apiError {
	return &apiError{status: http.StatusBadRequest, Error: api.Error{Field: field, Error: fieldMsg(field, msg)}}
}

func fieldMsg(field, msg string) string {
	if field == "" {
		return msg
	}
	return field + ": " + msg
}

func writeError(w http.ResponseWriter, status int, field, msg string) {
	writeJSON(w, status, api.Error{Error: fieldMsg(field, msg), Field: field})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(api.Error{Error: "encoding the answer: " + err.Error()})
	}
	// A client that does not read its answer must not hold the handler
	// for ever (the server has no WriteTimeout: streams last).
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(jsonWriteTimeout))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// clip shortens client-supplied text echoed in an error.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// recoverer turns a panic in a handler into a 500 rather than a dropped
// connection with no explanation (net/http would recover it too, but
// silently to the client).
func recoverer(log hclog.Logger, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				log.Error("API handler panicked", "method", r.Method, "path", r.URL.Path, "panic", p)
				writeError(w, http.StatusInternalServerError, "", "internal error (logged)")
			}
		}()
		h.ServeHTTP(w, r)
	})
}
