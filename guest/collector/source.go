package collector

import (
	"errors"

	"github.com/hotplugheaven/hotplug/proto"
)

// Source is one input of a Report. Every input implements it: the
// collector's own /proc and /sys files (one Go file each) and the agent's
// run-queue and application-log sources (Options.Extra). The Sampler runs
// them all, in order, once per sample, procfs style: Read reads the input
// and hands the bytes to a pure parser, Fill adds the interval's figures.
type Source interface {
	// Name identifies the source in logs and the agent's status.
	Name() string
	// Path says what the source reads: a file, a directory, a program.
	Path() string
	// Read reads and parses this sample's input and keeps the result
	// until Fill. It must return quickly. An error says why the source is
	// not in use this sample (Degraded: in use, but with a caveat); an
	// optional source whose Read fails forgets its baseline, so that it
	// primes itself when it comes back.
	Read() error
	// Fill adds the figures of the interval since the previous Fill to r,
	// from the last Read and the source's baseline, and makes that Read
	// the next baseline. The clock fields of r are set, and the sources
	// before this one have filled theirs (the run-queue source reads
	// RunDelay). IntervalNanos is 0 when the Sampler is priming (the first
	// sample, or after a gap): Fill then only takes its baseline, and an
	// error is not counted against the source.
	Fill(r *proto.Report) error
}

// SourceState is the state of one source after a Sample.
type SourceState struct {
	Name string
	Path string
	// InUse reports whether the last Sample used the source.
	InUse bool
	// Err says why the source is not in use or, when InUse is set, how its
	// data is degraded (an estimate in place of a missing field).
	Err error
}

// Degraded marks an error from Read that leaves the source in use: what it
// reads is an estimate, and err says of what.
func Degraded(err error) error { return degradedError{err} }

type degradedError struct{ err error }

func (d degradedError) Error() string { return d.err.Error() }
func (d degradedError) Unwrap() error { return d.err }

// stateOf is the state a Read or Fill error leaves a source in.
func stateOf(src Source, err error) SourceState {
	st := SourceState{Name: src.Name(), Path: src.Path(), InUse: err == nil, Err: err}
	var d degradedError
	if errors.As(err, &d) {
		st.InUse, st.Err = true, d.err
	}
	return st
}

// memoryOf returns r.Memory, allocating it for the first source that fills
// part of it (vmstat, PSI memory, memory blocks).
func memoryOf(r *proto.Report) *proto.MemoryStats {
	if r.Memory == nil {
		r.Memory = &proto.MemoryStats{}
	}
	return r.Memory
}
