// Package parse turns one access-log line into a Record: when the request
// arrived (by the log's own clock), its HTTP status and how long it took.
//
// Built-in formats (nginx, ingress-nginx, Apache, HAProxy, W3C/IIS, JSON
// lines, CLF and combined) are hand-written byte scanners: no regexp, no
// allocation per line once a parser is warm. The user "regex" format is the
// one exception and is documented as slower.
//
// Every line is untrusted input. A parser must never panic, never allocate
// in proportion to the line beyond what it was configured with, and never
// keep a reference to the line after Parse returns: callers reuse the
// buffer. It reports what was wrong with a line as a Reason, never by
// logging. It does no I/O: reading files is the tail package's job.
package parse
