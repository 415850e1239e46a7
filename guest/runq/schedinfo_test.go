package runq

import (
	"bytes"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"
)

// kernelBTF builds raw kernel BTF holding the structs schedInfoFields walks,
// minus the member drop names ("type.member"), and parses it back as the
// loader would read /sys/kernel/btf/vmlinux.
func kernelBTF(t *testing.T, drop string) *btf.Spec {
	t.Helper()
	u64 := &btf.Int{Name: "long long unsigned int", Size: 8}
	i32 := &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	strct := func(name string, members ...btf.Member) *btf.Struct {
		var kept []btf.Member
		var off btf.Bits
		for _, m := range members {
			if name+"."+m.Name == drop {
				continue
			}
			m.Offset = off
			off += 64
			kept = append(kept, m)
		}
		return &btf.Struct{Name: name, Size: uint32(off / 8), Members: kept}
	}
	rq := strct("rq", btf.Member{Name: "clock", Type: u64}, btf.Member{Name: "cpu", Type: i32})
	cfsRQ := strct("cfs_rq", btf.Member{Name: "rq", Type: &btf.Pointer{Target: rq}})
	se := strct("sched_entity", btf.Member{Name: "cfs_rq", Type: &btf.Pointer{Target: cfsRQ}})
	si := strct("sched_info", btf.Member{Name: "run_delay", Type: u64}, btf.Member{Name: "last_queued", Type: u64})
	task := strct("task_struct", btf.Member{Name: "pid", Type: i32}, btf.Member{Name: "se", Type: se}, btf.Member{Name: "sched_info", Type: si})
	b, err := btf.NewBuilder([]btf.Type{task}, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := b.Marshal(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

// The sched_info flavour is chosen only when the kernel has every field it
// reads; otherwise the reason names the missing field and the kernel
// option behind it, for the agent's one log line.
func TestSchedInfoFields(t *testing.T) {
	if err := schedInfoFields(kernelBTF(t, "")); err != nil {
		t.Fatalf("all fields present: %v", err)
	}
	for _, drop := range []string{"task_struct.sched_info", "sched_info.last_queued", "cfs_rq.rq", "rq.clock", "task_struct.se"} {
		err := schedInfoFields(kernelBTF(t, drop))
		if err == nil || !strings.Contains(err.Error(), drop) || !strings.Contains(err.Error(), "CONFIG_") {
			t.Errorf("without %s: %v", drop, err)
		}
	}
}
