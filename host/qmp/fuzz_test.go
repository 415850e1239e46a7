package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"testing"
	"time"
)

func TestParseMessage(t *testing.T) {
	tests := []struct {
		name string
		in   string
		kind kind
		id   uint64
		err  bool
	}{
		{"greeting", `{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian"}, "capabilities": ["oob"]}}`, kindGreeting, 0, false},
		{"return", `{"return": {}, "id": 7}`, kindReply, 7, false},
		{"error", `{"id": 3, "error": {"class": "DeviceNotFound", "desc": "Device 'x' not found"}}`, kindReply, 3, false},
		{"event", `{"timestamp": {"seconds": 1795388083, "microseconds": 896803}, "event": "DEVICE_DELETED", "data": {"path": "/machine/peripheral/c1/lapic"}}`, kindEvent, 0, false},
		{"array", `[1]`, 0, 0, true},
		{"empty object", `{}`, 0, 0, true},
		{"error of wrong type", `{"error": 1, "id": 1}`, 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := parseMessage([]byte(tt.in))
			if (err != nil) != tt.err {
				t.Fatalf("err = %v, want error %v", err, tt.err)
			}
			if err != nil {
				return
			}
			if m.kind != tt.kind || (tt.kind == kindReply && (!m.hasID || m.id != tt.id)) {
				t.Errorf("got %+v", m)
			}
		})
	}
	m, _ := parseMessage([]byte(`{"id": 3, "error": {"class": "DeviceNotFound", "desc": "Device 'x' not found"}}`))
	if m.err == nil || m.err.Class != "DeviceNotFound" || m.ret != nil {
		t.Errorf("error reply = %+v", m)
	}
	m, _ = parseMessage([]byte(`{"timestamp": {"seconds": 1795388083, "microseconds": 896803}, "event": "X"}`))
	if m.event.Time.UnixMicro() != 1795388083896803 {
		t.Errorf("event time = %v", m.event.Time)
	}
}

// FuzzParseMessage: QEMU's bytes must never panic the client, and what
// parses must be self-consistent.
func FuzzParseMessage(f *testing.F) {
	for _, s := range []string{
		`{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}`,
		`{"return": {}, "id": 1}`,
		`{"return": [{"props": {"core-id": 3, "thread-id": 0, "socket-id": 0}, "vcpus-count": 1, "type": "qemu64-x86_64-cpu"}], "id": 18446744073709551615}`,
		`{"id": "x", "error": {"class": "GenericError", "desc": "d"}}`,
		`{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "DEVICE_DELETED", "data": {"path": "/p"}}`,
		`{"event": "E", "data": null, "timestamp": {"seconds": 9223372036854775807, "microseconds": 999999}}`,
		`{"return": null, "id": 1}`,
		`[]`, `null`, `1e999`, `{"id": 1e400, "return": 1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseMessage(b)
		if err != nil {
			return
		}
		if !json.Valid(b) {
			t.Fatalf("invalid JSON %q parsed as %+v", b, m)
		}
		switch m.kind {
		case kindReply:
			if m.err != nil && m.ret != nil {
				t.Fatalf("reply with both error and return: %q", b)
			}
			if m.err == nil && m.ret == nil {
				t.Fatalf("reply with neither error nor return: %q", b)
			}
		case kindGreeting, kindEvent:
		default:
			t.Fatalf("no kind for %q", b)
		}
	})
}

// FuzzClientStream feeds arbitrary bytes to a connected Client after the
// handshake, as a misbehaving QEMU would: no panic, no hang, and a call in
// flight always returns.
func FuzzClientStream(f *testing.F) {
	for _, s := range []string{
		`{"return": {}, "id": 2}`,
		`{"id": 2, "error": {"class": "GenericError", "desc": "x"}}`,
		`{"event": "DEVICE_DELETED", "data": {"path": "/p"}, "timestamp": {"seconds": 1, "microseconds": 2}}{"return": 1, "id": 2}`,
		`{"return": {}, "id": 3}{"return": {}, "id": 2}`,
		`{"return": `, `}}}}`, `[[[[`, "\x00\xff", `{"QMP": {}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		client, server := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			defer server.Close()
			r := bufio.NewReader(server)
			server.Write([]byte(greeting + "\n"))
			if _, err := r.ReadString('\n'); err != nil {
				return
			}
			server.Write([]byte(`{"return": {}, "id": 1}` + "\n"))
			if _, err := r.ReadString('\n'); err != nil {
				return
			}
			server.Write(stream)
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		c, err := newClient(ctx, client, "fuzz", nil)
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		sub := c.Subscribe(nil, 1)
		var result any
		c.Execute(ctx, "x", nil, &result) // any outcome but a hang or a panic
		sub.Close()
		c.Close()
		<-done
	})
}

// FuzzDecodeReply: any bytes a monitor passthrough returns decode to a
// value or an error, never a panic; a reply's error is a *Error.
func FuzzDecodeReply(f *testing.F) {
	for _, s := range []string{
		`{"return": {"enabled": true, "present": true}}`,
		`{"return": {}}`,
		`{"error": {"class": "DeviceNotFound", "desc": "no such device"}}`,
		`{"QMP": {"version": {}}}`,
		`{"event": "STOP"}`,
		`{"return": [1, 2]}`,
		`null`, `[]`, `{`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var v struct {
			Enabled bool `json:"enabled"`
		}
		err := DecodeReply("query-kvm", raw, &v)
		var qe *Error
		if errors.As(err, &qe) && qe == nil {
			t.Fatal("nil *Error")
		}
	})
}
