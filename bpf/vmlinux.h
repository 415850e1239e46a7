/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * vmlinux.h — the few kernel types runqlat.c uses, for CO-RE.
 *
 * How it was made: the Debian cloud kernel the integration tests boot
 * (linux-image-6.1.0-56-cloud-amd64, cached by `make deps` under
 * build/cache/) was decompressed from its vmlinuz (LZ4 payload) and its BTF
 * dumped with Debian's bpftool 7.1:
 *
 *   bpftool btf dump file vmlinux format c > vmlinux-full.h
 *
 * then trimmed by hand to the definitions below, copied verbatim (a struct
 * keeps only the fields this program reads; an enum only the values it
 * uses). Trimming is safe because of
 * CO-RE: struct task_struct carries preserve_access_index, so clang records
 * each field access by name and the loader (cilium/ebpf) rewrites the offset
 * from the running kernel's BTF. Nothing here is tied to 6.1's layout.
 * The full dump is ~3 MB; this file is committed instead so that `make bpf`
 * needs no kernel and gives the same bytes on every machine.
 */
#ifndef __VMLINUX_H__
#define __VMLINUX_H__

#pragma clang attribute push (__attribute__((preserve_access_index)), apply_to = record)

typedef signed char __s8;
typedef unsigned char __u8;
typedef short int __s16;
typedef short unsigned int __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long int __s64;
typedef long long unsigned int __u64;
typedef __u8 u8;
typedef __s16 s16;
typedef __u16 u16;
typedef __s32 s32;
typedef __u32 u32;
typedef __s64 s64;
typedef __u64 u64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef int __kernel_pid_t;
typedef __kernel_pid_t pid_t;
typedef _Bool bool;

enum {
	false = 0,
	true = 1,
};

enum bpf_map_type {
	BPF_MAP_TYPE_UNSPEC = 0,
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PROG_ARRAY = 3,
	BPF_MAP_TYPE_PERF_EVENT_ARRAY = 4,
	BPF_MAP_TYPE_PERCPU_HASH = 5,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_TASK_STORAGE = 29,
};

enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
	BPF_EXIST = 2,
	BPF_F_LOCK = 4,
};

enum {
	BPF_F_NO_PREALLOC = 1,
};

enum {
	BPF_LOCAL_STORAGE_GET_F_CREATE = 1,
};

/* Scheduler statistics (CONFIG_SCHED_INFO): last_queued is the run-queue
 * clock at which the task was queued, 0 while it is not waiting. */
struct sched_info {
	long unsigned int pcount;
	long long unsigned int run_delay;
	long long unsigned int last_arrival;
	long long unsigned int last_queued;
};

struct rq {
	u64 clock;
	int cpu;
};

/* rq exists with CONFIG_FAIR_GROUP_SCHED. */
struct cfs_rq {
	struct rq *rq;
};

struct sched_entity {
	struct cfs_rq *cfs_rq;
};

/* Kernels since 5.14 name the run state __state (unsigned int); runqlat.c
 * reads the older `long state` through a ___pre514 flavour. */
struct task_struct {
	unsigned int __state;
	struct sched_entity se;
	struct sched_info sched_info;
	pid_t pid;
};

#pragma clang attribute pop

#endif /* __VMLINUX_H__ */
