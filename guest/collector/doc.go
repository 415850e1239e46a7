// Package collector measures what a guest needs, once per sampling interval,
// and turns it into a proto.Report for the host actuator; it also reads the
// guest's identity and CPU topology for proto.Hello and proto.Ack.
//
// Kernel files are parsed by github.com/prometheus/procfs wherever procfs has
// a parser; the only hand-written parser is for the two /proc/vmstat counters
// procfs does not expose. Each kernel file has its own Go file. Every path
// hangs off injected /proc, /sys and /etc roots, and every test runs on the
// fixture trees under testdata, never on the test machine's own CPUs.
//
// Counters become rates and fractions only between two samples: the first
// Sample primes the baselines and returns ErrNoBaseline rather than zeros. A
// missing optional source (PSI, schedstat, vmstat) degrades the Report, never
// fails it; Sources says which sources are in use and why not.
//
// The package only reads. It must not change CPU state (that is package cpu),
// must not decide anything (that is the host's engine), and must not emit a
// value that proto.Report.Validate would reject.
package collector
