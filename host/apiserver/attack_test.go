package apiserver_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/host/api"
	"github.com/hotplugheaven/hotplug/host/apiserver/apitest"
	"github.com/hotplugheaven/hotplug/host/channel"
	"github.com/hotplugheaven/hotplug/host/engine"
	"github.com/hotplugheaven/hotplug/host/eventlog"
	"github.com/hotplugheaven/hotplug/proto"
)

const attackToken = "0123456789abcdef0123456789abcdef"

// from is a dialer whose connections leave from a loopback address of
// their own (all of 127/8 is local), so a test can play many peers.
func from(ip string) *net.Dialer {
	return &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
}

// operatorClient makes one new connection per request from 127.0.0.1, as
// a CLI run does, so every request goes through the listener's accept.
func operatorClient() *http.Client {
	tr := &http.Transport{DialContext: from("127.0.0.1").DialContext, DisableKeepAlives: true}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func authed(t *testing.T, hc *http.Client, method, url string) (time.Duration, int) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+attackToken)
	start := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	resp.Body.Close()
	return time.Since(start), resp.StatusCode
}

// TestTCPPeersCannotStallTheAPI: 300 unauthenticated connections that
// each send one byte and reopen when closed (from one address, then
// spread over 30) leave authenticated requests fast: per-address limits
// refuse most, header timeouts close the rest, and at the total limit
// the stalest silent connection makes way for a new one.
func TestTCPPeersCannotStallTheAPI(t *testing.T) {
	r := apitest.Start(t, apitest.Spec{Name: "web"})
	base := r.ServeTCP(t, attackToken, nil)
	addr := strings.TrimPrefix(base, "http://")
	for _, tc := range []struct {
		name  string
		addrs int
	}{{"300 from one address", 1}, {"300 from 30 addresses", 30}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			var opened atomic.Int64
			for i := range 300 {
				d := from(fmt.Sprintf("127.0.0.%d", 10+i%tc.addrs))
				wg.Add(1)
				go func() {
					defer wg.Done()
					for ctx.Err() == nil {
						c, err := d.DialContext(ctx, "tcp", addr)
						if err != nil {
							time.Sleep(20 * time.Millisecond)
							continue
						}
						opened.Add(1)
						c.Write([]byte("G"))
						c.SetReadDeadline(time.Now().Add(9 * time.Second))
						stop := context.AfterFunc(ctx, func() { c.Close() })
						c.Read(make([]byte, 1)) // until the server closes it
						stop()
						c.Close()
						time.Sleep(20 * time.Millisecond)
					}
				}()
			}
			defer func() { cancel(); wg.Wait() }()
			time.Sleep(2 * time.Second) // the attack takes every slot it can

			hc := operatorClient()
			var lat []time.Duration
			for range 20 {
				d, code := authed(t, hc, "GET", base+"/v1/vms")
				if code != 200 {
					t.Fatalf("authenticated GET /v1/vms: %d", code)
				}
				lat = append(lat, d)
				time.Sleep(100 * time.Millisecond)
			}
			slices.Sort(lat)
			t.Logf("%s: %d hostile connections opened; authenticated GET /v1/vms p50 %v, max %v (20 requests, new connection each)",
				tc.name, opened.Load(), lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond))
			// Before the limits every request waited 9 s for a slot.
			if lat[len(lat)-1] > 2*time.Second {
				t.Errorf("an authenticated request took %v under the attack", lat[len(lat)-1])
			}
		})
	}
}

// openStream sends a stream request on a raw connection from ip and
// returns the connection and the status line; the body is never read.
func openStream(t *testing.T, ip, addr string) (net.Conn, string) {
	t.Helper()
	c, err := from(ip).Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.(*net.TCPConn).SetReadBuffer(4 << 10) // a peer that means not to read
	fmt.Fprintf(c, "GET /v1/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", attackToken)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReaderSize(c, 64).ReadString('\n')
	if err != nil {
		t.Fatalf("stream from %s: %v", ip, err)
	}
	return c, strings.TrimSpace(line)
}

// TestStreamNonReadersCannotTakeTheDashboard: 64 TCP stream clients that
// never read take the TCP budget only; the local dashboard (unix socket)
// still gets its page and its stream, and the non-readers are dropped
// once the stream has anything to send them.
func TestStreamNonReadersCannotTakeTheDashboard(t *testing.T) {
	r := apitest.Start(t, apitest.Spec{Name: "web", Demand: 0.5})
	addr := strings.TrimPrefix(r.ServeTCP(t, attackToken, nil), "http://")
	for i := range 64 {
		if _, status := openStream(t, fmt.Sprintf("127.0.0.%d", 20+i/8), addr); !strings.Contains(status, " 200 ") {
			t.Fatalf("stream client %d: %s", i, status)
		}
	}
	apitest.WaitFor(t, 10*time.Second, "64 TCP stream clients", func() bool { return r.Hub.Clients() == 64 })
	if _, status := openStream(t, "127.0.0.20", addr); !strings.Contains(status, " 503 ") {
		t.Errorf("a ninth stream client from one address: %s, want 503", status)
	}
	if _, status := openStream(t, "127.0.0.99", addr); !strings.Contains(status, " 503 ") {
		t.Errorf("a 65th TCP stream client: %s, want 503", status)
	}

	// The local operator's dashboard: its page and its stream.
	resp, err := r.HTTPClient().Get("http://actuator/")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("dashboard page over the socket: %v %v", resp, err)
	}
	resp.Body.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var got atomic.Int64
	connected := make(chan struct{})
	go r.Client().Stream(ctx, "", nil, func() { close(connected) }, func(string, []byte) error { got.Add(1); return nil })
	select {
	case <-connected:
	case <-time.After(10 * time.Second):
		t.Fatal("the local dashboard's stream did not connect")
	}

	// Give the stream something to send: events of a few KiB, 200 a
	// second, on top of the VM's reports.
	start := time.Now()
	reason := strings.Repeat("x", 4<<10)
	apitest.WaitFor(t, 60*time.Second, "the non-reading clients to be dropped", func() bool {
		for range 4 {
			r.Hub.Event(eventlog.Event{VM: "web", Kind: "scale_up", Reason: reason}, true)
		}
		return r.Hub.Clients() == 1
	})
	t.Logf("64 non-reading TCP stream clients dropped %v after the stream carried ~800 KiB/s; the local stream got %d messages",
		time.Since(start).Round(100*time.Millisecond), got.Load())
	if got.Load() == 0 {
		t.Error("the local dashboard's stream got nothing")
	}
	if _, status := openStream(t, "127.0.0.20", addr); !strings.Contains(status, " 200 ") {
		t.Errorf("a TCP stream client after the drop: %s", status)
	}
}

// hostileGuest plays a VM's agent on a TCP channel: Hello (version 2),
// then whatever the test writes.
func hostileGuest(t *testing.T, addr string) (net.Conn, *proto.Writer) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	w := proto.NewWriter(c)
	if err := w.Write(&proto.Hello{MinVersion: 1, MaxVersion: proto.MaxVersion, Possible: proto.NewCPUSet(0, 1, 2, 3),
		Present: proto.NewCPUSet(0), Online: proto.NewCPUSet(0), IntervalNanos: int64(100 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := proto.NewReader(c, 0).Next(); err != nil {
		t.Fatalf("no Welcome: %v", err)
	}
	c.SetReadDeadline(time.Time{})
	return c, w
}

func guestReport(seq uint64, busy float32) *proto.Report {
	return &proto.Report{Seq: seq, IntervalNanos: int64(100 * time.Millisecond), WallUnixNanos: time.Now().UnixNano(),
		Online: proto.NewCPUSet(0), Present: proto.NewCPUSet(0), CPUs: []proto.CPUStat{{CPU: 0, Busy: busy, Idle: 1 - busy}}}
}

// TestStreamCostBoundedUnderGuestFlood: a guest that sends valid reports
// as fast as its socket takes them (the 1.1 M in 15 s) decides
// neither the stream's volume nor a reading client's bytes: reports are
// admitted at the VM's rate and refusals summarised.
func TestStreamCostBoundedUnderGuestFlood(t *testing.T) {
	tcp, err := channel.ListenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := apitest.Start(t, apitest.Spec{Name: "web", Demand: 0.5}, apitest.Spec{Name: "evil", Channel: tcp})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var bytesIn, evilMsgs, webMsgs atomic.Int64
	go r.Client().Stream(ctx, "", nil, nil, func(typ string, data []byte) error {
		bytesIn.Add(int64(len(data)))
		switch {
		case bytes.Contains(data, []byte(`"vm":"evil"`)) || bytes.Contains(data, []byte(`"name":"evil"`)):
			evilMsgs.Add(1)
		case bytes.Contains(data, []byte(`"vm":"web"`)) || bytes.Contains(data, []byte(`"name":"web"`)):
			webMsgs.Add(1)
		}
		return nil
	})
	apitest.WaitFor(t, 10*time.Second, "the stream to carry the honest VM", func() bool { return webMsgs.Load() > 0 })

	const d = 5 * time.Second
	deadline := time.Now().Add(d)
	frames, sessions := 0, 0
	var seq uint64
	for time.Now().Before(deadline) {
		c, w := hostileGuest(t, tcp.Addr().String())
		sessions++
		go func() { // drain commands
			rd := proto.NewReader(c, 0)
			for {
				if _, err := rd.Next(); err != nil {
					return
				}
			}
		}()
		c.SetWriteDeadline(deadline)
		for time.Now().Before(deadline) {
			seq++
			if err := w.Write(guestReport(seq, 1)); err != nil {
				break
			}
			frames++
		}
		c.Close()
		time.Sleep(50 * time.Millisecond)
	}
	evil, web, total := evilMsgs.Load(), webMsgs.Load(), bytesIn.Load()
	t.Logf("guest flood: %d frames in %v over %d sessions; a reading all-VM stream client got %d KiB (%.0f KiB/s), %d messages about the hostile VM, %d about the honest one",
		frames, d, sessions, total>>10, float64(total)/1024/d.Seconds(), evil, web)
	// The guard drops a flooding session after ten strikes and backs its
	// reconnect off, so how many frames get out depends on the machine's
	// speed; a hundred is a flood for an agent that reports every 100 ms.
	if frames < 100 {
		t.Fatalf("only %d frames: no flood", frames)
	}
	// Reports are admitted at four per 100 ms interval after a burst of
	// 16 per session, each a report and a decision message; refusals go
	// out at five, then one a second.
	if max := int64(sessions)*2*16 + 2*4*int64(d/(100*time.Millisecond)) + int64(sessions)*5 + 10; evil > max {
		t.Errorf("%d stream messages about the hostile VM in %v, bound %d", evil, d, max)
	}
	// Before the limits one client received 1.0 GB in 8 s.
	if rate := float64(total) / d.Seconds(); rate > 1<<20 {
		t.Errorf("stream client received %.0f KiB/s", rate/1024)
	}
}

// TestOperatorControlWhileTheAgentStalls: a guest that never answers a
// command, or answers each only after seconds, cannot delay its own
// pause or a policy change: both take effect within a second, in the
// middle of the action, which then ends cleanly.
func TestOperatorControlWhileTheAgentStalls(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ackAfter time.Duration // 0: never
	}{{"silent agent", 0}, {"agent that answers after 3 s", 3 * time.Second}} {
		t.Run(tc.name, func(t *testing.T) {
			tcp, err := channel.ListenTCP("127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			r := apitest.Start(t, apitest.Spec{Name: "slow", Channel: tcp, Max: 8, CommandTimeout: 6 * time.Second,
				Policy: func(p *engine.Policy) { p.MaxVCPUs = 8 }})
			c, w := hostileGuest(t, tcp.Addr().String())
			var wmu sync.Mutex
			write := func(m proto.Message) { wmu.Lock(); w.Write(m); wmu.Unlock() }
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() { // reports on time, commands answered late or never
				rd := proto.NewReader(c, 0)
				for {
					m, err := rd.Next()
					if err != nil {
						return
					}
					if cmd, ok := m.(*proto.Command); ok && tc.ackAfter > 0 {
						go func() {
							select {
							case <-time.After(tc.ackAfter):
								write(&proto.Ack{ID: cmd.ID, OK: false, Error: "too slow to online",
									Online: proto.NewCPUSet(0), Present: proto.NewCPUSet(0)})
							case <-ctx.Done():
							}
						}()
					}
				}
			}()
			go func() {
				for seq := uint64(1); ctx.Err() == nil; seq++ {
					write(guestReport(seq, 0.1))
					time.Sleep(100 * time.Millisecond)
				}
			}()
			apitest.WaitFor(t, 10*time.Second, "the agent to report", func() bool {
				return r.Act.VM("slow").Status().Agent.Reports > 0
			})

			resized := make(chan error, 1)
			go func() { _, err := r.Client().SetVCPUs(ctx, "slow", 8); resized <- err }()
			apitest.WaitFor(t, 10*time.Second, "the scale-up to reach the agent", func() bool {
				return r.VMs["slow"].QMP.Plugged() == 8
			})
			start := time.Now()
			if _, err := r.Client().Pause(ctx, "slow"); err != nil {
				t.Fatal(err)
			}
			pause := time.Since(start)
			start = time.Now()
			if _, err := r.Client().SetPolicy(ctx, "slow", map[string]any{"max_vcpus": 4}); err != nil {
				t.Fatal(err)
			}
			policy := time.Since(start)
			t.Logf("%s, mid scale-up 1 → 8: pause took %v, a policy PUT %v", tc.name, pause.Round(time.Millisecond), policy.Round(time.Millisecond))
			if pause > time.Second || policy > time.Second {
				t.Errorf("operator control took %v (pause) and %v (policy) while the agent stalled", pause, policy)
			}
			// The action in flight ends or rolls back; nothing follows it.
			select {
			case err := <-resized:
				if err == nil {
					t.Fatal("a scale-up the agent never confirmed succeeded")
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the action in flight never ended")
			}
			apitest.WaitFor(t, 10*time.Second, "the roll-back", func() bool { return r.VMs["slow"].QMP.Plugged() == 1 })
			time.Sleep(500 * time.Millisecond)
			if st := r.Act.VM("slow").Status(); !st.Paused || r.VMs["slow"].QMP.Plugged() != 1 {
				t.Fatalf("after the roll-back: paused %v, %d plugged", st.Paused, r.VMs["slow"].QMP.Plugged())
			}
		})
	}
}

// TestTLS: with a certificate and key the TCP listener speaks HTTPS; a
// client trusting that certificate gets through with the token, plain
// HTTP and an untrusting client do not.
func TestTLS(t *testing.T) {
	certPEM, keyPEM := selfSigned(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	r := apitest.Start(t, apitest.Spec{Name: "web"})
	base := r.ServeTCP(t, attackToken, &tls.Config{Certificates: []tls.Certificate{cert}})
	if !strings.HasPrefix(base, "https://") {
		t.Fatalf("base %s", base)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	good := api.NewTCPClientTLS(base, attackToken, &tls.Config{RootCAs: pool})
	if v, err := good.Pause(context.Background(), "web"); err != nil || !v.Paused {
		t.Fatalf("HTTPS with the token: %+v %v", v, err)
	}
	if _, err := api.NewTCPClientTLS(base, "", &tls.Config{RootCAs: pool}).VMs(context.Background()); err == nil {
		t.Fatal("HTTPS without the token was served")
	}
	if _, err := api.NewTCPClient(base, attackToken).VMs(context.Background()); err == nil ||
		!strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a client that does not trust the certificate: %v", err)
	}
	plain := "http://" + strings.TrimPrefix(base, "https://")
	if _, err := api.NewTCPClient(plain, attackToken).VMs(context.Background()); err == nil {
		t.Fatal("plain HTTP on the TLS listener was served")
	}
}

// selfSigned makes a certificate for 127.0.0.1 and its key, in PEM.
func selfSigned(t *testing.T) (certPEM, keyPEM []byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "hotplug-actuator test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}
