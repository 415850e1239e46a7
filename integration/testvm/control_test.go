package testvm

import (
	"bytes"
	"errors"
	"testing"
)

func TestParseReply(t *testing.T) {
	const id = "0123456789abcdef"
	cases := []struct {
		name   string
		in     string
		out    string
		status int
		used   int // -1: all of in
		ok     bool
		err    error
	}{
		{"empty output", "TESTVM-BEGIN " + id + "\n\nTESTVM-END " + id + " 0\n", "", 0, -1, true, nil},
		{"no trailing newline", "TESTVM-BEGIN " + id + "\na\nb\nTESTVM-END " + id + " 3\n", "a\nb", 3, -1, true, nil},
		{"trailing newline kept", "TESTVM-BEGIN " + id + "\n0\n\nTESTVM-END " + id + " 0\n", "0\n", 0, -1, true, nil},
		{"stale reply skipped", "TESTVM-BEGIN 1111\nold\nTESTVM-END 1111 0\nTESTVM-BEGIN " + id + "\nnew\nTESTVM-END " + id + " 1\n", "new", 1, -1, true, nil},
		{"other id's end ignored", "TESTVM-BEGIN " + id + "\nx\nTESTVM-END 1111 0\n\nTESTVM-END " + id + " 2\n", "x\nTESTVM-END 1111 0\n", 2, -1, true, nil},
		{"leftover kept", "TESTVM-BEGIN " + id + "\n\nTESTVM-END " + id + " 0\nmore", "", 0, len("TESTVM-BEGIN " + id + "\n\nTESTVM-END " + id + " 0\n"), true, nil},
		{"no begin yet", "boot noise\n", "", 0, 0, false, nil},
		{"no end yet", "TESTVM-BEGIN " + id + "\npartial", "", 0, 0, false, nil},
		{"status incomplete", "TESTVM-BEGIN " + id + "\n\nTESTVM-END " + id + " 12", "", 0, 0, false, nil},
		{"bad status", "TESTVM-BEGIN " + id + "\n\nTESTVM-END " + id + " x\n", "", 0, 0, false, ErrBadReply},
		{"status out of range", "TESTVM-BEGIN " + id + "\n\nTESTVM-END " + id + " 256\n", "", 0, 0, false, ErrBadReply},
		{"runaway status", "TESTVM-BEGIN " + id + "\n\nTESTVM-END " + id + " 0000000000000000", "", 0, 0, false, ErrBadReply},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, st, used, ok, err := parseReply([]byte(c.in), id)
			if c.used < 0 {
				c.used = len(c.in)
			}
			if !errors.Is(err, c.err) || ok != c.ok || string(out) != c.out || st != c.status || (ok && used != c.used) {
				t.Errorf("parseReply = %q, %d, %d, %v, %v; want %q, %d, %d, %v, %v",
					out, st, used, ok, err, c.out, c.status, c.used, c.ok, c.err)
			}
		})
	}
}

func FuzzParseReply(f *testing.F) {
	const id = "0123456789abcdef"
	f.Add([]byte("TESTVM-BEGIN " + id + "\nout\nTESTVM-END " + id + " 0\n"))
	f.Add([]byte("TESTVM-BEGIN " + id + "\n\nTESTVM-END " + id + " -1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		out, st, used, ok, err := parseReply(b, id)
		if !ok {
			return
		}
		if err != nil || st < 0 || st > 255 || used > len(b) || used <= 0 {
			t.Fatalf("ok reply with status %d used %d/%d err %v", st, used, len(b), err)
		}
		if !bytes.Contains(b[:used], out) {
			t.Fatalf("output %q not from input", out)
		}
	})
}

func TestTailLines(t *testing.T) {
	cases := []struct {
		in   string
		n    int
		want string
	}{
		{"a\nb\nc\n", 2, "b\nc"},
		{"a\nb\nc", 5, "a\nb\nc"},
		{"a\nb\nc", 0, ""},
		{"", 3, ""},
	}
	for _, c := range cases {
		if got := tailLines(c.in, c.n); got != c.want {
			t.Errorf("tailLines(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}
