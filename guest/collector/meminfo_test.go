package collector

import (
	"errors"
	"testing"
)

func TestReadMeminfo(t *testing.T) {
	for _, tc := range []struct {
		name         string
		root         string
		content      string // replaces proc/meminfo when set
		want         memory
		wantDegraded bool
		wantErr      bool
	}{
		{name: "guest4", root: "guest4", want: memory{4025436 << 10, 3314772 << 10}},
		{name: "kernel before 3.14 estimates", root: "minimal", want: memory{1020176 << 10, (612384 + 41120 + 230912) << 10}, wantDegraded: true},
		{name: "estimate never above total", root: "guest4", content: "MemTotal: 100 kB\nMemFree: 90 kB\nCached: 50 kB\n",
			want: memory{100 << 10, 100 << 10}, wantDegraded: true},
		{name: "nothing about free memory", root: "guest4", content: "MemTotal: 100 kB\n", wantErr: true},
		{name: "unknown unit", root: "guest4", content: "MemTotal: 100 MB\n", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := fixture(t, tc.root)
			if tc.content != "" {
				writeFile(t, root, "proc/meminfo", tc.content)
			}
			s, err := New(optionsFor(root, newFakeClock()))
			if err != nil {
				t.Fatal(err)
			}
			err = readSource(s, srcMeminfo)
			got := s.srcs[srcMeminfo].(*meminfoSource).cur
			if src := s.Sources()[srcMeminfo]; (err != nil && !src.InUse) != tc.wantErr {
				t.Fatalf("error %v, want error %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
			src := s.Sources()[srcMeminfo]
			if tc.wantErr {
				if src.InUse || src.Err == nil {
					t.Errorf("source %+v", src)
				}
				return
			}
			if !src.InUse || errors.Is(src.Err, errNoMemAvailable) != tc.wantDegraded {
				t.Errorf("source %+v, want degraded %v", src, tc.wantDegraded)
			}
		})
	}
}
