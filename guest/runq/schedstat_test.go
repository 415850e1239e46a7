package runq

import (
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/proto"
)

// fakeClock advances only when told.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// schedstatFile renders a version 15 /proc/schedstat with the given
// run_delay and pcount per CPU (the other cpu fields are fixed).
func schedstatFile(cpus map[int][2]uint64) string {
	var b strings.Builder
	b.WriteString("version 15\ntimestamp 4295432768\n")
	for i := 0; i < 8; i++ {
		c, ok := cpus[i]
		if !ok {
			continue
		}
		fmt.Fprintf(&b, "cpu%d 0 0 2781204 1028133 1467120 1036287 403329180366 %d %d\n", i, c[0], c[1])
		b.WriteString("domain0 00000003 31000 28032 573 1146 462 0 1 25272 1200 1046 16 32 20 0 1 965 52000 44787 621 621 92 0 0 40654 9 0 6 0 0 0 0 0 0 87533 5577 0\n")
	}
	return b.String()
}

// TestSchedstatSampler: the mean wait per timeslice over the collector's
// per-CPU deltas (which already leave out new, reset and implausible
// CPUs: collector's TestRunDelays); no deltas, no RunQueue. The file is
// read once, at open, to know it is there.
func TestSchedstatSampler(t *testing.T) {
	root := copyTree(t, "testdata/nobtf")
	path := filepath.Join(root, "proc", "schedstat")
	writeFile(t, path, schedstatFile(map[int][2]uint64{0: {1_000_000, 100}, 1: {5_000_000, 200}}))
	s, err := openSchedstat(filepath.Join(root, "proc"))
	if err != nil {
		t.Fatal(err)
	}
	// The file changes nothing after open: the sampler does not read it.
	writeFile(t, path, "garbage\n")
	for _, st := range []struct {
		name  string
		delay []proto.RunDelay
		want  *proto.RunQueue
	}{
		// cpu0 waited 3 ms over 30 slices, cpu1 1 ms over 10, cpu2
		// nothing: 4 ms / 40 slices.
		{"mean over all CPUs", []proto.RunDelay{{CPU: 0, WaitNanos: 3e6, Timeslices: 30}, {CPU: 1, WaitNanos: 1e6, Timeslices: 10}, {CPU: 2}},
			fromMean(proto.RunQSourceSchedstat, 100*time.Microsecond)},
		{"no slices at all", []proto.RunDelay{{CPU: 0}, {CPU: 1}}, fromMean(proto.RunQSourceSchedstat, 0)},
		{"no deltas (the collector's first report)", nil, nil},
	} {
		t.Run(st.name, func(t *testing.T) {
			q, err := s.sample(&proto.Report{RunDelay: st.delay})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(q, st.want) {
				t.Errorf("sample = %+v, want %+v", q, st.want)
			}
		})
	}

	writeFile(t, path, "version 15\ntimestamp 1\n")
	if _, err := openSchedstat(filepath.Join(root, "proc")); err == nil || !strings.Contains(err.Error(), "no cpuN line") {
		t.Errorf("schedstat without cpu lines: %v", err)
	}
	if _, err := openSchedstat(filepath.Join("testdata", "psionly", "proc")); err == nil || !strings.Contains(err.Error(), "CONFIG_SCHEDSTATS") {
		t.Errorf("missing schedstat: %v", err)
	}
}

// The fixture itself (from a 4-CPU guest) opens.
func TestSchedstatFixture(t *testing.T) {
	if _, err := openSchedstat(filepath.Join("testdata", "btf", "proc")); err != nil {
		t.Fatal(err)
	}
}
