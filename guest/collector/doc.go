// Package collector measures what a guest needs, once per sampling interval,
// and turns it into a proto.Report for the host actuator; it also reads the
// guest's identity and CPU topology for proto.Hello and proto.Ack.
//
// Every input of a Report is a Source: each kernel file has its own Go file
// with its own Source (Read reads and parses, Fill adds the interval's
// figures from its own baseline), and the agent's run-queue and
// application-log inputs are Sources too, run after these (Options.Extra).
// Kernel files are parsed by github.com/prometheus/procfs wherever procfs has
// a parser; the hand-written ones are for /proc/vmstat, which procfs does
// not expose, and the memory block states. Every path
// hangs off injected /proc, /sys and /etc roots, and every test runs on the
// fixture trees under testdata, never on the test machine's own CPUs.
//
// Counters become rates and fractions only between two samples: the first
// Sample primes the baselines and returns ErrNoBaseline rather than zeros. A
// missing optional source (PSI, schedstat, vmstat, memory) degrades the
// Report, never fails it; Sources says which sources are in use and why not.
//
// The package only reads. It must not change CPU state (that is package cpu),
// must not decide anything (that is the host's engine), and must not emit a
// value that proto.Report.Validate would reject.
package collector
