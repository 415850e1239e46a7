package memory

import (
	"strings"
	"testing"
	"time"
)

func baselinePolicy(mode string) Policy {
	p := pressurePolicy()
	p.Mode = mode
	return p
}

func TestProxmoxBaseline(t *testing.T) {
	e := New(baselinePolicy(ModeProxmox), 512*mib)
	if d := e.Decide(t0, 2*gib, 0); d.Rule != RuleNoHost || d.Action != Hold {
		t.Fatalf("no host: %+v", d)
	}
	// 90 % of the host used: take 100 MiB, one block.
	e.SetHost(Host{Total: 10 * gib, Used: 9 * gib})
	d := e.Decide(t0, 2*gib, 0)
	if d.Action != Shrink || d.To != 2*gib-128*mib || d.Rule != RuleHostTarget || !strings.Contains(d.Reason, "above 80%") {
		t.Fatalf("host at 90%%: %+v", d)
	}
	// Not again within the period.
	if d := e.Decide(t0.Add(5*time.Second), d.To, 0); d.Action != Hold {
		t.Fatalf("within the period: %+v", d)
	}
	// 50 %: give back, up to max, whatever the guest says.
	e.SetHost(Host{Total: 10 * gib, Used: 5 * gib})
	e.Observe(calm(t0, 4*gib, 4*gib))
	d = e.Decide(t0.Add(10*time.Second), 4*gib-128*mib, 0)
	if d.Action != Grow || d.To != 4*gib {
		t.Fatalf("host at 50%%: %+v", d)
	}
	if d := e.Decide(t0.Add(20*time.Second), 4*gib, 0); d.Action != Hold {
		t.Fatalf("at max: %+v", d)
	}
	// Down to the minimum, never below.
	e.SetHost(Host{Total: 10 * gib, Used: 10 * gib})
	cur := uint64(768 * mib)
	for i := 0; i < 10; i++ {
		if d := e.Decide(t0.Add(time.Duration(30+10*i)*time.Second), cur, 0); d.Action == Shrink {
			cur = d.To
		}
	}
	if cur != 512*mib {
		t.Fatalf("shrank to %d MiB, min 512", cur>>20)
	}
}

func TestMoMBaseline(t *testing.T) {
	e := New(baselinePolicy(ModeMoM), 512*mib)
	e.SetHost(Host{Total: 10 * gib, Used: 9 * gib}) // 10 % free
	d := e.Decide(t0, 4*gib, 0)
	if d.Action != Shrink || d.Rule != RuleHostFree || d.To != 4*gib-256*mib { // 5 % = 204.8 MiB, in 128 MiB blocks
		t.Fatalf("10%% free: %+v", d)
	}
	e.SetHost(Host{Total: 10 * gib, Used: 5 * gib})
	d = e.Decide(t0.Add(10*time.Second), 2*gib, 0)
	if d.Action != Grow || d.To != 2*gib+128*mib { // 102.4 MiB: one block
		t.Fatalf("50%% free: %+v", d)
	}
	// The host limit (budget) holds it.
	d = e.Decide(t0.Add(20*time.Second), 2*gib, 2*gib)
	if d.Action != Hold {
		t.Fatalf("at the host limit: %+v", d)
	}
}

func TestValidateBaselineModes(t *testing.T) {
	for _, m := range []string{ModeProxmox, ModeMoM} {
		if err := baselinePolicy(m).Validate(); err != nil {
			t.Errorf("%s: %v", m, err)
		}
	}
}
