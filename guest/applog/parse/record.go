package parse

import (
	"errors"
	"fmt"
	"math"
	"sort"
)

// Record is one request as its log line describes it.
type Record struct {
	// Time is when the request arrived, in Unix nanoseconds, by the log's
	// own clock (zones applied where the log gives one, UTC otherwise).
	Time int64
	// TimeRes is the resolution of Time in nanoseconds: 1e9 for logs with
	// whole-second timestamps, 1e6 for milliseconds.
	TimeRes int64
	// Status is the HTTP status, 0 when the line has none (HAProxy's -1,
	// a format without a status field).
	Status int
	// Duration is the request's duration in seconds (the format's duration
	// field scaled by its unit); meaningful only when HasDuration is set.
	// Formats without one (CLF, combined) never set it: arrivals only.
	Duration    float64
	HasDuration bool
}

// Reason says what Parse made of a line.
type Reason uint8

// Reasons. Anything above Meta is a malformed line.
const (
	// OK: a request; the Record is filled.
	OK Reason = iota
	// Meta: a directive, comment or blank line; neither a request nor
	// malformed (W3C `#Fields:`, blank lines).
	Meta
	// Syntax: fields missing, an unterminated quote or bracket.
	Syntax
	// BadTime: the timestamp is missing or not a valid date.
	BadTime
	// BadStatus: the status is not a number in 0..999.
	BadStatus
	// BadDuration: the duration field is missing or not a number ≥ 0.
	BadDuration
	// NoHeader: a W3C data line before any `#Fields:` directive.
	NoHeader
	// NotRequest: a well-formed line that does not describe an HTTP
	// request (HAProxy start-up messages, TCP-mode or SSL errors).
	NotRequest
	// NoMatch: the user regular expression did not match.
	NoMatch
	// BadJSON: not a JSON object.
	BadJSON
	// TooLong: the line was longer than the reader's limit and was cut;
	// set by the reader, never by a parser.
	TooLong
	// NumReasons is the number of reasons, for arrays indexed by Reason.
	NumReasons
)

var reasonNames = [NumReasons]string{"ok", "meta", "syntax", "time", "status", "duration",
	"no_fields_header", "not_request", "no_match", "json", "too_long"}

func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// Malformed reports whether r counts as a malformed line.
func (r Reason) Malformed() bool { return r > Meta }

// Parser parses lines of one log file. W3C parsers keep the current
// `#Fields:` header, so every file needs its own Parser. Parse must not
// retain line.
type Parser interface {
	Parse(line []byte, rec *Record) Reason
}

// Fields names the fields of JSON lines, and overrides the W3C column names.
type Fields struct {
	Time     string // JSON default "time"; W3C default "time" or "time-local"
	Date     string // W3C only: default "date" or "date-local"
	Status   string // JSON default "status"; W3C default "sc-status"
	Duration string // JSON default "duration"; W3C default "time-taken" or "TimeTakenMS"
}

// Options choose and configure a format.
type Options struct {
	// Format is one of Formats().
	Format string
	// Unit is the duration field's unit in seconds (0.001 for ms); 0
	// takes the format's default (DefaultUnit).
	Unit float64
	// Upstream takes the duration from the backend's timer instead of the
	// whole request's: nginx/ingress $upstream_response_time (summed over
	// the upstreams tried), HAProxy %Tr. Lines without one have no duration.
	Upstream bool
	// Fields for json and w3c.
	Fields Fields
	// TimeFormat for json and regex: rfc3339 (default), clf, unix,
	// unix_ms, unix_us, unix_ns, or a Go time layout.
	TimeFormat string
	// Regex for the regex format: named groups time (required), status
	// and duration.
	Regex string
}

type formatInfo struct {
	unit float64 // default duration unit, seconds; 0 = the format has no duration
	doc  string
	new  func(o Options, unit float64) (Parser, error)
}

var formats = map[string]formatInfo{
	"clf":           {0, "Common Log Format; arrivals only (no duration field)", newCLF},
	"combined":      {0, "Apache/nginx combined without a time field; arrivals only", newCombined},
	"apache":        {1e-6, "Apache combined + %D (microseconds)", newApache},
	"nginx":         {1, "nginx combined + $request_time [$upstream_response_time]", newNginx},
	"ingress_nginx": {1, "ingress-nginx default log format", newIngress},
	"haproxy":       {1e-3, "HAProxy option httplog, plain or syslog-wrapped (%Ta, or %Tr upstream)", newHAProxy},
	"w3c":           {1e-3, "W3C extended / IIS, columns from #Fields: (time-taken in ms)", newW3C},
	"json":          {1, "JSON lines with configurable field names", newJSON},
	"regex":         {1, "user regular expression with named groups time, status, duration", newRegex},
}

// Formats lists the format names New accepts.
func Formats() []string {
	out := make([]string, 0, len(formats))
	for k := range formats {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// DefaultUnit is the duration unit (seconds) a format assumes; 0 means it has
// no duration field.
func DefaultUnit(format string) float64 { return formats[format].unit }

// HasDuration reports whether a format carries a duration field at all.
func HasDuration(format string) bool { return formats[format].unit != 0 }

// ErrFormat wraps every configuration error of New.
var ErrFormat = errors.New("log format")

// New returns a parser for o.Format.
func New(o Options) (Parser, error) {
	f, ok := formats[o.Format]
	if !ok {
		return nil, fmt.Errorf("%w: unknown format %q (known: %v)", ErrFormat, o.Format, Formats())
	}
	unit := o.Unit
	if unit == 0 {
		unit = f.unit
	}
	if math.IsNaN(unit) || unit < 0 || unit > 3600 {
		return nil, fmt.Errorf("%w: duration unit %v s is not a unit", ErrFormat, unit)
	}
	if o.Upstream && o.Format != "nginx" && o.Format != "ingress_nginx" && o.Format != "haproxy" {
		return nil, fmt.Errorf("%w: format %s has no upstream timer", ErrFormat, o.Format)
	}
	return f.new(o, unit)
}
