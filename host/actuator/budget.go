package actuator

import "sync"

// Budget caps the sum of a resource over all VMs of the host: vCPUs, or
// bytes of memory. It is shared by the VM controllers; a limit of 0 means
// no cap.
type Budget struct {
	mu    sync.Mutex
	limit int
	byVM  map[string]int
}

// NewBudget returns a budget of limit vCPUs (0: unlimited).
func NewBudget(limit int) *Budget { return &Budget{limit: limit, byVM: map[string]int{}} }

// Set records how many vCPUs vm has, as its hypervisor reports.
func (b *Budget) Set(vm string, n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.byVM[vm] = n
}

func (b *Budget) totalLocked() int {
	t := 0
	for _, n := range b.byVM {
		t += n
	}
	return t
}

// Allowed is the most vCPUs vm may have given everyone else's, or 0 when
// there is no cap.
func (b *Budget) Allowed(vm string, current int) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.limit == 0 {
		return 0
	}
	others := b.totalLocked() - b.byVM[vm]
	return max(b.limit-others, 1)
}

// Reserve claims one more vCPU for vm (which has current now) if the cap
// allows; the claim stands until the next Set.
func (b *Budget) Reserve(vm string, current int) bool { return b.ReserveN(vm, current, 1) }

// ReserveN claims n more for vm (which has current now) if the cap allows;
// the claim stands until the next Set.
func (b *Budget) ReserveN(vm string, current, n int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.byVM[vm] = current
	if b.limit > 0 && b.totalLocked()+n > b.limit {
		return false
	}
	b.byVM[vm] = current + n
	return true
}

// Limit is the cap (0: none).
func (b *Budget) Limit() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.limit
}

// SetLimit changes the cap (0: none).
func (b *Budget) SetLimit(limit int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.limit = limit
}

// Total is the sum of vCPUs over all VMs.
func (b *Budget) Total() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.totalLocked()
}
