// Package qmptest is a fake QEMU QMP server for tests: a unix socket that
// speaks QMP and simulates the CPU hot-plug of an x86 "pc" machine with no
// real VM behind it.
//
// What it models was checked against qemu-system-x86_64 10.0.2 (Debian
// 1:10.0.2+ds-2+deb13u1~bpo12+1 from bookworm-backports) with -machine pc
// and TCG. The conformance tests run the same QMP against both and demand
// the same replies: the greeting, capabilities negotiation,
// query-hotpluggable-cpus (highest slot first, qom-path only on plugged
// slots), query-cpus-fast (creation order), device_add and device_del with
// QEMU's own error classes and texts, qom-get, qom-set of
// cpu-hotplug-legacy, qom-list of the objects it models, a completed unplug
// (ejected through the ACPI register: DEVICE_DELETED for the CPU's child
// ".../lapic" only, none for the CPU itself) and the aborts. The events a
// Linux 6.1 guest causes (ACPI_DEVICE_OST around that DEVICE_DELETED) were
// checked by hand with a real guest. Knobs inject what a real VM does
// badly: a guest that never ejects, slow ejection, stalled replies, failing
// commands, dropped connections, a crash.
//
// It models 10.0 only. The project moved off QEMU 7.2 because 7.2 under TCG
// crashes on any device_add after a completed CPU unplug, and 7.2 can no
// longer be checked here; a 7.2 mode would drift unverified. What changed
// from 7.2 (1:7.2+dfsg-7+deb12u18), for anyone reading old logs:
//
//   - The greeting says 10.0.2 and the machine type is
//     pc-i440fx-10.0-machine.
//   - PIIX4_PM, which owns cpu-hotplug-legacy, moved from
//     /machine/unattached/device[17+N] to /machine/unattached/device[2+N]/pm
//     (a child of PIIX3) for -smp N. Tests find it by type (QEMU.PMPath).
//   - query-status no longer has "singlestep".
//   - device_add reads properties as strict JSON: "socket-id": "0" was
//     accepted and is now "Invalid parameter type for 'socket-id',
//     expected: integer" (7.2: "Parameter 'socket-id' expects integer");
//     out of int32 range is "Parameter 'core-id' expects int32_t"; a bad
//     apic-id is "Parameter 'apic-id' expects uint64" or "... uint32_t".
//   - device_add no longer checks the id's syntax: "9x", "a b" and even ""
//     and "a/b" are taken (7.2: "Parameter 'id' expects an identifier").
//     The fake refuses "" and ids with '/' with a qmptest: error.
//   - x86 CPUs have module-id (listed when -smp modules > 1), and an apic-id
//     that matches no slot is "Invalid CPU [socket: S, die: D, module: M,
//     core: C, thread: T] with APIC ID N, valid index range 0:MAX".
//   - device_del of a non-device says "/machine is not a device" (7.2:
//     "/machine is not a hotpluggable device").
//   - Re-plugging after a completed unplug works, but under TCG (one
//     thread per vCPU, the default) a vCPU's TCG context is never given
//     back, so a VM creates at most maxcpus vCPUs in its life; the
//     device_add that would create one more aborts QEMU before it replies
//     ("tcg_register_thread: assertion failed: (n < tcg_max_ctxs)"). 7.2's
//     code had the same limit, hidden behind its earlier crash.
//     Config.Accel selects this or KVM's behaviour.
//   - Unchanged: the guest's events, device_del refused in legacy mode,
//     "Boot CPU is unpluggable", qom-set cpu-hotplug-legacy=true aborting
//     QEMU (before it replies; the fake used to reply first).
//
// It must stay a test helper: no production package may import it, and it
// must not grow behaviour that real QEMU does not have. Where it simplifies
// (commands other than the CPU ones, other device types, JSON syntax errors)
// it says so with a "qmptest:" error text. Its QOM tree holds only the
// objects and properties it models; for anything else it answers QEMU's
// "not found", as QEMU would for an object or property that does not exist.
package qmptest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Config describes the simulated VM. The zero value is QEMU's
// "-smp 1,maxcpus=4" on -machine pc.
type Config struct {
	// MaxCPUs is the number of slots (-smp maxcpus). Default 4, or the
	// product of the topology when that is given.
	MaxCPUs int
	// BootCPUs are plugged at start (-smp N). Default 1.
	BootCPUs int
	// Sockets, Dies, Modules, Cores, Threads give the topology. All zero
	// means QEMU 10.0's default for -smp N,maxcpus=M: M cores, one of
	// everything else. If any is set, zeros count as 1 and their product
	// must equal MaxCPUs (when MaxCPUs is set).
	Sockets, Dies, Modules, Cores, Threads int
	// CPUType is the CPU device model. Default "qemu64-x86_64-cpu".
	CPUType string
	// UnplugDelay is how long the guest takes to eject a CPU after
	// device_del. Default 20ms.
	UnplugDelay time.Duration
	// GuestIgnoresUnplug models a guest that never completes device_del:
	// QEMU accepts it and no DEVICE_DELETED ever comes.
	GuestIgnoresUnplug bool
	// NoGuest models a VM with no guest OS (firmware only), like a real
	// QEMU started without a kernel: it implies LegacyCPUHotplug and
	// GuestIgnoresUnplug, and nothing acknowledges a plug with
	// ACPI_DEVICE_OST, even after qom-set enables modern CPU hotplug.
	// EjectPending then plays QEMU.EjectCPU: DEVICE_DELETED, no _OST.
	NoGuest bool
	// LegacyCPUHotplug models a VM whose guest has not switched QEMU's
	// ACPI CPU hotplug to the modern interface (no OS yet, early boot, or
	// no ACPI). QEMU then refuses device_del of any CPU. A booted Linux
	// guest switches it; so does qom-set cpu-hotplug-legacy=false on the
	// PIIX4_PM device (see PMPath).
	LegacyCPUHotplug bool
	// Accel is the accelerator modelled, "tcg" (the default) or "kvm".
	// Under TCG, QEMU 10.0.2 never gives back the TCG context a vCPU
	// thread took, not even when the CPU is unplugged: at most MaxCPUs
	// vCPUs are ever created in a VM's life, boot CPUs included, and the
	// device_add that would create one more aborts QEMU before it
	// replies. Under KVM re-plugging is unbounded, and a completed
	// unplug also sends DEVICE_DELETED for the CPU itself (checked by
	// ejecting through the ACPI register: no guest kernel booted under
	// KVM on the build host).
	Accel string
	// ConcurrentClients serves every client at once. Real QEMU does not:
	// it serves one client per -qmp socket, and the next one connects but
	// gets no greeting until the first hangs up. That is the default here.
	ConcurrentClients bool
	// VirtioMem, when set, gives the VM a virtio-mem device (memory.go).
	VirtioMem *VirtioMem
	// Logger, nil to discard.
	Logger hclog.Logger
}

// Request is one command the server received.
type Request struct {
	Command   string
	Arguments json.RawMessage
}

// Server is a fake QMP endpoint for one simulated VM. Like QEMU it serves
// one client at a time unless Config.ConcurrentClients is set; events go to
// every client that finished negotiation.
type Server struct {
	path string
	ln   net.Listener
	log  hclog.Logger

	mu       sync.Mutex
	vm       *vm
	mem      *memState // nil: no virtio-mem device
	conns    map[*conn]struct{}
	requests []Request
	failNext map[string][]qmpError
	stalls   []*stall
	accepted int
	closed   bool
	timers   map[*time.Timer]struct{}

	wg   sync.WaitGroup
	done chan struct{}
}

// qmpError is an error reply body.
type qmpError struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

// stall holds the replies to some commands until released.
type stall struct {
	commands map[string]bool // empty: every command
	release  chan struct{}
}

// NewServer listens on the unix socket path (removing a stale socket file)
// and serves until Close.
func NewServer(path string, cfg *Config) (*Server, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	v, err := newVM(*cfg)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmptest: listen on %s: %w", path, err)
	}
	s := &Server{
		path:     path,
		ln:       ln,
		log:      log.Named("qmptest"),
		vm:       v,
		mem:      newMemState(cfg.VirtioMem),
		conns:    make(map[*conn]struct{}),
		failNext: make(map[string][]qmpError),
		timers:   make(map[*time.Timer]struct{}),
		done:     make(chan struct{}),
	}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// Start runs a Server on a fresh short socket path (unix socket paths are
// limited to 108 bytes, and t.TempDir paths grow with the test name) and
// closes it when the test ends.
func Start(t testing.TB, cfg *Config) *Server {
	t.Helper()
	dir, err := os.MkdirTemp("", "qmpt")
	if err != nil {
		t.Fatalf("qmptest: %v", err)
	}
	s, err := NewServer(filepath.Join(dir, "qmp.sock"), cfg)
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		os.RemoveAll(dir)
	})
	return s
}

// Path is the socket path to Dial.
func (s *Server) Path() string { return s.path }

// Close stops the server: the listener, every connection and every pending
// timer. It waits for the server's goroutines and is idempotent.
func (s *Server) Close() error {
	s.stop()
	s.wg.Wait()
	os.Remove(s.path)
	return nil
}

// stop shuts everything down without waiting, so the server's own
// goroutines can call it.
func (s *Server) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	close(s.done)
	s.ln.Close()
	for c := range s.conns {
		c.nc.Close()
	}
	for t := range s.timers {
		if t.Stop() {
			s.wg.Done()
		}
	}
	s.timers = nil
	for _, st := range s.stalls {
		closeOnce(st.release)
	}
	s.stalls = nil
}

// Crash is Close under another name: QEMU exited and its socket is gone.
func (s *Server) Crash() { s.Close() }

// CloseConnections drops every open connection, as when QEMU's monitor
// breaks; the server keeps listening, so clients can reconnect.
func (s *Server) CloseConnections() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.nc.Close()
	}
}

// Accepted is how many connections the server has accepted.
func (s *Server) Accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted
}

// Requests is every command received so far, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// FailNext makes the next call of command fail with this error class and
// text instead of running. Calls queue: n calls fail the next n commands.
func (s *Server) FailNext(command, class, desc string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext[command] = append(s.failNext[command], qmpError{class, desc})
}

// Stall holds the replies to the named commands (every command when none is
// named) until release is called. The commands themselves run at once, as a
// busy QEMU would have run them and not yet answered. release is
// idempotent; Close releases too.
func (s *Server) Stall(commands ...string) (release func()) {
	st := &stall{commands: make(map[string]bool), release: make(chan struct{})}
	for _, c := range commands {
		st.commands[c] = true
	}
	s.mu.Lock()
	s.stalls = append(s.stalls, st)
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		for i, x := range s.stalls {
			if x == st {
				s.stalls = append(s.stalls[:i], s.stalls[i+1:]...)
				break
			}
		}
		closeOnce(st.release)
	}
}

func closeOnce(ch chan struct{}) {
	select {
	case <-ch:
	default:
		close(ch)
	}
}

// SetUnplugDelay changes how long the guest takes to eject a CPU.
func (s *Server) SetUnplugDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.vm.cfg.UnplugDelay = d
}

// SetGuestIgnoresUnplug switches the "guest does not cooperate" mode.
func (s *Server) SetGuestIgnoresUnplug(ignore bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.vm.cfg.GuestIgnoresUnplug = ignore
}

// SetLegacyCPUHotplug switches the VM's ACPI CPU hotplug interface (see
// Config.LegacyCPUHotplug). Real QEMU cannot go back to legacy; tests may.
func (s *Server) SetLegacyCPUHotplug(legacy bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.vm.legacy = legacy
}

// EjectPending completes every unplug the guest has been asked for and not
// done (e.g. in GuestIgnoresUnplug mode), with the events QEMU sends. With
// NoGuest it is the fake's QEMU.EjectCPU.
func (s *Server) EjectPending() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sl := range s.vm.slots {
		if sl.plugged && sl.unplugRequested {
			s.ejectLocked(sl)
		}
	}
}

// Emit sends an arbitrary event to every negotiated client.
func (s *Server) Emit(name string, data any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.emitLocked(name, data)
}

// PMPath is the QOM path of the VM's PIIX4_PM device, which owns the
// cpu-hotplug-legacy property. In QEMU 10.0 with -machine pc -nodefaults it
// is /machine/unattached/device[2+N]/pm for -smp N (a child of PIIX3; 7.2
// had /machine/unattached/device[17+N]). On a real VM find it by type, as
// QEMU.PMPath does.
func (s *Server) PMPath() string { return s.vm.pmPath() }

// Plugged is the number of plugged CPUs.
func (s *Server) Plugged() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, sl := range s.vm.slots {
		if sl.plugged {
			n++
		}
	}
	return n
}

// PluggedAPICIDs are the APIC ids of the plugged CPUs, ascending: a fake
// guest numbers its CPUs by them, as Linux does on x86.
func (s *Server) PluggedAPICIDs() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int
	for _, sl := range s.vm.slots {
		if sl.plugged {
			out = append(out, sl.apicID)
		}
	}
	return out
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return // listener closed
		}
		c := &conn{nc: nc, s: s}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.accepted++
		s.wg.Add(1)
		s.mu.Unlock()
		if s.vm.cfg.ConcurrentClients {
			go c.serve()
		} else {
			// Like QEMU: the next client waits, connected, in the
			// listen backlog.
			c.serve()
		}
	}
}

// conn is one client connection.
type conn struct {
	nc         net.Conn
	s          *Server
	wmu        sync.Mutex
	negotiated bool // guarded by s.mu
}

// greeting is QEMU 10.0.2's from bookworm-backports, byte for byte apart
// from spacing.
const greeting = `{"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": "Debian 1:10.0.2+ds-2+deb13u1~bpo12+1"}, "capabilities": ["oob"]}}`

func (c *conn) serve() {
	s := c.s
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.nc.Close()
	}()
	if err := c.writeLine([]byte(greeting)); err != nil {
		return
	}
	dec := json.NewDecoder(bufio.NewReader(c.nc))
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			// qmptest: real QEMU resynchronises after a JSON syntax
			// error; we drop the connection instead.
			return
		}
		out, cmd, err := s.handle(c, raw)
		if err != nil {
			return
		}
		if cmd == crashCommand {
			// QEMU aborted without replying: its socket file is gone
			// and every client sees the connection drop.
			s.stop()
			os.Remove(s.path)
			return
		}
		if out != nil {
			if !s.waitStalls(cmd) {
				return
			}
			if err := c.writeLine(out); err != nil {
				return
			}
		}
	}
}

// waitStalls blocks while a stall covers cmd. It reports false when the
// server is closing.
func (s *Server) waitStalls(cmd string) bool {
	for {
		s.mu.Lock()
		var wait chan struct{}
		for _, st := range s.stalls {
			if len(st.commands) == 0 || st.commands[cmd] {
				wait = st.release
				break
			}
		}
		s.mu.Unlock()
		if wait == nil {
			return true
		}
		select {
		case <-wait:
		case <-s.done:
			return false
		}
	}
}

func (c *conn) writeLine(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	// A client that stops reading must not wedge the server.
	c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := c.nc.Write(append(b, '\n'))
	if err != nil {
		c.nc.Close()
	}
	return err
}

// crashCommand is a sentinel the handler returns when the command aborts
// QEMU before it can reply (an assertion: qom-set cpu-hotplug-legacy=true,
// or a device_add past TCG's vCPU contexts).
const crashCommand = "\x00crash"

// handle runs one request and writes its reply, unless a stall covers the
// command: then it returns the reply for serve to write once released. The
// reply is written under s.mu so that, as in QEMU, it goes out before any
// event the command causes.
func (s *Server) handle(c *conn, raw json.RawMessage) (out []byte, cmd string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out, cmd = s.runLocked(c, raw)
	if cmd == crashCommand {
		return nil, cmd, nil
	}
	if s.stalledLocked(cmd) {
		return out, cmd, nil
	}
	return nil, cmd, c.writeLine(out)
}

func (s *Server) stalledLocked(cmd string) bool {
	for _, st := range s.stalls {
		if len(st.commands) == 0 || st.commands[cmd] {
			return true
		}
	}
	return false
}

// runLocked executes one request and returns the reply line and the command
// name, or no reply and crashCommand when QEMU would abort.
func (s *Server) runLocked(c *conn, raw json.RawMessage) ([]byte, string) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return errorReply(nil, "GenericError", "QMP input must be a JSON object"), ""
	}
	id := obj["id"]
	for _, k := range sortedKeys(obj) {
		switch k {
		case "execute", "arguments", "id":
		default:
			return errorReply(id, "GenericError", fmt.Sprintf("QMP input member '%s' is unexpected", k)), ""
		}
	}
	execRaw, ok := obj["execute"]
	if !ok {
		return errorReply(id, "GenericError", "QMP input lacks member 'execute'"), ""
	}
	var cmd string
	if err := json.Unmarshal(execRaw, &cmd); err != nil {
		return errorReply(id, "GenericError", "QMP input member 'execute' must be a string"), ""
	}
	args := map[string]json.RawMessage{}
	if a, ok := obj["arguments"]; ok {
		if err := json.Unmarshal(a, &args); err != nil || args == nil {
			return errorReply(id, "GenericError", "QMP input member 'arguments' must be an object"), cmd
		}
	}

	s.requests = append(s.requests, Request{Command: cmd, Arguments: obj["arguments"]})
	s.log.Trace("request", "command", cmd, "arguments", string(obj["arguments"]))

	if !c.negotiated {
		if cmd != "qmp_capabilities" {
			return errorReply(id, "CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'"), cmd
		}
		c.negotiated = true
		return returnReply(id, struct{}{}), cmd
	}
	if q := s.failNext[cmd]; len(q) > 0 {
		s.failNext[cmd] = q[1:]
		return errorReply(id, q[0].Class, q[0].Desc), cmd
	}
	ret, qerr := s.dispatchLocked(cmd, args)
	if qerr != nil {
		return errorReply(id, qerr.Class, qerr.Desc), cmd
	}
	if ret == crashCommand {
		return nil, crashCommand
	}
	return returnReply(id, ret), cmd
}

func sortedKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Replies keep QEMU's member order: "return" before "id", "id" before
// "error".
func returnReply(id json.RawMessage, ret any) []byte {
	b, err := json.Marshal(struct {
		Return any             `json:"return"`
		ID     json.RawMessage `json:"id,omitempty"`
	}{ret, id})
	if err != nil {
		panic(fmt.Sprintf("qmptest: encode reply: %v", err)) // our own values only
	}
	return b
}

func errorReply(id json.RawMessage, class, desc string) []byte {
	b, _ := json.Marshal(struct {
		ID    json.RawMessage `json:"id,omitempty"`
		Error qmpError        `json:"error"`
	}{id, qmpError{class, desc}})
	return b
}

// emitLocked sends an event to every negotiated connection. Writes happen
// off the lock so a slow client cannot stall the VM model.
func (s *Server) emitLocked(name string, data any) {
	now := time.Now()
	ev := struct {
		Timestamp struct {
			Seconds      int64 `json:"seconds"`
			Microseconds int64 `json:"microseconds"`
		} `json:"timestamp"`
		Event string `json:"event"`
		Data  any    `json:"data,omitempty"`
	}{Event: name, Data: data}
	ev.Timestamp.Seconds = now.Unix()
	ev.Timestamp.Microseconds = int64(now.Nanosecond() / 1000)
	b, err := json.Marshal(ev)
	if err != nil {
		s.log.Error("cannot encode event", "event", name, "error", err)
		return
	}
	for c := range s.conns {
		if c.negotiated {
			// Under s.mu, so events keep their order across clients;
			// writeLine's deadline bounds the wait.
			c.writeLine(b)
		}
	}
}

// afterLocked runs f under s.mu after d, unless the server closes first.
func (s *Server) afterLocked(d time.Duration, f func()) {
	if s.closed {
		return
	}
	s.wg.Add(1)
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		defer s.wg.Done()
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed {
			return
		}
		delete(s.timers, t)
		f()
	})
	s.timers[t] = struct{}{}
}
