package runq

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/proto"
)

// copyTree copies a fixture tree into a fresh temporary directory, so a
// test can advance its counters.
func copyTree(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	return dst
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// fakeEBPF stands in for the kernel: it fails each program set with the
// error given, or returns a sampler reporting a fixed histogram.
type fakeEBPF struct {
	errs  map[progSet]error
	calls []progSet
}

type fixedSampler struct{ q *proto.RunQueue }

func (f fixedSampler) sample(*proto.Report) (*proto.RunQueue, error) { return f.q, nil }
func (f fixedSampler) close() error                                  { return nil }

func (f *fakeEBPF) open(set progSet, btfPath string, _ loadOpts) (sampler, error) {
	f.calls = append(f.calls, set)
	if err := f.errs[set]; err != nil {
		return nil, err
	}
	return fixedSampler{fromHistogram(set.source(), buckets(3, 10))}, nil
}

func TestFallbackChain(t *testing.T) {
	verifier := errors.New("the kernel's verifier rejected the ebpf-tp_btf programs")
	eperm := explainLoad(tpBTF, "loading", fmt.Errorf("map create: %w", syscall.EPERM))
	cases := []struct {
		name    string
		fixture string
		mode    Mode
		errs    map[progSet]error
		want    string   // source in use; "" = ErrNoSource
		skipped []string // sources listed as not used, in order
		calls   int      // eBPF loads attempted
		reason  []string // substrings of Choice.String() or of the error
	}{
		{name: "tp_btf", fixture: "btf", want: proto.RunQSourceTPBTF, calls: 1},
		{name: "ebpf mode is auto", fixture: "btf", mode: ModeEBPF, want: proto.RunQSourceTPBTF, calls: 1},
		{name: "tp_btf rejected, raw_tp loads", fixture: "btf", errs: map[progSet]error{tpBTF: verifier},
			want: proto.RunQSourceRawTP, skipped: []string{proto.RunQSourceTPBTF}, calls: 2, reason: []string{"verifier"}},
		{name: "no privileges: raw_tp not tried", fixture: "btf", errs: map[progSet]error{tpBTF: eperm},
			want: proto.RunQSourceSchedstat, skipped: []string{proto.RunQSourceTPBTF, proto.RunQSourceRawTP}, calls: 1,
			reason: []string{"run the agent as root", "same cause as ebpf-tp_btf", "mean wait per timeslice"}},
		{name: "both sets fail", fixture: "btf", errs: map[progSet]error{tpBTF: verifier, rawTP: errors.New("raw broken")},
			want: proto.RunQSourceSchedstat, skipped: []string{proto.RunQSourceTPBTF, proto.RunQSourceRawTP}, calls: 2, reason: []string{"raw broken"}},
		{name: "no BTF", fixture: "nobtf", want: proto.RunQSourceSchedstat,
			skipped: []string{proto.RunQSourceTPBTF, proto.RunQSourceRawTP}, calls: 0, reason: []string{"no kernel BTF", "CONFIG_DEBUG_INFO_BTF"}},
		{name: "raw_tp mode", fixture: "btf", mode: ModeRawTP, want: proto.RunQSourceRawTP, calls: 1},
		{name: "raw_tp mode falls to /proc", fixture: "btf", mode: ModeRawTP, errs: map[progSet]error{rawTP: eperm},
			want: proto.RunQSourceSchedstat, skipped: []string{proto.RunQSourceRawTP}, calls: 1},
		{name: "schedstat mode skips eBPF", fixture: "btf", mode: ModeSchedstat, want: proto.RunQSourceSchedstat},
		{name: "psi mode", fixture: "btf", mode: ModePSI, want: proto.RunQSourcePSI},
		{name: "no schedstat", fixture: "psionly", want: proto.RunQSourcePSI,
			skipped: []string{proto.RunQSourceTPBTF, proto.RunQSourceRawTP, proto.RunQSourceSchedstat}, calls: 0,
			reason: []string{"CONFIG_SCHEDSTATS", "some-stall time per context switch"}},
		{name: "nothing", fixture: "minimal", calls: 0, reason: []string{"no kernel BTF", "CONFIG_SCHEDSTATS", "CONFIG_PSI"}},
		{name: "off", fixture: "btf", mode: ModeOff, reason: []string{"turned off"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fake := &fakeEBPF{errs: c.errs}
			root := filepath.Join("testdata", c.fixture)
			s, err := New(Options{Mode: c.mode, ProcRoot: filepath.Join(root, "proc"), SysRoot: filepath.Join(root, "sys"), openEBPF: fake.open})
			if len(fake.calls) != c.calls {
				t.Errorf("eBPF loads attempted: %v, want %d", fake.calls, c.calls)
			}
			if c.want == "" {
				if !errors.Is(err, ErrNoSource) {
					t.Fatalf("New = %v, %v; want ErrNoSource", s, err)
				}
				for _, r := range c.reason {
					if !strings.Contains(err.Error(), r) {
						t.Errorf("error %q does not say %q", err, r)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			ch := s.Choice()
			if ch.Source != c.want {
				t.Fatalf("source %s, want %s (%s)", ch.Source, c.want, ch)
			}
			var got []string
			for _, a := range ch.Skipped {
				got = append(got, a.Source)
				if a.Err == nil {
					t.Errorf("%s skipped without a reason", a.Source)
				}
			}
			if strings.Join(got, ",") != strings.Join(c.skipped, ",") {
				t.Errorf("skipped %v, want %v", got, c.skipped)
			}
			for _, r := range c.reason {
				if !strings.Contains(ch.String(), r) {
					t.Errorf("choice %q does not say %q", ch, r)
				}
			}
			if s.Name() != "runq:"+c.want {
				t.Errorf("Name() = %q", s.Name())
			}
			// The collector's schedstat deltas, as the agent fills them
			// before its extras.
			r := &proto.Report{Seq: 1, IntervalNanos: int64(time.Second), RunDelay: []proto.RunDelay{{CPU: 0, WaitNanos: 1e5, Timeslices: 10}}}
			if err := s.Fill(r); err != nil {
				t.Fatal(err)
			}
			if r.RunQueue == nil || r.RunQueue.Source != c.want {
				t.Fatalf("Fill set %+v, want source %s", r.RunQueue, c.want)
			}
			if err := r.Validate(); err != nil {
				t.Error(err)
			}
		})
	}
}

// Without a BTF file the real loader must give up with errNoBTF, before it
// asks the kernel for anything: this runs on any test machine.
func TestRealLoaderWithoutBTF(t *testing.T) {
	_, err := openEBPF(tpBTF, filepath.Join(t.TempDir(), "vmlinux"), loadOpts{countPreempted: true})
	if !errors.Is(err, errNoBTF) || !strings.Contains(err.Error(), "CONFIG_DEBUG_INFO_BTF") {
		t.Fatalf("openEBPF without BTF = %v", err)
	}
	// A file that is not BTF is also "no BTF", not a crash.
	bad := filepath.Join(t.TempDir(), "vmlinux")
	writeFile(t, bad, "garbage")
	if _, err := openEBPF(rawTP, bad, loadOpts{countPreempted: true}); !errors.Is(err, errNoBTF) {
		t.Fatalf("openEBPF with garbage BTF = %v", err)
	}
}

func TestExplainLoad(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
		is   error
	}{
		{fmt.Errorf("load program: %w", syscall.EPERM), "CAP_BPF", errNotPermitted},
		{fmt.Errorf("create link: %w", syscall.EACCES), "root", errNotPermitted},
		{fmt.Errorf("wrap: %w", errors.ErrUnsupported), "wrap", nil},
	} {
		got := explainLoad(rawTP, "attaching to sched_switch", c.err)
		if !strings.Contains(got.Error(), c.want) || !strings.Contains(got.Error(), "sched_switch") {
			t.Errorf("explainLoad(%v) = %v", c.err, got)
		}
		if c.is != nil && !errors.Is(got, c.is) {
			t.Errorf("explainLoad(%v) is not %v", c.err, c.is)
		}
	}
}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{"": ModeAuto, "auto": ModeAuto, "ebpf": ModeEBPF, "raw_tp": ModeRawTP, "schedstat": ModeSchedstat, "psi": ModePSI, "off": ModeOff} {
		if got, err := ParseMode(in); err != nil || got != want {
			t.Errorf("ParseMode(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"EBPF", "tp_btf", "ebpf-tp_btf", " auto"} {
		if _, err := ParseMode(in); err == nil {
			t.Errorf("ParseMode(%q) accepted", in)
		}
	}
	if _, err := New(Options{Mode: "bogus"}); err == nil || errors.Is(err, ErrNoSource) {
		t.Errorf("New with a bad mode = %v; want a configuration error", err)
	}
}
