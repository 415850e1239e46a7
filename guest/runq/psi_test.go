package runq

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/proto"
)

func TestPSISampler(t *testing.T) {
	root := copyTree(t, "testdata/psionly")
	proc := filepath.Join(root, "proc")
	statFixture, err := os.ReadFile(filepath.Join(proc, "stat"))
	if err != nil {
		t.Fatal(err)
	}
	set := func(stallMicros, ctxt uint64) {
		writeFile(t, filepath.Join(proc, "pressure", "cpu"), fmt.Sprintf(
			"some avg10=3.21 avg60=2.08 avg300=1.17 total=%d\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n", stallMicros))
		s := strings.Replace(string(statFixture), "ctxt 5707084", fmt.Sprintf("ctxt %d", ctxt), 1)
		writeFile(t, filepath.Join(proc, "stat"), s)
	}
	clock := &fakeClock{time.Unix(1000, 0)}
	set(1_000_000, 5_000)
	s, err := openPSI(proc, clock.now)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name        string
		stall, ctxt uint64
		mean        time.Duration
		wantErr     bool
	}{
		// 200 ms of "some" stall over 400 switches: at least 500 µs a wait.
		{"stall per switch", 1_200_000, 5_400, 0, false},
		{"idle", 1_200_000, 5_500, 0, false},
		// Stalled for 300 ms without a single switch: one long wait.
		{"no switch", 1_500_000, 5_500, 300 * time.Millisecond, false},
		// More stall than wall time is impossible: clamped to the 1 s
		// interval, over 10 switches.
		{"stall clamped to the interval", 9_500_000, 5_510, 100 * time.Millisecond, false},
		{"counters backwards", 1, 5_510, 0, true},
	}
	steps[0].mean = 500 * time.Microsecond
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			clock.t = clock.t.Add(time.Second)
			set(st.stall, st.ctxt)
			q, err := s.sample(&proto.Report{})
			if st.wantErr {
				if err == nil {
					t.Fatalf("sample = %+v, want an error", q)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := fromMean(proto.RunQSourcePSI, st.mean); !reflect.DeepEqual(q, want) {
				t.Errorf("sample = %+v, want %+v (mean %v)", q, want, st.mean)
			}
		})
	}
	// After the reset the next delta is normal again.
	clock.t = clock.t.Add(time.Second)
	set(1001, 5_520)
	if q, err := s.sample(&proto.Report{}); err != nil || q.P50Nanos != fromMean(proto.RunQSourcePSI, 100*time.Microsecond).P50Nanos {
		t.Errorf("after reset: %+v, %v", q, err)
	}

	writeFile(t, filepath.Join(proc, "pressure", "cpu"), "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
	if _, err := s.sample(&proto.Report{}); err == nil {
		t.Error("PSI without a some line accepted")
	}
	if _, err := openPSI(filepath.Join("testdata", "minimal", "proc"), clock.now); err == nil || !strings.Contains(err.Error(), "CONFIG_PSI") {
		t.Errorf("missing PSI: %v", err)
	}
}
