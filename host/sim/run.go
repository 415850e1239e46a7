package sim

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"runtime"
	"sync"
)

// Config is what Simulate runs.
type Config struct {
	Policies  []Policy
	Actuation Actuation
	// Workers replay VMs in parallel; 0 means GOMAXPROCS.
	Workers int
	// TimelineVM names the VM whose demand and allocations go into
	// Report.Timeline; "" picks the first VM (in input order) whose peak
	// demand reaches half its requested size, or failing that the first.
	TimelineVM string
}

// Report is a simulation's outcome.
type Report struct {
	// Results has one entry per policy, in the order of Config.Policies.
	Results []Result
	// VMs is how many traces were simulated, Skipped how many were not
	// (each reported to the skip function).
	VMs, Skipped int64
	Timeline     *Timeline
}

// Timeline is one VM's demand and each policy's mean allocation, per
// sample.
type Timeline struct {
	VM string
	// Hours is each sample's start, in hours from the first.
	Hours    []float64
	Demand   []float64
	Policies []string
	Alloc    [][]float64 // [policy][sample]
}

type job struct {
	idx int
	t   *Trace
}

// Simulate replays every trace through every policy, VMs in parallel, and
// adds up the outcome. A trace the iterator could not read, or one a policy
// cannot run on, goes to skip (called from one goroutine at a time) and is
// left out for every policy, so all policies are measured on the same VMs.
// Only the traces being replayed are in memory.
func Simulate(ctx context.Context, traces iter.Seq2[*Trace, error], cfg Config, skip func(error)) (*Report, error) {
	o, err := simulate(ctx, traces, cfg, skip)
	if err != nil {
		return nil, err
	}
	return o.report(cfg.Policies), nil
}

// outcome is a simulation's raw sums: integers that add up across runs
// (the sweep adds days together) in any order.
type outcome struct {
	per             []totals // one per policy
	reqMs, oracleMs int64
	skipped         int64
	timeline        *Timeline
}

// add adds b's sums, policy by policy, to o's; both ran the same policies.
func (o *outcome) add(b *outcome) {
	if o.per == nil {
		o.per = make([]totals, len(b.per))
	}
	for i := range o.per {
		o.per[i].merge(&b.per[i])
	}
	o.reqMs += b.reqMs
	o.oracleMs += b.oracleMs
	o.skipped += b.skipped
}

func (o *outcome) report(pols []Policy) *Report {
	r := &Report{Skipped: o.skipped, Timeline: o.timeline}
	for i, p := range pols {
		r.Results = append(r.Results, o.per[i].result(p.Name, o.reqMs, o.oracleMs))
		r.VMs = o.per[i].vms
	}
	return r
}

func simulate(ctx context.Context, traces iter.Seq2[*Trace, error], cfg Config, skip func(error)) (*outcome, error) {
	if len(cfg.Policies) == 0 {
		return nil, errors.New("no policies to simulate")
	}
	seen := map[string]bool{}
	for _, p := range cfg.Policies {
		if p.Name == "" || seen[p.Name] {
			return nil, fmt.Errorf("policy names must be unique and not empty, got %q twice or empty", p.Name)
		}
		seen[p.Name] = true
		switch p.Baseline {
		case "":
			if err := p.Engine.Validate(); err != nil {
				return nil, fmt.Errorf("policy %s: %w", p.Name, err)
			}
		case StaticRequested, StaticPeak, Oracle:
		default:
			return nil, fmt.Errorf("policy %s: unknown baseline %q", p.Name, p.Baseline)
		}
	}
	if cfg.Actuation.PlugTime < 0 || cfg.Actuation.UnplugTime < 0 || cfg.Actuation.Initial < 0 {
		return nil, errors.New("plug and unplug times and the initial size must not be negative")
	}
	workers := cfg.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}

	var mu sync.Mutex // guards skip, skipped and the timeline choice
	var skipped int64
	report := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		skipped++
		if skip != nil {
			skip(err)
		}
	}
	tl := timelinePicker{want: cfg.TimelineVM}

	jobs := make(chan job, workers)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		defer close(jobs)
		i := 0
		for t, err := range traces {
			if err != nil {
				report(err)
				continue
			}
			select {
			case jobs <- job{i, t}:
				i++
			case <-ctx.Done():
				return
			}
		}
	}()

	type acc struct {
		per             []totals
		reqMs, oracleMs int64
	}
	accs := make([]acc, workers)
	var wg sync.WaitGroup
	for w := range workers {
		accs[w].per = make([]totals, len(cfg.Policies))
		wg.Go(func() {
			a := &accs[w]
			for j := range jobs {
				if ctx.Err() != nil {
					continue // drain
				}
				if err := runVM(j, cfg, a.per, &a.reqMs, &a.oracleMs, &tl, &mu); err != nil {
					report(err)
				}
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	o := &outcome{per: make([]totals, len(cfg.Policies)), skipped: skipped, timeline: tl.line}
	for _, a := range accs {
		for i := range o.per {
			o.per[i].merge(&a.per[i])
		}
		o.reqMs += a.reqMs
		o.oracleMs += a.oracleMs
	}
	return o, nil
}

// runVM replays one trace through every policy into per.
func runVM(j job, cfg Config, per []totals, reqMs, oracleMs *int64, tl *timelinePicker, mu *sync.Mutex) error {
	t := j.t
	if err := t.check(); err != nil {
		return err
	}
	for _, p := range cfg.Policies {
		if err := p.check(t); err != nil {
			return err
		}
	}
	qualified := tl.qualifies(t)
	mu.Lock()
	capture := tl.better(j.idx, t.Name, qualified)
	mu.Unlock()
	var line *Timeline
	if capture {
		line = &Timeline{VM: t.Name, Demand: t.Demand, Hours: make([]float64, len(t.Time))}
		for i, at := range t.Time {
			line.Hours[i] = float64(at-t.Time[0]) / 3.6e6
		}
	}
	for i, p := range cfg.Policies {
		var st vmStats
		var onStep func(Step)
		var alloc []float64
		if capture {
			alloc = make([]float64, 0, len(t.Demand))
			onStep = func(s Step) { alloc = append(alloc, s.Allocated) }
		}
		replay(t, p, cfg.Actuation, &st, per[i].addShortfall, onStep)
		per[i].addVM(st)
		if capture {
			line.Policies = append(line.Policies, p.Name)
			line.Alloc = append(line.Alloc, alloc)
		}
	}
	var req, orc vmStats
	replayBaseline(t, StaticRequested, &req, nil, nil)
	replayBaseline(t, Oracle, &orc, nil, nil)
	*reqMs += req.vcpuMs
	*oracleMs += orc.vcpuMs
	if capture {
		mu.Lock()
		if tl.better(j.idx, t.Name, qualified) {
			tl.line, tl.idx, tl.qualified = line, j.idx, qualified
		}
		mu.Unlock()
	}
	return nil
}

// timelinePicker chooses the timeline VM among traces replayed in any
// order: the lowest-indexed VM with the wanted name or, without a name, the
// lowest-indexed VM whose peak demand reaches half its requested size,
// falling back to the lowest-indexed VM.
type timelinePicker struct {
	want      string
	line      *Timeline
	idx       int
	qualified bool
}

func (p *timelinePicker) qualifies(t *Trace) bool {
	peak := 0.0
	for _, d := range t.Demand {
		peak = max(peak, d)
	}
	return peak >= float64(t.Requested)/2
}

// better says whether VM idx would replace the current choice.
func (p *timelinePicker) better(idx int, name string, qualified bool) bool {
	switch {
	case p.want != "":
		return name == p.want && (p.line == nil || idx < p.idx)
	case p.line == nil:
		return true
	case qualified != p.qualified:
		return qualified
	}
	return idx < p.idx
}
