package actuator

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/proto"
)

// appSession says Hello at version maxv announcing apps, and returns the
// connection after the Welcome.
func appSession(t *testing.T, addr string, maxv uint16, apps ...string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	h := hello()
	h.MaxVersion, h.Apps = maxv, apps
	if _, err := c.Write(mustMarshal(t, h)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	m, err := proto.NewReader(c, 0).Next()
	if err != nil {
		t.Fatalf("no Welcome: %v", err)
	}
	if w := m.(*proto.Welcome); w.Error != "" || w.Version != maxv {
		t.Fatalf("welcome %+v, want version %d", w, maxv)
	}
	go func() { // drain commands
		rd := proto.NewReader(c, 0)
		for {
			if _, err := rd.Next(); err != nil {
				return
			}
		}
	}()
	return c
}

func appReport(seq uint64, names ...string) *proto.Report {
	r := validReport(seq)
	for _, n := range names {
		r.Apps = append(r.Apps, proto.AppStats{Name: n, Arrivals: 10, ArrivalRate: 10, ServiceMean: 0.01, SLAMean: 0.05})
	}
	return r
}

func (r *transportRig) victimApps() []string {
	var out []string
	for _, a := range r.act.VM("victim").Status().Signals.Apps {
		out = append(out, a.Name)
	}
	return out
}

// TestAppNamesFromHelloOnly: a report may name only the applications its
// session's Hello announced. A guest that makes names up report by report
// (each a new Prometheus series on the host) is refused and, going on,
// dropped; a version 1 agent, which announces nothing, has its
// applications ignored.
func TestAppNamesFromHelloOnly(t *testing.T) {
	t.Run("announced names pass, made-up names are refused", func(t *testing.T) {
		r, addr := floodRig(t)
		c := appSession(t, addr, proto.MaxVersion, "web", "db")
		if _, err := c.Write(mustMarshal(t, appReport(1, "web", "db"))); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "the announced applications in the status", func() bool { return len(r.victimApps()) == 2 })
		// One made-up name per report, at the report rate.
		seq := uint64(2)
		for i := 0; i < 3*strikeLimit; i++ {
			time.Sleep(interval / 4)
			if _, err := c.Write(mustMarshal(t, appReport(seq, "web", fmt.Sprintf("evil-%d", i)))); err != nil {
				break // dropped
			}
			seq++
		}
		r.rec.mu.Lock()
		unknown, dropped := r.rec.rejected[RejectUnknownApp], r.rec.rejected[RejectMisbehaving]
		r.rec.mu.Unlock()
		t.Logf("%d reports refused as %s, %d connections dropped", unknown, RejectUnknownApp, dropped)
		if unknown < strikeLimit {
			t.Errorf("%d reports refused for unknown applications, want at least %d", unknown, strikeLimit)
		}
		if dropped == 0 {
			t.Error("a guest making up application names was never dropped")
		}
		for _, n := range r.victimApps() {
			if n != "web" && n != "db" {
				t.Errorf("status carries application %q, never announced", n)
			}
		}
	})

	t.Run("a version 1 agent's applications are ignored", func(t *testing.T) {
		r, addr := floodRig(t)
		c := appSession(t, addr, 1)
		for seq := uint64(1); seq <= 3; seq++ {
			if _, err := c.Write(mustMarshal(t, appReport(seq, "web"))); err != nil {
				t.Fatal(err)
			}
			time.Sleep(interval / 2)
		}
		waitFor(t, 5*time.Second, "the reports to be accepted", func() bool { return r.act.VM("victim").Status().Agent.Reports >= 3 })
		if apps := r.victimApps(); len(apps) != 0 {
			t.Fatalf("a version 1 session's applications reached the status: %v", apps)
		}
		r.rec.mu.Lock()
		unknown := r.rec.rejected[RejectUnknownApp]
		r.rec.mu.Unlock()
		if unknown != 0 {
			t.Fatalf("%d version 1 reports refused: they are valid, only their applications are ignored", unknown)
		}
	})
}
