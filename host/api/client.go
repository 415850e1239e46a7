package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hotplugheaven/hotplug/host/engine"
)

// Client talks to the API, on the unix socket or over TCP with a token.
type Client struct {
	base   string // http://host[:port]
	where  string // for errors: the socket path or the URL
	token  string
	hc     *http.Client // requests with a timeout
	stream *http.Client // the stream: no overall timeout
}

// maxAnswer bounds an answer read by the client.
const maxAnswer = 64 << 20

// NewUnixClient returns a client for the API socket at path.
func NewUnixClient(path string) *Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return &Client{base: "http://actuator", where: path,
		hc: &http.Client{Transport: tr, Timeout: 15 * time.Minute}, stream: &http.Client{Transport: tr}}
}

// NewTCPClient returns a client for the API at baseURL
// (http://host:port) presenting token.
func NewTCPClient(baseURL, token string) *Client { return NewTCPClientTLS(baseURL, token, nil) }

// NewTCPClientTLS is NewTCPClient with the TLS configuration for an
// https baseURL (e.g. RootCAs for the actuator's own certificate); nil
// uses the system's roots.
func NewTCPClientTLS(baseURL, token string, cfg *tls.Config) *Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if cfg != nil {
		tr.TLSClientConfig = cfg.Clone()
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), where: baseURL, token: token,
		hc: &http.Client{Transport: tr, Timeout: 15 * time.Minute}, stream: &http.Client{Transport: tr}}
}

// ClientError is an error answer from the API.
type ClientError struct {
	Status  int
	Field   string
	Message string
}

func (e *ClientError) Error() string { return e.Message }

// ErrUnreachable wraps failures to reach the actuator at all.
var ErrUnreachable = errors.New("cannot reach the actuator")

func (c *Client) do(ctx context.Context, hc *http.Client, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("%w at %s: %v (is hotplug-actuator running, and may you use its socket?)", ErrUnreachable, c.where, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var e Error
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = fmt.Sprintf("%s %s: %s", method, path, resp.Status)
		}
		return nil, &ClientError{Status: resp.StatusCode, Field: e.Field, Message: e.Error}
	}
	return resp, nil
}

func (c *Client) call(ctx context.Context, method, path string, body, out any) error {
	resp, err := c.do(ctx, c.hc, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxAnswer)).Decode(out); err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	return nil
}

// Health calls GET /healthz.
func (c *Client) Health(ctx context.Context) (Health, error) {
	var h Health
	return h, c.call(ctx, http.MethodGet, "/healthz", nil, &h)
}

// VMs calls GET /v1/vms.
func (c *Client) VMs(ctx context.Context) (VMList, error) {
	var l VMList
	return l, c.call(ctx, http.MethodGet, "/v1/vms", nil, &l)
}

// VM calls GET /v1/vms/{name}.
func (c *Client) VM(ctx context.Context, name string) (VM, error) {
	var v VM
	return v, c.call(ctx, http.MethodGet, "/v1/vms/"+url.PathEscape(name), nil, &v)
}

// Pause calls POST /v1/vms/{name}/pause.
func (c *Client) Pause(ctx context.Context, name string) (VM, error) {
	var v VM
	return v, c.call(ctx, http.MethodPost, "/v1/vms/"+url.PathEscape(name)+"/pause", nil, &v)
}

// Resume calls POST /v1/vms/{name}/resume.
func (c *Client) Resume(ctx context.Context, name string) (VM, error) {
	var v VM
	return v, c.call(ctx, http.MethodPost, "/v1/vms/"+url.PathEscape(name)+"/resume", nil, &v)
}

// SetVCPUs calls POST /v1/vms/{name}/vcpus.
func (c *Client) SetVCPUs(ctx context.Context, name string, n int) (VM, error) {
	var v VM
	return v, c.call(ctx, http.MethodPost, "/v1/vms/"+url.PathEscape(name)+"/vcpus", VCPUsRequest{VCPUs: n}, &v)
}

// SetMemory calls POST /v1/vms/{name}/memory.
func (c *Client) SetMemory(ctx context.Context, name string, req MemoryRequest) (VM, error) {
	var v VM
	return v, c.call(ctx, http.MethodPost, "/v1/vms/"+url.PathEscape(name)+"/memory", req, &v)
}

// SetPolicy calls PUT /v1/vms/{name}/policy with the given keys.
func (c *Client) SetPolicy(ctx context.Context, name string, keys map[string]any) (VM, error) {
	var v VM
	return v, c.call(ctx, http.MethodPut, "/v1/vms/"+url.PathEscape(name)+"/policy", keys, &v)
}

// Events calls GET /v1/events for one page.
func (c *Client) Events(ctx context.Context, q EventQuery) (EventsPage, error) {
	v := url.Values{}
	if q.VM != "" {
		v.Set("vm", q.VM)
	}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.Format(time.RFC3339Nano))
	}
	if !q.Until.IsZero() {
		v.Set("until", q.Until.Format(time.RFC3339Nano))
	}
	if q.After > 0 {
		v.Set("cursor", strconv.FormatUint(q.After, 10))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.WithStarted {
		v.Set("started", "true")
	}
	var p EventsPage
	return p, c.call(ctx, http.MethodGet, "/v1/events?"+v.Encode(), nil, &p)
}

// Stream calls GET /v1/stream and hands each message to fn until ctx
// ends, the server closes the stream or fn returns an error. connected,
// if not nil, is called once the server has accepted the subscription.
func (c *Client) Stream(ctx context.Context, vm string, types []string, connected func(), fn func(typ string, data []byte) error) error {
	v := url.Values{}
	if vm != "" {
		v.Set("vm", vm)
	}
	if len(types) > 0 {
		v.Set("types", strings.Join(types, ","))
	}
	resp, err := c.do(ctx, c.stream, http.MethodGet, "/v1/stream?"+v.Encode(), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	stop := context.AfterFunc(ctx, func() { resp.Body.Close() })
	defer stop()
	if connected != nil {
		connected()
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	typ, data := "", []byte(nil)
	for sc.Scan() {
		line := sc.Bytes()
		switch {
		case len(line) == 0:
			if data != nil {
				if err := fn(typ, data); err != nil {
					return err
				}
			}
			typ, data = "", nil
		case line[0] == ':':
		case bytes.HasPrefix(line, []byte("event: ")):
			typ = string(line[len("event: "):])
		case bytes.HasPrefix(line, []byte("data: ")):
			data = append(data, line[len("data: "):]...)
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("stream: %w", err)
	}
	return fmt.Errorf("stream: the actuator closed it")
}

// decisionJSON reads an engine.Decision back: engine.Action writes itself
// as a word but has no reader.
type decisionJSON struct {
	Action   string          `json:"action"`
	From     int             `json:"from"`
	To       int             `json:"to"`
	Rule     string          `json:"rule"`
	Reason   string          `json:"reason"`
	Evidence engine.Evidence `json:"evidence"`
}

func (d decisionJSON) decision() engine.Decision {
	out := engine.Decision{From: d.From, To: d.To, Rule: d.Rule, Reason: d.Reason, Evidence: d.Evidence}
	for _, a := range []engine.Action{engine.Hold, engine.ScaleUp, engine.ScaleDown} {
		if a.String() == d.Action {
			out.Action = a
		}
	}
	return out
}

// UnmarshalJSON reads a VM view written by the server.
func (v *VM) UnmarshalJSON(b []byte) error {
	type plain VM
	var aux struct {
		plain
		LastDecision decisionJSON `json:"last_decision"`
	}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	*v = VM(aux.plain)
	v.LastDecision = aux.LastDecision.decision()
	return nil
}

// UnmarshalJSON reads a decision message written by the server.
func (m *DecisionMessage) UnmarshalJSON(b []byte) error {
	type plain DecisionMessage
	var aux struct {
		plain
		Decision decisionJSON `json:"decision"`
	}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	*m = DecisionMessage(aux.plain)
	m.Decision = aux.Decision.decision()
	return nil
}
