package sim

import "math"

// Result is one policy's outcome over the fleet. The JSON names are the
// ones the simulator's report promises.
type Result struct {
	Policy string `json:"policy"`
	VMs    int64  `json:"vms"`
	// VCPUHours is the vCPU-time allocated, summed over VMs.
	VCPUHours float64 `json:"vcpu_hours"`
	// VsRequested and VsOracle are VCPUHours over those of the
	// static-requested and oracle baselines on the same VMs.
	VsRequested float64 `json:"vcpu_hours_vs_requested"`
	VsOracle    float64 `json:"vcpu_hours_vs_oracle"`
	// OverloadTimeFraction is the share of VM-time with demand above the
	// allocated vCPUs.
	OverloadTimeFraction float64 `json:"overload_time_fraction"`
	// ActionsPerVMDay counts scaling actions (one decision carried out,
	// however many vCPUs it moved) per VM per day of trace.
	ActionsPerVMDay float64 `json:"actions_per_vm_day"`
	// ShortfallP50 and ShortfallP99 are percentiles, over overloaded time,
	// of the demand that found no vCPU, in CPUs (to 1 %: the end of a
	// histogram bucket). Zero without overload.
	ShortfallP50 float64 `json:"shortfall_p50_cpus"`
	ShortfallP99 float64 `json:"shortfall_p99_cpus"`
	// VMOverloadP99 is the 99th percentile over VMs of each VM's own
	// overload time fraction (to 0.001): the fleet-wide fraction can hide a
	// few VMs starved most of the time.
	VMOverloadP99 float64 `json:"vm_overload_fraction_p99"`
}

// Shortfall histogram: exponential buckets, the first 0.001 CPU wide, each
// 1 % wider than the one before, up to 2048 CPUs.
const (
	shortFirst   = 0.001
	shortRatio   = 1.01
	shortBuckets = 999 // ceil(log_1.01(2048 × 0.01 ÷ 0.001 + 1)) + 1
	vmOverBins   = 1001
)

func shortBucket(v float64) int {
	if !(v >= shortFirst) {
		return 0
	}
	b := math.Log(v*(shortRatio-1)/shortFirst+1) / math.Log(shortRatio)
	if !(b < shortBuckets-1) { // also +Inf, which int() would not survive
		return shortBuckets - 1
	}
	return int(b)
}

func shortBucketStart(b int) float64 {
	return shortFirst * (math.Pow(shortRatio, float64(b)) - 1) / (shortRatio - 1)
}

// totals add up one policy's vmStats; every figure is an integer, so a sum
// does not depend on the order VMs are added in.
type totals struct {
	vms   int64
	sum   vmStats
	short [shortBuckets]int64 // overloaded milliseconds by shortfall
	// vmOver[k] counts VMs whose overload fraction is in ((k−1)/1000,
	// k/1000]; vmOver[0] those never overloaded.
	vmOver [vmOverBins]int64
}

func (a *totals) addShortfall(cpus float64, ms int64) { a.short[shortBucket(cpus)] += ms }

func (a *totals) addVM(st vmStats) {
	a.vms++
	a.sum.vcpuMs += st.vcpuMs
	a.sum.timeMs += st.timeMs
	a.sum.overMs += st.overMs
	a.sum.actions += st.actions
	k := 0
	if st.overMs > 0 {
		k = int(min(math.Ceil(float64(st.overMs)*1000/float64(st.timeMs)), 1000))
	}
	a.vmOver[k]++
}

func (a *totals) merge(b *totals) {
	a.vms += b.vms
	a.sum.vcpuMs += b.sum.vcpuMs
	a.sum.timeMs += b.sum.timeMs
	a.sum.overMs += b.sum.overMs
	a.sum.actions += b.sum.actions
	for i, v := range b.short {
		a.short[i] += v
	}
	for i, v := range b.vmOver {
		a.vmOver[i] += v
	}
}

// shortfall returns the q-quantile of shortfall over overloaded time: the
// end of the bucket where the cumulative time first reaches q.
func (a *totals) shortfall(q float64) float64 {
	var total int64
	for _, v := range a.short {
		total += v
	}
	if total == 0 {
		return 0
	}
	need := q * float64(total)
	var cum int64
	for b, v := range a.short {
		cum += v
		if v > 0 && float64(cum) >= need {
			return shortBucketStart(b + 1)
		}
	}
	return shortBucketStart(shortBuckets)
}

// vmOverload returns the q-quantile over VMs of the overload fraction.
func (a *totals) vmOverload(q float64) float64 {
	if a.vms == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(a.vms)))
	var cum int64
	for k, v := range a.vmOver {
		cum += v
		if cum >= rank {
			return float64(k) / 1000
		}
	}
	return 1
}

// result turns totals into the report's figures; ref holds the fleet's
// static-requested and oracle vCPU-milliseconds.
func (a *totals) result(name string, reqMs, oracleMs int64) Result {
	r := Result{Policy: name, VMs: a.vms, VCPUHours: float64(a.sum.vcpuMs) / 3.6e6}
	if reqMs > 0 {
		r.VsRequested = float64(a.sum.vcpuMs) / float64(reqMs)
	}
	if oracleMs > 0 {
		r.VsOracle = float64(a.sum.vcpuMs) / float64(oracleMs)
	}
	if a.sum.timeMs > 0 {
		r.OverloadTimeFraction = float64(a.sum.overMs) / float64(a.sum.timeMs)
		r.ActionsPerVMDay = float64(a.sum.actions) / (float64(a.sum.timeMs) / 86.4e6)
	}
	r.ShortfallP50, r.ShortfallP99 = a.shortfall(0.5), a.shortfall(0.99)
	r.VMOverloadP99 = a.vmOverload(0.99)
	return r
}
