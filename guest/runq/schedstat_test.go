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

func TestSchedstatSampler(t *testing.T) {
	root := copyTree(t, "testdata/nobtf")
	path := filepath.Join(root, "proc", "schedstat")
	clock := &fakeClock{time.Unix(1000, 0)}
	base := map[int][2]uint64{0: {1_000_000, 100}, 1: {5_000_000, 200}, 2: {0, 0}}
	writeFile(t, path, schedstatFile(base))
	s, err := openSchedstat(filepath.Join(root, "proc"), clock.now)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name string
		cpus map[int][2]uint64
		mean time.Duration
	}{
		// cpu0 waited 3 ms over 30 slices, cpu1 1 ms over 10, cpu2
		// nothing: 4 ms / 40 slices.
		{"mean over all CPUs", map[int][2]uint64{0: {4_000_000, 130}, 1: {6_000_000, 210}, 2: {0, 0}}, 100 * time.Microsecond},
		// cpu3 is new (hot-added): no baseline, left out. cpu1's counters
		// went backwards (reset): left out.
		{"new and reset CPUs left out", map[int][2]uint64{0: {4_500_000, 140}, 1: {1, 1}, 2: {0, 0}, 3: {9_000_000, 1}}, 50 * time.Microsecond},
		// cpu3 has a baseline now.
		{"hot-added CPU counted", map[int][2]uint64{0: {4_500_000, 140}, 1: {1, 1}, 2: {0, 0}, 3: {9_200_000, 3}}, 100 * time.Microsecond},
		{"no slices at all", map[int][2]uint64{0: {4_500_000, 140}, 1: {1, 1}, 2: {0, 0}, 3: {9_200_000, 3}}, 0},
		// 2e15 ns of waiting on one CPU in one second is more than a
		// million tasks waiting throughout: not a real delta.
		{"implausible wait dropped", map[int][2]uint64{0: {4_500_000 + 2e15, 141}, 1: {1, 1}, 2: {100, 1}, 3: {9_200_000, 3}}, 100 * time.Nanosecond},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			clock.t = clock.t.Add(time.Second)
			writeFile(t, path, schedstatFile(st.cpus))
			q, err := s.sample()
			if err != nil {
				t.Fatal(err)
			}
			want := fromMean(proto.RunQSourceSchedstat, st.mean)
			if !reflect.DeepEqual(q, want) {
				t.Errorf("sample = %+v, want %+v (mean %v)", q, want, st.mean)
			}
		})
	}

	writeFile(t, path, "version 15\ntimestamp 1\n")
	if _, err := s.sample(); err == nil || !strings.Contains(err.Error(), "no cpuN line") {
		t.Errorf("schedstat without cpu lines: %v", err)
	}
	if _, err := openSchedstat(filepath.Join("testdata", "psionly", "proc"), clock.now); err == nil || !strings.Contains(err.Error(), "CONFIG_SCHEDSTATS") {
		t.Errorf("missing schedstat: %v", err)
	}
}

// The fixture itself (from a 4-CPU guest) parses, and an unchanged file
// means no waiting.
func TestSchedstatFixture(t *testing.T) {
	clock := &fakeClock{time.Unix(1000, 0)}
	s, err := openSchedstat(filepath.Join("testdata", "btf", "proc"), clock.now)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(s.(*schedstatSampler).prev); n != 4 {
		t.Errorf("%d CPUs read from the fixture, want 4", n)
	}
	clock.t = clock.t.Add(time.Second)
	q, err := s.sample()
	if err != nil || q.P99Nanos != 0 || q.Source != proto.RunQSourceSchedstat {
		t.Errorf("unchanged schedstat: %+v, %v", q, err)
	}
}
