package proto

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
)

// HeaderSize is the size of a frame header.
const HeaderSize = 8

// MaxPayload is the hard limit on a frame's payload. A Report for MaxCPUs
// CPUs encodes to about 90 KiB; anything larger is refused before a byte of
// it is buffered.
const MaxPayload = 256 << 10

// maxDepth bounds msgpack nesting. Our deepest message nests three levels.
const maxDepth = 16

var magic = [2]byte{'H', 'P'}

// Errors returned by Reader. They are wrapped with detail; test with errors.Is.
var (
	ErrBadMagic      = errors.New("bad frame magic (not a hotplug-heaven peer, or the stream lost sync)")
	ErrFrameTooLarge = errors.New("frame too large")
	ErrUnknownType   = errors.New("unknown message type")
	ErrMalformed     = errors.New("malformed message")
)

// Reader reads frames from a stream. It is not safe for concurrent use.
type Reader struct {
	r   *bufio.Reader
	max int
	buf []byte
}

// NewReader returns a Reader that refuses payloads larger than maxPayload
// (MaxPayload when maxPayload <= 0 or larger than MaxPayload).
func NewReader(r io.Reader, maxPayload int) *Reader {
	if maxPayload <= 0 || maxPayload > MaxPayload {
		maxPayload = MaxPayload
	}
	return &Reader{r: bufio.NewReaderSize(r, 4096), max: maxPayload}
}

// ReadFrame returns the next frame's type and payload. The payload is only
// valid until the next call.
func (fr *Reader) ReadFrame() (MsgType, []byte, error) {
	var h [HeaderSize]byte
	if _, err := io.ReadFull(fr.r, h[:]); err != nil {
		return 0, nil, err
	}
	if h[0] != magic[0] || h[1] != magic[1] {
		return 0, nil, fmt.Errorf("%w: got %#02x %#02x", ErrBadMagic, h[0], h[1])
	}
	n := binary.BigEndian.Uint32(h[4:])
	if n > uint32(fr.max) {
		return 0, nil, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, n, fr.max)
	}
	if cap(fr.buf) < int(n) {
		fr.buf = make([]byte, n)
	}
	fr.buf = fr.buf[:n]
	if _, err := io.ReadFull(fr.r, fr.buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, fmt.Errorf("reading %d-byte %v payload: %w", n, MsgType(h[2]), err)
	}
	return MsgType(h[2]), fr.buf, nil
}

// Next reads, decodes and validates the next message.
func (fr *Reader) Next() (Message, error) {
	t, payload, err := fr.ReadFrame()
	if err != nil {
		return nil, err
	}
	return Decode(t, payload)
}

// WaitData blocks until at least one byte can be read (or the stream
// fails), without consuming it. A reader that allows a peer to stay silent
// but not to trickle can wait here without a deadline and set one for the
// frame that follows.
func (fr *Reader) WaitData() error {
	_, err := fr.r.Peek(1)
	return err
}

// Resync discards bytes until the next frame magic, reading at most limit
// bytes. It lets a reader recover from bytes left over from an earlier
// connection on a stream that outlives connections (virtio-serial).
func (fr *Reader) Resync(limit int) (skipped int, err error) {
	for skipped < limit {
		b, err := fr.r.Peek(2)
		if err != nil {
			return skipped, err
		}
		if b[0] == magic[0] && b[1] == magic[1] {
			return skipped, nil
		}
		if _, err := fr.r.Discard(1); err != nil {
			return skipped, err
		}
		skipped++
	}
	return skipped, fmt.Errorf("%w: no frame start in %d bytes", ErrBadMagic, limit)
}

// Decode decodes and validates a payload of type t.
func Decode(t MsgType, payload []byte) (Message, error) {
	var m Message
	switch t {
	case TypeHello:
		m = new(Hello)
	case TypeWelcome:
		m = new(Welcome)
	case TypeReport:
		m = new(Report)
	case TypeCommand:
		m = new(Command)
	case TypeAck:
		m = new(Ack)
	default:
		return nil, fmt.Errorf("%w: %d", ErrUnknownType, uint8(t))
	}
	if err := checkStructure(payload, maxDepth); err != nil {
		return nil, fmt.Errorf("%w: %v: %v", ErrMalformed, t, err)
	}
	if err := msgpack.Unmarshal(payload, m); err != nil {
		return nil, fmt.Errorf("%w: %v: %v", ErrMalformed, t, err)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return m, nil
}

// Writer writes frames to a stream. It is safe for concurrent use: each
// message goes out in one Write call, so frames never interleave.
type Writer struct {
	mu  sync.Mutex
	w   io.Writer
	buf bytes.Buffer
	enc *msgpack.Encoder
}

// NewWriter returns a Writer on w.
func NewWriter(w io.Writer) *Writer {
	fw := &Writer{w: w}
	fw.enc = msgpack.NewEncoder(&fw.buf)
	return fw
}

// Write encodes m into one frame and writes it.
func (fw *Writer) Write(m Message) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	fw.buf.Reset()
	fw.buf.Write([]byte{magic[0], magic[1], byte(m.Type()), 0, 0, 0, 0, 0})
	if err := fw.enc.Encode(m); err != nil {
		return fmt.Errorf("encoding %v: %w", m.Type(), err)
	}
	b := fw.buf.Bytes()
	n := len(b) - HeaderSize
	if n > MaxPayload {
		return fmt.Errorf("%w: encoded %v is %d bytes, limit %d", ErrFrameTooLarge, m.Type(), n, MaxPayload)
	}
	binary.BigEndian.PutUint32(b[4:], uint32(n))
	_, err := fw.w.Write(b)
	return err
}

// Marshal encodes m as one frame (header and payload).
func Marshal(m Message) ([]byte, error) {
	var b bytes.Buffer
	if err := NewWriter(&b).Write(m); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
