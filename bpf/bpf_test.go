package bpf

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
)

// The committed object holds both program sets, typed for the tracepoints
// guest/runq attaches them to, under a GPL-compatible licence (the kernel
// refuses bpf_probe_read_kernel to anything else).
func TestRunqlatSpec(t *testing.T) {
	spec, err := LoadRunqlat()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		typ    ebpf.ProgramType
		attach ebpf.AttachType
		to     string
	}{
		RunqlatProgBtfSwitch:    {ebpf.Tracing, ebpf.AttachTraceRawTp, "sched_switch"},
		RunqlatProgBtfSwitchSi:  {ebpf.Tracing, ebpf.AttachTraceRawTp, "sched_switch"},
		RunqlatProgBtfWakeup:    {ebpf.Tracing, ebpf.AttachTraceRawTp, "sched_wakeup"},
		RunqlatProgBtfWakeupNew: {ebpf.Tracing, ebpf.AttachTraceRawTp, "sched_wakeup_new"},
		RunqlatProgRawSwitch:    {ebpf.RawTracepoint, ebpf.AttachNone, "sched_switch"},
		RunqlatProgRawWakeup:    {ebpf.RawTracepoint, ebpf.AttachNone, "sched_wakeup"},
		RunqlatProgRawWakeupNew: {ebpf.RawTracepoint, ebpf.AttachNone, "sched_wakeup_new"},
	}
	if len(spec.Programs) != len(want) {
		t.Errorf("%d programs, want %d", len(spec.Programs), len(want))
	}
	for name, w := range want {
		p := spec.Programs[name]
		if p == nil {
			t.Errorf("program %s missing", name)
			continue
		}
		if p.Type != w.typ || p.AttachType != w.attach || p.AttachTo != w.to {
			t.Errorf("%s: %v/%v on %q, want %v/%v on %q", name, p.Type, p.AttachType, p.AttachTo, w.typ, w.attach, w.to)
		}
		if p.License != "Dual MIT/GPL" {
			t.Errorf("%s: licence %q", name, p.License)
		}
	}
	h := spec.Maps[RunqlatMapHists]
	if h == nil || h.Type != ebpf.PerCPUArray || h.MaxEntries != 1 || h.ValueSize != 8*(RunqlatSlots+1) {
		t.Errorf("hists map: %+v", h)
	}
	if s := spec.Maps[RunqlatMapStart]; s == nil || s.Type != ebpf.Hash || s.KeySize != 4 || s.ValueSize != 8 {
		t.Errorf("start map: %+v", s)
	}
	if s := spec.Maps[RunqlatMapStartTask]; s == nil || s.Type != ebpf.TaskStorage || s.ValueSize != 8 {
		t.Errorf("start_task map: %+v", s)
	}
	var count bool
	if v := spec.Variables[RunqlatVarCountPreempted]; v == nil || !v.Constant() {
		t.Errorf("count_preempted is not a const volatile: %+v", v)
	} else if err := v.Get(&count); err != nil || !count {
		t.Errorf("count_preempted defaults to %v (%v), want true", count, err)
	}
}

// `make bpf` (go generate) must give back the committed bytes: the object
// is reproducible and nobody changed runqlat.c without regenerating. This
// needs clang, llvm-strip and libbpf's headers (Debian: clang llvm
// libbpf-dev), which CI installs.
func TestGeneratedFilesAreFresh(t *testing.T) {
	src, err := os.ReadFile("bpf.go")
	if err != nil {
		t.Fatal(err)
	}
	var args []string
	for _, line := range strings.Split(string(src), "\n") {
		if rest, ok := strings.CutPrefix(line, "//go:generate go tool bpf2go "); ok {
			args = strings.Fields(rest)
		}
	}
	if args == nil {
		t.Fatal("no //go:generate go tool bpf2go line in bpf.go")
	}
	for _, tool := range []string{"clang", "llvm-strip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: install Debian's clang, llvm and libbpf-dev (CI's setup does): %v", tool, err)
		}
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out := t.TempDir()
	cmd := exec.Command(goBin, append([]string{"tool", "bpf2go", "-output-dir", out}, args...)...)
	cmd.Env = append(os.Environ(), "GOPACKAGE=bpf", "GOFILE=bpf.go")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bpf2go: %v\n%s", err, b)
	}
	for _, f := range []string{"runqlat_bpfel.o", "runqlat_bpfel.go"} {
		got, err := os.ReadFile(filepath.Join(out, f))
		if err != nil {
			t.Fatal(err)
		}
		committed, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, committed) {
			t.Errorf("%s differs from a fresh build (%d vs %d bytes): run `make bpf` and commit, or check the clang version (bpf/README.md)", f, len(got), len(committed))
		}
	}
}
