package applog

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoadFile: any config file is either accepted with sane values or
// rejected with an error naming the file; never a panic.
func FuzzLoadFile(f *testing.F) {
	f.Add([]byte("path = \"/var/log/a.log\"\nformat = \"nginx\"\n[sla]\npercentile = \"p95\"\ntarget = \"300ms\"\n"))
	f.Add([]byte("path = \"/a\"\nformat = \"json\"\ndrop_statuses = [\"5xx\", 429]\n[fields]\ntime = \"ts\"\n"))
	f.Add([]byte("path = \"/a\"\nformat = \"regex\"\nregex = '(?P<time>\\S+)'\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(t.TempDir(), "app.toml")
		os.WriteFile(p, b, 0o644)
		a, err := LoadFile(p)
		if err != nil {
			if !bytes.Contains([]byte(err.Error()), []byte(p)) {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if a.Name == "" || a.Path == "" || a.MaxLineBytes < 256 || a.SLAPercentile < 0 || a.SLAPercentile >= 1 || a.SLAMean < 0 || a.SLATarget < 0 {
			t.Fatalf("accepted insane config %+v", a)
		}
	})
}

// FuzzLines: the splitter never delivers more than maxLine bytes and loses
// no byte of a short-lined input.
func FuzzLines(f *testing.F) {
	f.Add([]byte("a\nbb\r\n\nccc"), uint8(2))
	f.Fuzz(func(t *testing.T, in []byte, max uint8) {
		limit := int(max) + 1
		var out [][]byte
		cuts := 0
		Lines(bufio.NewReaderSize(bytes.NewReader(in), 16), limit, func(l []byte, cut bool) {
			if len(l) > limit {
				t.Fatalf("line of %d bytes, limit %d", len(l), limit)
			}
			if cut {
				cuts++
			}
			out = append(out, bytes.Clone(l))
		})
		if cuts == 0 && !bytes.Contains(in, []byte("\r")) {
			want := bytes.Split(bytes.TrimSuffix(in, []byte("\n")), []byte("\n"))
			if len(in) == 0 {
				want = nil
			}
			if len(want) != len(out) {
				t.Fatalf("%d lines, want %d", len(out), len(want))
			}
			for i := range want {
				if !bytes.Equal(want[i], out[i]) {
					t.Fatalf("line %d: %q, want %q", i, out[i], want[i])
				}
			}
		}
	})
}
