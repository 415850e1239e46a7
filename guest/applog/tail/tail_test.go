package tail

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

type rec struct {
	mu     sync.Mutex
	lines  []string
	cut    int
	opened []string
	closed []string
}

func (r *rec) Open(f *File) {
	r.mu.Lock()
	r.opened = append(r.opened, filepath.Base(f.Path))
	r.mu.Unlock()
}
func (r *rec) Close(f *File) {
	r.mu.Lock()
	r.closed = append(r.closed, filepath.Base(f.Path))
	r.mu.Unlock()
}
func (r *rec) Line(f *File, l []byte, cut bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if cut {
		r.cut++
	}
	r.lines = append(r.lines, string(l))
}
func (r *rec) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.lines
	r.lines = nil
	return out
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func appendTo(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func lines(prefix string, from, to int) (string, []string) {
	var b strings.Builder
	var want []string
	for i := from; i < to; i++ {
		l := fmt.Sprintf("%s %d", prefix, i)
		b.WriteString(l + "\n")
		want = append(want, l)
	}
	return b.String(), want
}

type fixture struct {
	dir, log, state string
	clk             *clock
}

func newFixture(t *testing.T) *fixture {
	dir := t.TempDir()
	return &fixture{dir: dir, log: filepath.Join(dir, "access.log"), state: filepath.Join(dir, "state", "pos.json"),
		clk: &clock{time.Unix(1000, 0)}}
}

func (fx *fixture) tailer(t *testing.T, o Options) (*Tailer, *rec) {
	t.Helper()
	if o.Pattern == "" {
		o.Pattern = fx.log
	}
	if o.StateFile == "" {
		o.StateFile = fx.state
	}
	o.now = fx.clk.now
	h := &rec{}
	tl, err := New(o, h)
	if err != nil {
		t.Fatal(err)
	}
	return tl, h
}

func expect(t *testing.T, h *rec, want []string) {
	t.Helper()
	if got := h.take(); !slices.Equal(got, want) {
		t.Fatalf("lines:\n got %q\nwant %q", got, want)
	}
}

func TestStartsAtEndThenFollows(t *testing.T) {
	fx := newFixture(t)
	old, _ := lines("old", 0, 3)
	appendTo(t, fx.log, old+"half of a line")
	tl, h := fx.tailer(t, Options{})
	tl.Poll()
	expect(t, h, nil)
	appendTo(t, fx.log, " ends here\n")
	s, want := lines("new", 0, 5)
	appendTo(t, fx.log, s)
	tl.Poll()
	expect(t, h, want) // the half line we started inside is skipped
}

func TestFromStart(t *testing.T) {
	fx := newFixture(t)
	s, want := lines("x", 0, 4)
	appendTo(t, fx.log, s)
	tl, h := fx.tailer(t, Options{FromStart: true})
	tl.Poll()
	expect(t, h, want)
}

func TestPartialLineWaitsForNewline(t *testing.T) {
	fx := newFixture(t)
	appendTo(t, fx.log, "")
	tl, h := fx.tailer(t, Options{})
	tl.Poll()
	appendTo(t, fx.log, "GET /a")
	tl.Poll()
	expect(t, h, nil)
	appendTo(t, fx.log, "bc 200\r\nGET /d")
	tl.Poll()
	expect(t, h, []string{"GET /abc 200"})
	appendTo(t, fx.log, " 404\n")
	tl.Poll()
	expect(t, h, []string{"GET /d 404"})
}

func TestLongLinesAreCutAndCounted(t *testing.T) {
	fx := newFixture(t)
	appendTo(t, fx.log, "")
	tl, h := fx.tailer(t, Options{MaxLineBytes: 16})
	tl.Poll()
	long := strings.Repeat("a", 40)
	appendTo(t, fx.log, long+"\nok\n"+strings.Repeat("b", 10))
	tl.Poll()
	expect(t, h, []string{long[:16], "ok"})
	// A long line arriving in pieces: cut once, the rest skipped.
	appendTo(t, fx.log, strings.Repeat("b", 10))
	tl.Poll()
	appendTo(t, fx.log, strings.Repeat("b", 100))
	tl.Poll()
	appendTo(t, fx.log, "bbb\nafter\n")
	tl.Poll()
	expect(t, h, []string{strings.Repeat("b", 16), "after"})
	if h.cut != 2 {
		t.Fatalf("%d cut lines, want 2", h.cut)
	}
	// Memory stays bounded: the buffer never grew.
	for _, f := range tl.files {
		if len(f.buf) != 16+readChunk {
			t.Fatalf("buffer grew to %d", len(f.buf))
		}
	}
}

func TestRotationRenameCreate(t *testing.T) {
	fx := newFixture(t)
	appendTo(t, fx.log, "")
	tl, h := fx.tailer(t, Options{RotateGrace: 5 * time.Second})
	tl.Poll()
	s, want := lines("a", 0, 3)
	appendTo(t, fx.log, s)
	tl.Poll()
	expect(t, h, want)
	// Rotate: rename, the server still writes to the old file, then a new one.
	writer, _ := os.OpenFile(fx.log, os.O_WRONLY|os.O_APPEND, 0)
	if err := os.Rename(fx.log, fx.log+".1"); err != nil {
		t.Fatal(err)
	}
	s, want = lines("a", 3, 6)
	writer.WriteString(s + "torn")
	s2, want2 := lines("b", 0, 2)
	appendTo(t, fx.log, s2)
	tl.Poll()
	expect(t, h, append(want, want2...)) // old file drained first
	writer.WriteString(" tail\n")
	writer.Close()
	fx.clk.t = fx.clk.t.Add(time.Second)
	tl.Poll()
	expect(t, h, []string{"torn tail"})
	fx.clk.t = fx.clk.t.Add(10 * time.Second)
	tl.Poll()
	if len(h.closed) != 1 || len(tl.files) != 1 {
		t.Fatalf("closed %v, following %d files", h.closed, len(tl.files))
	}
	s, want = lines("b", 2, 4)
	appendTo(t, fx.log, s)
	tl.Poll()
	expect(t, h, want)
}

func TestCopyTruncate(t *testing.T) {
	fx := newFixture(t)
	appendTo(t, fx.log, "")
	tl, h := fx.tailer(t, Options{})
	tl.Poll()
	s, want := lines("a", 0, 5)
	appendTo(t, fx.log, s)
	tl.Poll()
	expect(t, h, want)
	// logrotate copytruncate: copy elsewhere, truncate in place, writes go on.
	if err := os.Truncate(fx.log, 0); err != nil {
		t.Fatal(err)
	}
	s, want = lines("b", 0, 2)
	appendTo(t, fx.log, s)
	tl.Poll()
	expect(t, h, want)
}

func TestRestartNeitherLosesNorDuplicates(t *testing.T) {
	fx := newFixture(t)
	appendTo(t, fx.log, "")
	tl, h := fx.tailer(t, Options{})
	tl.Poll()
	s, want := lines("a", 0, 3)
	appendTo(t, fx.log, s+"par")
	tl.Poll()
	expect(t, h, want)
	if err := tl.Close(); err != nil {
		t.Fatal(err)
	}
	// While the agent is down: the partial line ends, more lines come.
	s, want = lines("a", 3, 6)
	appendTo(t, fx.log, "tial\n"+s)
	tl2, h2 := fx.tailer(t, Options{})
	tl2.Poll()
	expect(t, h2, append([]string{"partial"}, want...))
	tl2.Close()
	// Again, with a rotation while the agent is down: the old file's last
	// lines are found under its new name, the new file is read whole.
	s, want = lines("a", 6, 8)
	appendTo(t, fx.log, s)
	os.Rename(fx.log, fx.log+".1")
	s2, want2 := lines("b", 0, 3)
	appendTo(t, fx.log, s2)
	tl3, h3 := fx.tailer(t, Options{})
	tl3.Poll()
	expect(t, h3, append(want, want2...))
	tl3.Poll()
	expect(t, h3, nil)
}

func TestStateFileIsAtomicAndDamageIgnored(t *testing.T) {
	fx := newFixture(t)
	s, _ := lines("a", 0, 3)
	appendTo(t, fx.log, s)
	tl, _ := fx.tailer(t, Options{})
	tl.Poll()
	tl.Close()
	b, err := os.ReadFile(fx.state)
	if err != nil {
		t.Fatal(err)
	}
	var st stateFile
	if err := json.Unmarshal(b, &st); err != nil || len(st.Files) != 1 || st.Files[0].Offset != int64(len(s)) {
		t.Fatalf("state %s: %v", b, err)
	}
	ents, _ := os.ReadDir(filepath.Dir(fx.state))
	if len(ents) != 1 {
		t.Fatalf("temporary files left: %v", ents)
	}
	for _, bad := range []string{"{", `{"version":7}`, strings.Repeat(" ", maxStateBytes+10)} {
		os.WriteFile(fx.state, []byte(bad), 0o644)
		appendTo(t, fx.log, "more\n")
		tl, h := fx.tailer(t, Options{})
		tl.Poll() // damaged state: start at the end, like a first start
		expect(t, h, nil)
		appendTo(t, fx.log, "next\n")
		tl.Poll()
		expect(t, h, []string{"next"})
		tl.Close()
	}
}

func TestGlobFollowsSeveralFiles(t *testing.T) {
	fx := newFixture(t)
	a, b := filepath.Join(fx.dir, "a.log"), filepath.Join(fx.dir, "b.log")
	appendTo(t, a, "")
	tl, h := fx.tailer(t, Options{Pattern: filepath.Join(fx.dir, "*.log")})
	tl.Poll()
	appendTo(t, a, "a1\n")
	appendTo(t, b, "b1\n") // appeared after start: read from its beginning
	tl.Poll()
	got := h.take()
	slices.Sort(got)
	if !slices.Equal(got, []string{"a1", "b1"}) {
		t.Fatalf("got %q", got)
	}
}

func TestNewRejectsBadPatterns(t *testing.T) {
	for _, p := range []string{"relative/*.log", "/var/log/[.log"} {
		if _, err := New(Options{Pattern: p}, &rec{}); err == nil {
			t.Errorf("pattern %q accepted", p)
		}
	}
}

func TestRunStopsAndSaves(t *testing.T) {
	fx := newFixture(t)
	appendTo(t, fx.log, "")
	h := &rec{}
	tl, err := New(Options{Pattern: fx.log, StateFile: fx.state, Poll: 10 * time.Millisecond, Notify: true}, h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- tl.Run(ctx) }()
	time.Sleep(50 * time.Millisecond)
	s, want := lines("r", 0, 100)
	appendTo(t, fx.log, s)
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.mu.Lock()
		n := len(h.lines)
		h.mu.Unlock()
		if n == len(want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	expect(t, h, want)
	b, _ := os.ReadFile(fx.state)
	if !strings.Contains(string(b), fmt.Sprintf(`"offset":%d`, len(s))) {
		t.Fatalf("positions not saved at stop: %s", b)
	}
}
