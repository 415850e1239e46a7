package eventlog

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func writeEvents(t testing.TB, n int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "events.jsonl")
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := range n {
		vm := []string{"a", "b"}[i%2]
		outcome := OutcomeOK
		if i%5 == 0 {
			outcome = OutcomeStarted
		}
		if err := l.Append(&Event{Time: t0.Add(time.Duration(i) * time.Second), VM: vm, Kind: KindScaleUp, Outcome: outcome}); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

// Paging with the cursor visits every matching event once, in order.
func TestReadPageVisitsEachEventOnce(t *testing.T) {
	path := writeEvents(t, 101)
	want, _, err := ReadFile(path, Filter{VM: "a"})
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	f := Filter{VM: "a"}
	for pages := 0; ; pages++ {
		p, err := ReadPage(path, f, 7)
		if err != nil || pages > 100 {
			t.Fatal(err, pages)
		}
		for _, ev := range p.Events {
			got = append(got, ev.Seq)
			f.After = ev.Seq
		}
		if !p.More {
			break
		}
		if len(p.Events) != 7 {
			t.Fatalf("a page with more after it holds %d events, want 7", len(p.Events))
		}
	}
	if len(got) != len(want) {
		t.Fatalf("paged %d events, read %d at once", len(got), len(want))
	}
	for i, ev := range want {
		if got[i] != ev.Seq || ev.VM != "a" || ev.Outcome == OutcomeStarted {
			t.Fatalf("event %d: paged seq %d, read %+v", i, got[i], ev)
		}
	}
	if p, err := ReadPage(filepath.Join(t.TempDir(), "none"), Filter{}, 5); err != nil || len(p.Events) != 0 || p.More {
		t.Errorf("a log not written yet: %+v, %v; want an empty page", p, err)
	}
}

// Follow delivers the events there, then each new one once its line is
// whole, exactly once.
func TestFollowWaitsForWholeLines(t *testing.T) {
	path := writeEvents(t, 3)
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan Event, 16)
	done := make(chan error, 1)
	go func() {
		_, err := Follow(ctx, path, Filter{WithStarted: true}, 10*time.Millisecond, func(ev Event) { got <- ev })
		done <- err
	}()
	for i := range 3 {
		select {
		case ev := <-got:
			if ev.Seq != uint64(i+1) {
				t.Fatalf("event %d has seq %d", i, ev.Seq)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the events already in the log were not delivered")
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	line := []byte(`{"seq":4,"time":"2026-11-22T12:01:00Z","vm":"a","kind":"scale_down","outcome":"ok"}` + "\n")
	f.Write(line[:20])
	select {
	case ev := <-got:
		t.Fatalf("half a line delivered as %+v", ev)
	case <-time.After(200 * time.Millisecond):
	}
	f.Write(line[20:])
	f.Close()
	select {
	case ev := <-got:
		if ev.Seq != 4 || ev.Kind != KindScaleDown {
			t.Fatalf("the completed line came as %+v", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the completed line was never delivered")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Fatalf("%d events delivered twice", len(got))
	}
}

// FuzzOpenRepairs: whatever a crash or a hand edit left in the file, Open
// cuts it back to whole lines, Append continues it and the readers find
// the new event last.
func FuzzOpenRepairs(f *testing.F) {
	f.Add([]byte(""))
	f.Add([]byte(`{"seq":1,"vm":"a","outcome":"ok"}` + "\n" + `{"seq":2,"vm":"a","outc`))
	f.Add([]byte("garbage\n\x00\xff{\n{\"seq\":7}\n"))
	f.Add([]byte(`{"seq":18446744073709551615}` + "\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "events.jsonl")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		l, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		whole := bytes.LastIndexByte(data, '\n') + 1
		if l.Repaired != int64(len(data)-whole) {
			t.Fatalf("repaired %d bytes of %d, want the %d after the last newline", l.Repaired, len(data), len(data)-whole)
		}
		ev := &Event{Time: t0, VM: "fuzz", Kind: KindReconcile, Outcome: OutcomeOK}
		if err := l.Append(ev); err != nil {
			t.Fatal(err)
		}
		l.Close()
		b, _ := os.ReadFile(path)
		if !bytes.HasPrefix(b, data[:whole]) || !bytes.HasSuffix(b, []byte("\n")) {
			t.Fatalf("after Open and Append the file is %q", b)
		}
		if ev.Seq == 0 {
			return // the last whole line claimed the largest seq; the new one wrapped
		}
		evs, _, err := ReadFile(path, Filter{WithStarted: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 || evs[len(evs)-1].Seq != ev.Seq || evs[len(evs)-1].VM != "fuzz" {
			t.Fatalf("the appended event (seq %d) is not the last one read: %+v", ev.Seq, evs)
		}
	})
}

// FuzzReaders: any bytes as a log; the readers never panic, honour the
// cursor and the page size, and agree with each other.
func FuzzReaders(f *testing.F) {
	f.Add([]byte(`{"seq":1,"vm":"a","outcome":"ok"}`+"\n"+`{"seq":2,"vm":"b","outcome":"started"}`+"\n"), uint64(0), uint8(1))
	f.Add([]byte(`{"seq":3,"vm":"a"`+"\n"+`{"seq":x,}`+"\n"+`{"seq":9,"vm":"a","outcome":"ok"}`), uint64(2), uint8(5))
	f.Fuzz(func(t *testing.T, data []byte, after uint64, limit uint8) {
		path := filepath.Join(t.TempDir(), "events.jsonl")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		flt := Filter{After: after}
		all, _, err := Read(bytes.NewReader(data[:bytes.LastIndexByte(data, '\n')+1]), flt)
		if err != nil {
			return // a line over MaxLine: an error, not a panic
		}
		p, err := ReadPage(path, flt, int(limit)+1)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Events) > int(limit)+1 || (p.More && len(p.Events) != int(limit)+1) {
			t.Fatalf("page of %d events (more %v) with limit %d", len(p.Events), p.More, int(limit)+1)
		}
		for i, ev := range p.Events {
			if ev.Seq <= after || ev.Outcome == OutcomeStarted {
				t.Fatalf("event %+v passed the filter after %d", ev, after)
			}
			if all[i].Seq != ev.Seq {
				t.Fatalf("page event %d has seq %d, Read has %d", i, ev.Seq, all[i].Seq)
			}
		}
		if !p.More && len(p.Events) != len(all) {
			t.Fatalf("last page holds %d events, Read %d", len(p.Events), len(all))
		}
	})
}
