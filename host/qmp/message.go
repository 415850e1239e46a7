package qmp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// ErrProtocol marks bytes from QEMU that are valid JSON but not a QMP
// message this client understands. The reader logs and skips such a message;
// it never ends the connection for one.
var ErrProtocol = errors.New("qmp: unexpected message from QEMU")

// kind says which of the three QMP server messages a decoded object is.
type kind int

const (
	kindGreeting kind = iota + 1
	kindReply
	kindEvent
)

// message is one decoded object from QEMU. Only the fields of its kind are
// set.
type message struct {
	kind kind

	greeting Greeting

	// A reply: id is ours when hasID; exactly one of ret and err is set.
	id    uint64
	hasID bool
	ret   json.RawMessage
	err   *Error

	event Event
}

// wireMessage is the union of every top-level member QEMU sends
// (docs/interop/qmp-spec.rst, "Server Responses" and "Asynchronous events").
type wireMessage struct {
	QMP       *Greeting       `json:"QMP"`
	Return    json.RawMessage `json:"return"`
	Error     *Error          `json:"error"`
	ID        json.RawMessage `json:"id"`
	Event     *string         `json:"event"`
	Data      json.RawMessage `json:"data"`
	Timestamp *struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

// parseMessage decodes one JSON object QEMU sent. It is pure and total: any
// input yields a message or an error wrapping ErrProtocol, never a panic
// (see FuzzParseMessage).
func parseMessage(raw []byte) (message, error) {
	var w wireMessage
	if err := json.Unmarshal(raw, &w); err != nil {
		return message{}, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	switch {
	case w.QMP != nil:
		return message{kind: kindGreeting, greeting: *w.QMP}, nil
	case w.Event != nil:
		ev := Event{Name: *w.Event, Data: w.Data}
		if len(ev.Data) == 0 || bytes.Equal(ev.Data, []byte("null")) {
			ev.Data = nil
		}
		if ts := w.Timestamp; ts != nil && ts.Seconds >= 0 && ts.Microseconds >= 0 && ts.Microseconds < 1e6 {
			ev.Time = time.Unix(ts.Seconds, ts.Microseconds*1000)
		}
		return message{kind: kindEvent, event: ev}, nil
	case w.Error != nil || isPresent(w.Return):
		m := message{kind: kindReply, err: w.Error}
		if w.Error == nil {
			m.ret = w.Return
		}
		// QEMU echoes the id verbatim; ours are unsigned integers. Anything
		// else (absent, a string, a fraction) is not an answer to one of our
		// calls and the caller logs it as an unknown id.
		if isPresent(w.ID) {
			if id, err := strconv.ParseUint(string(w.ID), 10, 64); err == nil {
				m.id, m.hasID = id, true
			}
		}
		return m, nil
	}
	return message{}, fmt.Errorf("%w: no QMP, return, error or event member in %.200q", ErrProtocol, raw)
}

// isPresent reports whether a member was in the object. encoding/json leaves
// a RawMessage nil when the member is absent and keeps "null" when it was
// null; QEMU never sends "return": null, so null counts as absent.
func isPresent(r json.RawMessage) bool {
	return len(r) > 0 && !bytes.Equal(r, []byte("null"))
}
