//go:build ignore

// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/*
 * runqlat.c — run-queue latency: how long a runnable task waits for a CPU,
 * from the moment it becomes runnable (woken, newly created, or preempted
 * while still TASK_RUNNING) to the moment it is switched in. Waits go into a
 * log2 histogram of microseconds in a per-CPU array that user space sums
 * and differences each interval (guest/runq).
 *
 * Two sets of programs do the same work: tp_btf (kernel 5.11+: typed
 * arguments read directly, start times in task-local storage) and raw_tp
 * (4.17+: arguments read with bpf_probe_read_kernel, start times in a hash
 * map keyed by pid). The loader loads one set and its map, never both. Both
 * use CO-RE, so they need kernel BTF (/sys/kernel/btf/vmlinux) to load.
 *
 * Cost matters: sched_switch fires on every context switch. Task storage
 * is a pointer chase where the hash map hashes and locks a bucket, and the
 * histogram is per-CPU and written only from sched_switch (rq lock held,
 * interrupts off), so its counters need no atomic instructions.
 *
 * Written for Hot-Plug Heaven after the design of runqlat in BCC's
 * libbpf-tools; no code was copied.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#define TASK_RUNNING 0
/* Slot i counts waits in [2^i, 2^(i+1)) µs; slot 0 also takes waits under
 * 1 µs and the last slot everything from 2^(MAX_SLOTS-1) µs (36 min) up. */
#define MAX_SLOTS 32
/* raw_tp set: tasks runnable but not yet running, at most. A full map
 * loses waits (counted in hist.lost) rather than failing. */
#define MAX_QUEUED 10240

struct hist {
	__u64 slots[MAX_SLOTS];
	/* Waits not recorded: no room for the start time (map full, busy,
	 * or task storage not allocatable). */
	__u64 lost;
};

/* Options, set from Go before loading (the verifier then prunes the
 * branches they switch off). */

/* count_preempted: a task switched out while still TASK_RUNNING
 * (preempted, or yielding) goes back on the run queue; time until it runs
 * again is a wait like any other. Without it, CPU-bound tasks that never
 * sleep would never show as waiting. */
const volatile bool count_preempted = true;

/* raw_tp set: pid → CLOCK_MONOTONIC ns at which the task became runnable. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_QUEUED);
	__type(key, __u32);
	__type(value, __u64);
} start SEC(".maps");

/* tp_btf set: the same, in the task itself; 0 means not waiting. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} start_task SEC(".maps");

/* One histogram per CPU (slot 0 of a per-CPU array): no contention between
 * CPUs; user space adds them up. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hist);
} hists SEC(".maps");

/* sched_info flavour: one histogram per CPU in a plain array, indexed by
 * the CPU number of the run queue. The verifier inlines a lookup in an
 * array map (a bound check and an add) where a per-CPU array costs a call;
 * on sched_switch, every cycle counts. Each entry is padded to whole cache
 * lines (5 × 64 bytes) so that no two CPUs write to one line.
 * guest/runq sets max_entries to the number of possible CPUs. */
struct hist_cpu {
	struct hist h;
	__u64 pad[7];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hist_cpu);
} hists_cpu SEC(".maps");

/* task_struct before 5.14 (commit 2f064a59a11f): `long state`. */
struct task_struct___pre514 {
	long state;
} __attribute__((preserve_access_index));

static __always_inline struct hist *this_hist(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&hists, &zero);
}

/* Wake-ups and switches run with interrupts off and a program does not
 * nest on its own CPU, so plain increments of the per-CPU counters are
 * safe. */
static __always_inline void count_lost(void)
{
	struct hist *h = this_hist();

	if (h)
		h->lost++;
}

static __always_inline int enqueue(__u32 pid)
{
	__u64 ts;

	/* pid 0 is each CPU's idle task: it never waits. */
	if (!pid)
		return 0;
	ts = bpf_ktime_get_ns();
	if (bpf_map_update_elem(&start, &pid, &ts, BPF_ANY) != 0)
		count_lost();
	return 0;
}

/* wait_slot is the histogram slot of a wait from start to now (ns, same
 * clock): log2 of the wait in µs, rounded down (0 for under 2 µs), at most
 * MAX_SLOTS − 1. It runs on every context switch, so it is cheap:
 *  - µs as ns × 1049 >> 20 rather than ns ÷ 1000, a division costing tens
 *    of cycles; 1049/2^20 is 0.04 % above 1/1000, which moves a slot's
 *    edge from 2^i µs to 2^i/1.0004 µs;
 *  - log2 by halving with a branch per step, so a short wait skips most
 *    steps. No loops, so every kernel's verifier accepts it.
 * 64-bit throughout: with a u32 slot, clang compares a zero-extended copy
 * and indexes with the original, and the verifier sees no bound. */
static __always_inline __u64 wait_slot(__u64 start, __u64 now)
{
	__u64 v, slot = 0;

	/* A timestamp from another CPU can be a little ahead of ours. */
	if (now <= start)
		return 0;
	v = now - start;
	/* 2^41 ns (36.6 min) is past the last slot's start, 2^31 µs; below
	 * it the product cannot overflow and v stays under 2^32 µs, which
	 * the five steps cover. */
	if (v >= 1ULL << 41)
		return MAX_SLOTS - 1;
	v = (v * 1049) >> 20;
	if (v >= 1 << 16) { v >>= 16; slot += 16; }
	if (v >= 1 << 8) { v >>= 8; slot += 8; }
	if (v >= 1 << 4) { v >>= 4; slot += 4; }
	if (v >= 1 << 2) { v >>= 2; slot += 2; }
	if (v >= 1 << 1) slot += 1;
	return slot & (MAX_SLOTS - 1); /* a no-op that proves the bound */
}

/* record_wait puts a wait from start to now (ns, same clock) into this
 * CPU's histogram. */
static __always_inline void record_wait(__u64 start, __u64 now)
{
	__u64 slot = wait_slot(start, now);
	struct hist *h = this_hist();

	if (h)
		h->slots[slot]++;
}

/* record puts the wait that started at start (bpf_ktime_get_ns) into this
 * CPU's histogram. */
static __always_inline void record(__u64 start)
{
	record_wait(start, bpf_ktime_get_ns());
}

static __always_inline int switch_in(__u32 pid)
{
	__u64 *tsp;

	if (!pid)
		return 0;
	tsp = bpf_map_lookup_elem(&start, &pid);
	if (!tsp)
		return 0;
	record(*tsp);
	bpf_map_delete_elem(&start, &pid);
	return 0;
}

/* ---- tp_btf: typed arguments, read directly ---- */

static __always_inline long btf_task_state(struct task_struct *t)
{
	if (bpf_core_field_exists(t->__state))
		return t->__state;
	return ((struct task_struct___pre514 *)t)->state;
}

static __always_inline int btf_enqueue(struct task_struct *p)
{
	__u64 *ts;

	if (!p->pid)
		return 0;
	ts = bpf_task_storage_get(&start_task, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!ts) {
		count_lost();
		return 0;
	}
	*ts = bpf_ktime_get_ns();
	return 0;
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(btf_wakeup, struct task_struct *p)
{
	return btf_enqueue(p);
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(btf_wakeup_new, struct task_struct *p)
{
	return btf_enqueue(p);
}

SEC("tp_btf/sched_switch")
int BPF_PROG(btf_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	__u64 *ts;

	if (count_preempted && btf_task_state(prev) == TASK_RUNNING)
		btf_enqueue(prev);
	if (!next->pid)
		return 0;
	/* No F_CREATE: a task that never became runnable under us has no
	 * storage, and needs none. */
	ts = bpf_task_storage_get(&start_task, next, 0, 0);
	if (!ts || !*ts)
		return 0;
	record(*ts);
	*ts = 0;
	return 0;
}

/* ---- tp_btf, sched_info flavour: sched_switch alone ----
 *
 * With CONFIG_SCHED_INFO (selected by SCHEDSTATS or TASK_DELAY_ACCT, as in
 * Debian's and most distributions' kernels) the scheduler already stamps
 * every task with the run-queue clock at which it was queued —
 * sched_info.last_queued, set on wake-up, on creation and when a task is
 * switched out still runnable, and cleared once it runs — to keep
 * /proc/<pid>/schedstat. sched_switch fires after __schedule() has updated
 * the run queue's clock and before sched_info_arrive() consumes the stamp,
 * so the wait of the task being switched in is rq->clock − last_queued:
 * the very figure the kernel adds to run_delay. (When a wake-up preempts
 * the running task the scheduler skips that clock update, so such a wait,
 * typically microseconds, reads as the time to the previous update:
 * short waits come out shorter than the wake-up set's, as in run_delay;
 * the millisecond waits of a saturated CPU are the same in both.)
 *
 * That needs no wake-up programs, no start map and no clock read: one
 * program per context switch that reads three fields, against three
 * programs, a task-storage lookup per event and two clock reads per wait
 * in the set above. The run queue is reached through the task's CFS run
 * queue (cfs_rq->rq exists with CONFIG_FAIR_GROUP_SCHED); guest/runq checks
 * the kernel's BTF for every field first and otherwise loads the set above.
 *
 * The one difference: a waiting task that the load balancer moves to
 * another CPU is dequeued and queued again there, which restarts its stamp;
 * only the wait on the CPU that runs it is counted. Preempted tasks are
 * always counted (the kernel re-stamps them), so count_preempted = false
 * needs the set above. */

SEC("tp_btf/sched_switch")
int BPF_PROG(btf_switch_si, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	struct hist_cpu *hc;
	__u64 queued, slot;
	struct rq *rq;
	__u32 cpu;

	/* 0 when next was not waiting: a task that blocked and was not
	 * woken, or a CPU's idle task, which is never queued (no pid test
	 * needed: one load less on every switch). */
	queued = next->sched_info.last_queued;
	if (!queued)
		return 0;
	rq = next->se.cfs_rq->rq;
	slot = wait_slot(queued, rq->clock);
	cpu = rq->cpu;
	hc = bpf_map_lookup_elem(&hists_cpu, &cpu);
	if (hc)
		hc->h.slots[slot]++;
	return 0;
}

/* ---- raw_tp: untyped arguments, read with bpf_probe_read_kernel ---- */

static __always_inline long raw_task_state(struct task_struct *t)
{
	if (bpf_core_field_exists(t->__state))
		return BPF_CORE_READ(t, __state);
	return BPF_CORE_READ((struct task_struct___pre514 *)t, state);
}

SEC("raw_tp/sched_wakeup")
int BPF_PROG(raw_wakeup, struct task_struct *p)
{
	return enqueue(BPF_CORE_READ(p, pid));
}

SEC("raw_tp/sched_wakeup_new")
int BPF_PROG(raw_wakeup_new, struct task_struct *p)
{
	return enqueue(BPF_CORE_READ(p, pid));
}

SEC("raw_tp/sched_switch")
int BPF_PROG(raw_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	if (count_preempted && raw_task_state(prev) == TASK_RUNNING)
		enqueue(BPF_CORE_READ(prev, pid));
	return switch_in(BPF_CORE_READ(next, pid));
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
