package proto

import (
	"bytes"
	"testing"
)

// FuzzReader feeds arbitrary streams to the frame reader and decoder. Nothing
// may panic; whatever decodes must validate and survive a re-encode.
func FuzzReader(f *testing.F) {
	for _, m := range []Message{
		&Hello{MinVersion: 1, MaxVersion: 1, Possible: NewCPUSet(0, 1), Present: NewCPUSet(0), Online: NewCPUSet(0), IntervalNanos: 1e9},
		&Welcome{Version: 1, VM: "vm"},
		sampleReport(),
		&Command{ID: 1, Online: NewCPUSet(1)},
		&Ack{ID: 1, OK: true, Online: NewCPUSet(0), Present: NewCPUSet(0)},
	} {
		b, err := Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{'H', 'P', 3, 0, 0, 0, 0, 3, 0x91, 0x91, 0x91})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data), 0)
		for i := 0; i < 8; i++ {
			m, err := r.Next()
			if err != nil {
				return
			}
			if err := m.Validate(); err != nil {
				t.Fatalf("decoded message fails validation: %v", err)
			}
			b, err := Marshal(m)
			if err != nil {
				t.Fatalf("re-encode: %v", err)
			}
			m2, err := NewReader(bytes.NewReader(b), 0).Next()
			if err != nil {
				t.Fatalf("re-decode of %v: %v", m.Type(), err)
			}
			if normalise(m) != normalise(m2) {
				t.Fatalf("%v not stable across re-encode", m.Type())
			}
		}
	})
}

// FuzzCPUList checks the list parser never panics and round-trips.
func FuzzCPUList(f *testing.F) {
	for _, s := range []string{"0", "0-3", "0,2-3,7", "1023", "", "3-1", "0-", ",", "0-1023"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		set, err := ParseCPUList(s)
		if err != nil {
			return
		}
		again, err := ParseCPUList(set.String())
		if err != nil || !again.Equal(set) {
			t.Fatalf("%q -> %q does not round-trip: %v", s, set.String(), err)
		}
	})
}
