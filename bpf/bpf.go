// Package bpf holds Hot-Plug Heaven's eBPF programs, compiled: the C
// sources in this directory and the objects and Go bindings bpf2go made
// from them, committed so that building the agent needs no C toolchain.
// `make bpf` regenerates them (see README.md).
//
// runqlat.c measures run-queue latency into a log2 histogram; its tp_btf
// and raw_tp program sets do the same work for different kernels.
//
// This package only carries the objects. It must not load, attach or read
// anything: guest/runq decides whether eBPF can be used, loads one program
// set and falls back to /proc when it cannot. Nothing here may be edited by
// hand except runqlat.c, vmlinux.h and this file.
package bpf

// Flags: bpfel only (one object serves amd64 and arm64: the programs read
// their arguments from the u64 context array, never from pt_regs); the
// kernel types come from the trimmed vmlinux.h here, never the host's
// headers, so the object does not depend on the machine that built it.
//
//go:generate go tool bpf2go -target bpfel -type hist -type hist_cpu Runqlat runqlat.c -- -I. -Wall -Werror

// Histogram geometry shared with runqlat.c. A test checks them against
// the compiled object.
const (
	// RunqlatSlots is MAX_SLOTS: slot i counts waits in [2^i, 2^(i+1)) µs.
	RunqlatSlots = 32
)
