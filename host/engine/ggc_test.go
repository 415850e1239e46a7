package engine

import (
	"bufio"
	"container/heap"
	"math"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
)

func TestErlangC(t *testing.T) {
	for _, tc := range []struct {
		c    int
		a    float64
		want float64
	}{
		{1, 0.5, 0.5},     // M/M/1: P(wait) = ρ
		{2, 1, 1.0 / 3},   // textbook: C(2, 1) = 1/3
		{3, 2, 4.0 / 9},   // C(3, 2) = (8/6·3) / (1 + 2 + 2 + 8/6·3) = 4/9
		{4, 4, 1},         // saturated
		{5, 0, 0},         // no load
		{500, 450, 0.025}, // large c stays finite (checked below by range)
	} {
		got := ErlangC(tc.c, tc.a)
		if tc.c == 500 {
			if !(got > 0 && got < 0.2) {
				t.Errorf("ErlangC(500, 450) = %v, want a small probability", got)
			}
			continue
		}
		if math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("ErlangC(%d, %v) = %v, want %v", tc.c, tc.a, got, tc.want)
		}
	}
}

// TestWorkloadSize: 20 req/s of 40 ms CPU, Poisson arrivals and constant
// service, SLA p95 ≤ 250 ms: one vCPU (ρ = 0.8) predicts a p95 wait of
// 0.08/0.8·ln(0.8/0.05) ≈ 277 ms plus the service, two vCPUs meet it.
func TestWorkloadSize(t *testing.T) {
	w := Workload{Rate: 20, Demand: 0.040, CA2: 1, CS2: 0, Shape: 1}
	if mean, pw := w.Wait(1); math.Abs(mean-0.08) > 1e-9 || math.Abs(pw-0.8) > 1e-9 {
		t.Fatalf("Wait(1) = %v, %v; want 0.08 s, 0.8", mean, pw)
	}
	if q := w.WaitQuantile(1, 0.95); math.Abs(q-0.1*math.Log(16)) > 1e-9 {
		t.Fatalf("WaitQuantile(1, 0.95) = %v", q)
	}
	sla := SLA{Quantile: 0.95, Target: 0.250}
	if c, ok := w.Size(sla, 0.8, 8); c != 2 || !ok {
		t.Fatalf("Size = %d, %v; want 2", c, ok)
	}
	// The utilisation bound alone: 50 req/s × 40 ms = 2 CPUs → 3 at 80 %.
	w.Rate = 50
	if c, ok := w.Size(SLA{Quantile: 0.95, Target: 10}, 0.8, 8); c != 3 || !ok {
		t.Fatalf("Size at 2 CPUs of work = %d, %v; want 3", c, ok)
	}
	if c, ok := w.Size(sla, 0.8, 2); c != 2 || ok {
		t.Fatalf("Size over the limit = %d, %v; want 2, false", c, ok)
	}
	if !math.IsInf(w.Response(2, 0.95), 1) {
		t.Fatal("a saturated allocation must predict an infinite response time")
	}
}

// simulateC runs a FIFO queue with c servers over arrival times (seconds,
// sorted) and service times, and returns every request's response time
// (wait + service), in arrival order.
func simulateC(c int, arrivals, service []float64) []float64 {
	free := make(freeHeap, c)
	out := make([]float64, len(arrivals))
	for i, a := range arrivals {
		start := math.Max(a, free[0])
		free[0] = start + service[i]
		heap.Fix(&free, 0)
		out[i] = start + service[i] - a
	}
	return out
}

type freeHeap []float64

func (h freeHeap) Len() int           { return len(h) }
func (h freeHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h freeHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *freeHeap) Push(x any)        { *h = append(*h, x.(float64)) }
func (h *freeHeap) Pop() any          { old := *h; x := old[len(old)-1]; *h = old[:len(old)-1]; return x }

func quantile(x []float64, q float64) float64 {
	s := append([]float64(nil), x...)
	sort.Float64s(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// TestGGcMatchesSimulatedMMc checks the simulation and the formulas on the
// case where Allen–Cunneen and Whitt's tail are exact: M/M/c.
func TestGGcMatchesSimulatedMMc(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	for _, tc := range []struct {
		c   int
		rho float64
	}{{1, 0.8}, {2, 0.7}, {4, 0.85}} {
		d := 0.040
		lambda := tc.rho * float64(tc.c) / d
		n := 300000
		arr, svc := make([]float64, n), make([]float64, n)
		now := 0.0
		for i := range arr {
			now += rng.ExpFloat64() / lambda
			arr[i], svc[i] = now, rng.ExpFloat64()*d
		}
		resp := simulateC(tc.c, arr, svc)
		var mean float64
		for _, r := range resp {
			mean += r
		}
		mean /= float64(n)
		w := Workload{Rate: lambda, Demand: d, CA2: 1, CS2: 1, Shape: 1}
		if model := w.Response(tc.c, 0); math.Abs(model-mean)/mean > 0.05 {
			t.Errorf("c=%d ρ=%.2f: simulated mean %.4gs, Allen–Cunneen %.4gs", tc.c, tc.rho, mean, model)
		}
		// The p95 of the wait alone is exact under M/M/c; the model's
		// response p95 adds the service p95 (ln 20 · D for exponential
		// service) and so lies above the simulated one.
		wq := make([]float64, n)
		for i := range resp {
			wq[i] = resp[i] - svc[i]
		}
		if sim, model := quantile(wq, 0.95), w.WaitQuantile(tc.c, 0.95); math.Abs(model-sim)/sim > 0.05 {
			t.Errorf("c=%d ρ=%.2f: simulated p95 wait %.4gs, Whitt %.4gs", tc.c, tc.rho, sim, model)
		}
		w.Shape = math.Log(20)
		if sim, model := quantile(resp, 0.95), w.Response(tc.c, 0.95); model < sim {
			t.Errorf("c=%d ρ=%.2f: predicted response p95 %.4gs below the simulated %.4gs", tc.c, tc.rho, model, sim)
		}
	}
}

// nasaArrivals reads the arrival times (seconds) of the NASA KSC log of
// 1 Aug 1995 (evaluation set, ../shared/data/nasa) and the whole-second
// stamps they come from. Arrivals within one second are spread uniformly
// over it with a fixed seed, since the queue cannot be simulated on ties.
func nasaArrivals(t *testing.T) (arrivals []float64, stamps []int64) {
	t.Helper()
	f, err := os.Open("../../../shared/data/nasa/nasa_19950801.tsv")
	if err != nil {
		t.Fatalf("NASA trace (../shared/data): %v", err)
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(1995, 8))
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Split(sc.Text(), "\t")
		if len(fields) < 3 {
			continue
		}
		sec, err := strconv.ParseFloat(fields[2], 64)
		if err != nil {
			continue
		}
		stamps = append(stamps, int64(sec))
	}
	sort.Slice(stamps, func(i, j int) bool { return stamps[i] < stamps[j] })
	for _, s := range stamps {
		arrivals = append(arrivals, float64(s)+rng.Float64())
	}
	sort.Float64s(arrivals)
	return arrivals, stamps
}

// countsCA2 estimates c_a² as the agent does from whole-second stamps: the
// index of dispersion v/m of per-second counts (see guest/applog/stats).
func countsCA2(stamps []int64, bin int64) float64 {
	if len(stamps) == 0 {
		return 1
	}
	first, last := stamps[0], stamps[len(stamps)-1]
	counts := make([]float64, (last-first)/bin+1)
	for _, s := range stamps {
		counts[(s-first)/bin]++
	}
	m, v := meanVar(counts)
	return v / m
}

// TestGGcAgainstNASAArrivals feeds the real NASA arrival times, window by
// window as the agent reports them, to a simulated FIFO queue with c
// servers and exponential service sized for a utilisation ρ, and compares
// the simulated mean and p95 response times with what the gray-box model
// predicts from the window's own estimates (c_a² from per-second counts,
// as for a log with whole-second stamps). The figures are the error of
// gray-box sizing on real traffic (docs/graybox.md). Real arrivals are
// burstier over minutes than their per-second counts say, so the model is
// beaten in many windows at low and moderate load, where waits are a small
// part of the response time. What must hold: on average the mean is
// underestimated by less than 25 % and the p95 — what SLAs are written
// on — by less than 10 %, at every size and load.
func TestGGcAgainstNASAArrivals(t *testing.T) {
	arr, stamps := nasaArrivals(t)
	if len(arr) < 30000 {
		t.Fatalf("only %d arrivals read", len(arr))
	}
	rng := rand.New(rand.NewPCG(7, 11))
	const window = 300.0 // seconds
	for _, c := range []int{1, 2, 4} {
		for _, rho := range []float64{0.3, 0.6, 0.8, 0.9} {
			var sumErr, sumErr95 float64
			windows, below, below95 := 0, 0, 0
			for start := arr[0]; start < arr[len(arr)-1]; start += window {
				lo := sort.SearchFloat64s(arr, start)
				hi := sort.SearchFloat64s(arr, start+window)
				seg := arr[lo:hi]
				if len(seg) < 50 {
					continue
				}
				lambda := float64(len(seg)) / window
				d := rho * float64(c) / lambda
				svc := make([]float64, len(seg))
				for i := range svc {
					svc[i] = rng.ExpFloat64() * d
				}
				sm, sv := meanVar(svc)
				resp := simulateC(c, seg, svc)
				simMean, _ := meanVar(resp)
				sim95 := quantile(resp, 0.95)
				ts := stamps[sort.Search(len(stamps), func(i int) bool { return float64(stamps[i]) >= math.Floor(start) }):]
				ts = ts[:sort.Search(len(ts), func(i int) bool { return float64(ts[i]) >= math.Floor(start+window) })]
				w := Workload{Rate: lambda, Demand: d, CA2: countsCA2(ts, 1), CS2: sv / (sm * sm), Shape: math.Log(20)}
				model, model95 := w.Response(c, 0), w.Response(c, 0.95)
				rel, rel95 := (model-simMean)/simMean, (model95-sim95)/sim95
				if math.IsInf(model, 1) {
					rel, rel95 = 10, 10
				}
				sumErr += rel
				sumErr95 += rel95
				windows++
				if model < simMean {
					below++
				}
				if model95 < sim95 {
					below95++
				}
			}
			if windows < 100 {
				t.Fatalf("only %d usable windows", windows)
			}
			mean, mean95 := sumErr/float64(windows), sumErr95/float64(windows)
			share95 := float64(below95) / float64(windows)
			t.Logf("c=%d ρ=%.1f: %d windows: mean %+.0f%% on average, below the simulation in %.0f%%; p95 %+.0f%% on average, below in %.0f%%",
				c, rho, windows, 100*mean, 100*float64(below)/float64(windows), 100*mean95, 100*share95)
			if mean < -0.25 || mean95 < -0.10 {
				t.Errorf("c=%d ρ=%.1f: the model underestimates on average: mean %.0f%%, p95 %.0f%%", c, rho, 100*mean, 100*mean95)
			}
		}
	}
}

func meanVar(x []float64) (mean, variance float64) {
	for _, v := range x {
		mean += v
	}
	mean /= float64(len(x))
	for _, v := range x {
		variance += (v - mean) * (v - mean)
	}
	return mean, variance / float64(len(x)-1)
}
