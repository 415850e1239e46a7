package tail

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzStateFile: whatever the state file holds, a Tailer starts, follows
// the log, and never resumes past the end of a file.
func FuzzStateFile(f *testing.F) {
	f.Add([]byte(`{"version":1,"pattern":"X","files":[{"path":"X","dev":1,"ino":2,"offset":5}]}`))
	f.Add([]byte(`{"version":1,"pattern":"X","files":[{"path":"X","dev":1,"ino":2,"offset":-5,"skipping":true}]}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, state []byte) {
		dir := t.TempDir()
		log, st := filepath.Join(dir, "a.log"), filepath.Join(dir, "pos.json")
		os.WriteFile(log, []byte("one\ntwo\n"), 0o644)
		// "X" stands for the log's path, which the fuzzer cannot know.
		os.WriteFile(st, bytes.ReplaceAll(state, []byte("X"), []byte(log)), 0o644)
		tl, err := New(Options{Pattern: log, StateFile: st}, &rec{})
		if err != nil {
			t.Fatal(err)
		}
		tl.Poll()
		for _, p := range tl.Positions() {
			if p.Offset < 0 || p.Offset > 8 {
				t.Fatalf("position %+v outside the file", p)
			}
		}
		tl.Close()
	})
}
