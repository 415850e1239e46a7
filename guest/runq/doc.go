// Package runq measures run-queue latency in the guest — how long runnable
// tasks wait for a CPU — and adds it to each proto.Report as one of the
// agent's collector.Sources.
// Utilisation says a CPU is busy; run-queue latency says tasks are waiting
// for one, which is the direct sign that another vCPU would help.
//
// Sources, best first (proto.RunQSource*):
//
//  1. eBPF tp_btf programs (bpf/runqlat.c): a log2 histogram of every wait,
//     from which p50/p95/p99 are computed. Needs kernel BTF and root (or
//     CAP_BPF with CAP_PERFMON). Two flavours: where the kernel keeps
//     sched_info stamps (CONFIG_SCHED_INFO and CONFIG_FAIR_GROUP_SCHED,
//     as Debian's and most distributions' kernels do), one program on
//     sched_switch alone (Linux 5.5+), which costs a pipe ping-pong about
//     3 % in the guest where the other flavour costs about 10 %;
//     otherwise programs on the wake-ups and sched_switch with the start
//     time in task storage (Linux 5.11+). Options.WakeupPrograms forces
//     the second.
//  2. The same program as raw_tp (kernel 4.17+ with BTF), when tp_btf
//     cannot load or attach.
//  3. /proc/schedstat run_delay and pcount: the mean wait per timeslice;
//     percentiles are estimated from the mean (see schedstatSampler).
//  4. /proc/pressure/cpu "some" with /proc/stat ctxt: a lower bound on the
//     mean wait; percentiles estimated the same way (see psiSampler).
//
// New tries them in that order and keeps the first that works; Choice says
// which one and why the better ones were not used, so the agent can say it
// once. eBPF failing is never an error for the agent: it falls through to
// /proc.
//
// The package only measures. It must not decide anything about vCPUs (that
// is the host's engine), must not change kernel state beyond loading and
// attaching its own programs, must not read /proc or /sys outside the
// injected roots, and must not emit a RunQueue that proto.Report.Validate
// would reject.
package runq
