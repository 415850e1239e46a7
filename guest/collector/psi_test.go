package collector

import (
	"errors"
	"io/fs"
	"strings"
	"testing"

	"github.com/hotplugheaven/hotplug/proto"
)

func TestReadPSI(t *testing.T) {
	for _, tc := range []struct {
		name    string
		root    string
		content string // replaces proc/pressure/cpu when set
		want    *proto.PSI
		wantErr error
	}{
		{name: "fixture", root: "guest4", want: &proto.PSI{SomeAvg10: 3.21, SomeTotalMicros: 48192637}},
		{name: "kernel without PSI", root: "minimal", wantErr: fs.ErrNotExist},
		{name: "only a some line (kernels before 5.13 had no full line for cpu)", root: "guest4",
			content: "some avg10=0.50 avg60=0.10 avg300=0.02 total=1234\n", want: &proto.PSI{SomeAvg10: 0.5, SomeTotalMicros: 1234}},
		{name: "negative", root: "guest4", content: "some avg10=-1.00 avg60=0 avg300=0 total=1\n", wantErr: ErrParse},
		{name: "truncated line", root: "guest4", content: "some avg10=1.00\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := fixture(t, tc.root)
			if tc.content != "" {
				writeFile(t, root, "proc/pressure/cpu", tc.content)
			}
			s, err := New(optionsFor(root, newFakeClock()))
			if err != nil {
				t.Fatal(err)
			}
			readSource(s, srcPSI)
			got := s.srcs[srcPSI].(*psiSource).cur
			src := s.Sources()[srcPSI]
			if tc.want != nil {
				if got == nil || *got != *tc.want || !src.InUse || src.Err != nil {
					t.Errorf("got %+v (source %+v), want %+v", got, src, tc.want)
				}
				return
			}
			if got != nil || src.InUse || src.Err == nil {
				t.Fatalf("got %+v (source %+v), want nil and a reason", got, src)
			}
			if tc.wantErr != nil && !errors.Is(src.Err, tc.wantErr) {
				t.Errorf("reason %v, want %v", src.Err, tc.wantErr)
			}
			if !strings.Contains(src.Err.Error(), "pressure/cpu") {
				t.Errorf("reason %q does not name the file", src.Err)
			}
		})
	}
}
