package qmp

import (
	"context"
	"encoding/json"
	"fmt"
)

// Executor runs one QMP command and decodes its return value into result
// (nil to discard it); a command QEMU refuses fails with a *Error in the
// chain. Client is one; a hypervisor that carries QMP text to QEMU itself
// (libvirt's monitor passthrough) is another, built on EncodeCommand and
// DecodeReply, so the code that speaks QMP is written once.
type Executor interface {
	Execute(ctx context.Context, cmd string, args, result any) error
}

var _ Executor = (*Client)(nil)

// EncodeCommand is the QMP text of a command without an id, for a
// transport that pairs replies with commands itself.
func EncodeCommand(cmd string, args any) ([]byte, error) {
	// No id member: libvirt adds its own and refuses a second.
	b, err := json.Marshal(struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
	}{cmd, args})
	if err != nil {
		return nil, fmt.Errorf("qmp %s: encode arguments: %w", cmd, err)
	}
	return b, nil
}

// DecodeReply decodes QEMU's reply raw to cmd: its return value into
// result, or its error as a *Error. Anything else wraps ErrProtocol. It is
// total: no input panics (FuzzDecodeReply).
func DecodeReply(cmd string, raw []byte, result any) error {
	m, err := parseMessage(raw)
	if err != nil {
		return fmt.Errorf("qmp %s: reply %.200q: %w", cmd, raw, err)
	}
	if m.kind != kindReply {
		return fmt.Errorf("qmp %s: %w: not a reply: %.200q", cmd, ErrProtocol, raw)
	}
	if m.err != nil {
		return m.err
	}
	if result == nil {
		return nil
	}
	if err := json.Unmarshal(m.ret, result); err != nil {
		return fmt.Errorf("qmp %s: decode reply %.200q: %w: %v", cmd, m.ret, ErrProtocol, err)
	}
	return nil
}
