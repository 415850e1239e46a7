package eventlog

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func TestAppendReopenContinues(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		ev := &Event{Time: t0.Add(time.Duration(i) * time.Second), VM: "vm1", Kind: "scale_up", From: i + 1, To: i + 2, Result: i + 2,
			Outcome: OutcomeOK, Steps: []Step{{Name: "plug", DurationMS: 12.5, OK: true}}}
		if err := l.Append(ev); err != nil {
			t.Fatal(err)
		}
		if ev.Seq != uint64(i+1) {
			t.Fatalf("seq = %d, want %d", ev.Seq, i+1)
		}
	}
	l.Close()

	l, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ev := &Event{Time: t0.Add(time.Minute), VM: "vm2", Kind: "scale_down", Outcome: OutcomeOK}
	if err := l.Append(ev); err != nil || ev.Seq != 4 {
		t.Fatalf("after reopen: seq %d, err %v", ev.Seq, err)
	}
	l.Close()

	all, skipped, err := ReadFile(path, Filter{})
	if err != nil || skipped != 0 || len(all) != 4 {
		t.Fatalf("read: %d events, %d skipped, %v", len(all), skipped, err)
	}
	if all[0].Steps[0].Name != "plug" || all[3].VM != "vm2" {
		t.Fatalf("events not preserved: %+v", all)
	}
	vm1, _, _ := ReadFile(path, Filter{VM: "vm1", Since: t0.Add(time.Second)})
	if len(vm1) != 2 || vm1[0].Seq != 2 {
		t.Fatalf("filter: %+v", vm1)
	}
}

// TestTornTailRepaired: a crash in the middle of a write leaves a partial
// line; the next Open cuts it and keeps every whole line.
func TestTornTailRepaired(t *testing.T) {
	for _, torn := range []string{`{"seq":3,"time":"2026-11-22T12:00:00Z","vm":"vm`, `{`, ``} {
		path := filepath.Join(t.TempDir(), "events.jsonl")
		l, _ := Open(path)
		for i := 0; i < 2; i++ {
			if err := l.Append(&Event{Time: t0, VM: "vm1", Kind: "scale_up", Outcome: OutcomeOK}); err != nil {
				t.Fatal(err)
			}
		}
		l.Close()
		whole, _ := os.ReadFile(path)
		f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		f.WriteString(torn)
		f.Close()

		l, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		if l.Repaired != int64(len(torn)) {
			t.Errorf("torn %q: repaired %d bytes", torn, l.Repaired)
		}
		ev := &Event{Time: t0, VM: "vm1", Kind: "scale_down", Outcome: OutcomeOK}
		if err := l.Append(ev); err != nil || ev.Seq != 3 {
			t.Fatalf("torn %q: append after repair: seq %d err %v", torn, ev.Seq, err)
		}
		l.Close()
		got, _ := os.ReadFile(path)
		if !bytes.HasPrefix(got, whole) || bytes.Count(got, []byte("\n")) != 3 {
			t.Fatalf("torn %q: file after repair:\n%s", torn, got)
		}
		events, skipped, _ := ReadFile(path, Filter{})
		if len(events) != 3 || skipped != 0 {
			t.Fatalf("torn %q: %d events, %d skipped", torn, len(events), skipped)
		}
	}
}

func TestOnlyTornLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	os.WriteFile(path, []byte(`{"seq":1,"ti`), 0o600)
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ev := &Event{Time: t0, VM: "a", Outcome: OutcomeOK}
	if err := l.Append(ev); err != nil || ev.Seq != 1 {
		t.Fatalf("seq %d err %v", ev.Seq, err)
	}
}

// TestLongLog checks the backwards scan across chunk boundaries.
func TestLongLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	l, _ := Open(path)
	reason := strings.Repeat("x", 1000)
	for i := 0; i < 200; i++ {
		if err := l.Append(&Event{Time: t0, VM: "vm", Reason: reason, Outcome: OutcomeOK}); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	l, _ = Open(path)
	defer l.Close()
	ev := &Event{Time: t0, VM: "vm", Outcome: OutcomeOK}
	l.Append(ev)
	if ev.Seq != 201 {
		t.Fatalf("seq after reopen of a long log = %d", ev.Seq)
	}
}

// TestWriteFailureCounted: a full device makes Append fail with a clear
// error and count the loss rather than drop it silently.
func TestWriteFailureCounted(t *testing.T) {
	l, err := Open("/dev/full")
	if err != nil {
		t.Skip("no /dev/full:", err)
	}
	defer l.Close()
	err = l.Append(&Event{Time: t0, VM: "vm", Outcome: OutcomeOK})
	if err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("append to a full device: %v", err)
	}
	if l.Lost() != 1 {
		t.Fatalf("lost = %d", l.Lost())
	}
}

func TestConcurrentAppends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	l, _ := Open(path)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				l.Append(&Event{Time: t0, VM: "vm", Outcome: OutcomeOK})
			}
		}()
	}
	wg.Wait()
	l.Close()
	events, skipped, _ := ReadFile(path, Filter{})
	if len(events) != 200 || skipped != 0 {
		t.Fatalf("%d events, %d skipped", len(events), skipped)
	}
	for i, ev := range events {
		if ev.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d", i, ev.Seq)
		}
	}
}

func TestUnfinished(t *testing.T) {
	evs := []Event{
		{Seq: 1, VM: "a", Outcome: OutcomeStarted},
		{Seq: 2, VM: "a", Outcome: OutcomeOK, Action: 1},
		{Seq: 3, VM: "b", Outcome: OutcomeStarted},
		{Seq: 4, VM: "a", Outcome: OutcomeStarted},
		{Seq: 5, VM: "a", Kind: "reconcile", Outcome: OutcomeOK},
	}
	got := Unfinished(evs, "a")
	if len(got) != 1 || got[0].Seq != 4 {
		t.Fatalf("unfinished for a: %+v", got)
	}
	if got := Unfinished(evs, "b"); len(got) != 1 || got[0].Seq != 3 {
		t.Fatalf("unfinished for b: %+v", got)
	}
	evs = append(evs, Event{Seq: 6, VM: "a", Kind: "recover", Outcome: OutcomeOK, Action: 4})
	if got := Unfinished(evs, "a"); len(got) != 0 {
		t.Fatalf("recovered action still unfinished: %+v", got)
	}
}
