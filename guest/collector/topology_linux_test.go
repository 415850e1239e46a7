//go:build 386 || amd64

// procfs parses cpuinfo with the parser of the architecture it is built for;
// the fixtures are x86 cpuinfo files, and APIC ids an x86 notion.

package collector

import (
	"errors"
	"slices"
	"testing"

	"github.com/prometheus/procfs"

	"github.com/hotplugheaven/hotplug/proto"
)

func TestReadTopology(t *testing.T) {
	for _, tc := range []struct {
		root string
		want []proto.CPUTopology
	}{
		// Hot-added CPUs 2 and 3 sit in socket 1: APIC ids 4 and 5.
		{"guest4", []proto.CPUTopology{{CPU: 0, APICID: 0}, {CPU: 1, APICID: 1}, {CPU: 2, APICID: 4}, {CPU: 3, APICID: 5}}},
		{"minimal", []proto.CPUTopology{{CPU: 0, APICID: 0}, {CPU: 1, APICID: 1}}},
	} {
		t.Run(tc.root, func(t *testing.T) {
			got, err := ReadTopology(optionsFor("testdata/"+tc.root, nil))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestReadTopologyMissing(t *testing.T) {
	if _, err := ReadTopology(Options{ProcRoot: t.TempDir()}); err == nil {
		t.Error("no error without cpuinfo")
	}
}

func TestTopology(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      []procfs.CPUInfo
		want    []proto.CPUTopology
		wantErr error
	}{
		{"initial apicid fallback", []procfs.CPUInfo{{Processor: 3, InitialAPICID: "6"}}, []proto.CPUTopology{{CPU: 3, APICID: 6}}, nil},
		{"apicid wins", []procfs.CPUInfo{{Processor: 1, APICID: "2", InitialAPICID: "9"}}, []proto.CPUTopology{{CPU: 1, APICID: 2}}, nil},
		{"x2apic ids are 32-bit", []procfs.CPUInfo{{Processor: 1, APICID: "4294967295"}}, []proto.CPUTopology{{CPU: 1, APICID: 1<<32 - 1}}, nil},
		{"no apic ids (arm64)", []procfs.CPUInfo{{Processor: 0}, {Processor: 1}}, nil, ErrNoAPICID},
		{"garbage", []procfs.CPUInfo{{Processor: 0, APICID: "zero"}}, nil, ErrParse},
		{"too large", []procfs.CPUInfo{{Processor: 0, APICID: "4294967296"}}, nil, ErrParse},
		{"processor past MaxCPUs", []procfs.CPUInfo{{Processor: proto.MaxCPUs, APICID: "1"}}, nil, ErrParse},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := topology(tc.in)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("error %v, want %v", err, tc.wantErr)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
