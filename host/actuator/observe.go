package actuator

import (
	"errors"
	"time"

	"github.com/hotplugheaven/hotplug/host/engine"
	"github.com/hotplugheaven/hotplug/host/eventlog"
	"github.com/hotplugheaven/hotplug/proto"
)

// Observer is told what the actuator sees and does: the HTTP API's live
// stream and the Prometheus metrics are observers. Methods are called from
// the VM goroutines, must not block and must not keep the arguments'
// slices beyond the call unless they copy them.
type Observer interface {
	// Report: a report was accepted; st is the VM's status after it.
	Report(vm string, st Status)
	// Decision: the engine decided (Hold included).
	Decision(vm string, d engine.Decision, at time.Time)
	// Event: a scaling event was committed to the event log, or failed to
	// be (committed is then false).
	Event(ev eventlog.Event, committed bool)
	// Rejected: a message or connection from the VM's agent was refused;
	// reason is one of the Reject constants.
	Rejected(vm, reason string)
}

// Reasons for Observer.Rejected.
const (
	RejectMalformed   = "malformed"    // undecodable message
	RejectUnknownType = "unknown_type" // a message type we do not know
	RejectInvalid     = "invalid"      // decodes, but values no honest agent sends
	RejectReplayed    = "replayed"     // sequence number not increasing
	RejectFraming     = "framing"      // stream unusable: bad magic, oversized or truncated frame
	RejectHandshake   = "handshake"    // no valid Hello, or no common protocol version
	RejectSilent      = "silent"       // agent silent past the idle timeout
	RejectRateLimited = "rate_limited" // beyond the report or Ack rate; dropped
	RejectRehello     = "rehello"      // a new Hello on a young session
	RejectMisbehaving = "misbehaving"  // connection dropped: strikes used up
	RejectUnknownApp  = "unknown_app"  // a report names an application its Hello did not announce
)

func rejectReason(err error) string {
	switch {
	case errors.Is(err, proto.ErrMalformed):
		return RejectMalformed
	case errors.Is(err, proto.ErrUnknownType):
		return RejectUnknownType
	}
	return RejectInvalid
}

// observers fans out to several observers.
type observers []Observer

func (o observers) report(vm string, st Status) {
	for _, x := range o {
		x.Report(vm, st)
	}
}

func (o observers) decision(vm string, d engine.Decision, at time.Time) {
	for _, x := range o {
		x.Decision(vm, d, at)
	}
}

func (o observers) event(ev eventlog.Event, committed bool) {
	for _, x := range o {
		x.Event(ev, committed)
	}
}

func (o observers) rejected(vm, reason string) {
	for _, x := range o {
		x.Rejected(vm, reason)
	}
}
