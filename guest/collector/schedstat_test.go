package collector

import (
	"slices"
	"testing"

	"github.com/hotplugheaven/hotplug/proto"
)

func TestRunDelays(t *testing.T) {
	prev := map[int]schedCounters{
		0: {cpu: 0, wait: 1000, slices: 10},
		1: {cpu: 1, wait: 1000, slices: 10},
		2: {cpu: 2, wait: 1000, slices: 10},
		3: {cpu: 3, wait: 1000, slices: 10},
		4: {cpu: 4, wait: 1000, slices: 10},
	}
	cur := []schedCounters{
		{cpu: 0, wait: 1500, slices: 12},             // normal
		{cpu: 1, wait: 1000, slices: 10},             // idle: zero deltas are data
		{cpu: 2, wait: 999, slices: 11},              // wait went backwards
		{cpu: 3, wait: 1001, slices: 9},              // slices went backwards
		{cpu: 4, wait: 1000 + 1_000_001, slices: 11}, // beyond maxWait
		{cpu: 5, wait: 50, slices: 1},                // hot-added: no baseline
	}
	got := runDelays(nil, prev, cur, 1_000_000)
	want := []proto.RunDelay{{CPU: 0, WaitNanos: 500, Timeslices: 2}, {CPU: 1}}
	if !slices.Equal(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

// TestReadSchedstat reads the version 15 fixture through procfs.
func TestReadSchedstat(t *testing.T) {
	s, err := New(optionsFor("testdata/guest4", newFakeClock()))
	if err != nil {
		t.Fatal(err)
	}
	if err := readSource(s, srcSchedstat); err != nil {
		t.Fatal(err)
	}
	got := s.srcs[srcSchedstat].(*schedstatSource).cur
	want := []schedCounters{
		{0, 31277415112, 1751045},
		{1, 35120087443, 1805321},
		{2, 9120443871, 590112},
		{3, 8871220934, 571904},
	}
	if !slices.Equal(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	if src := s.Sources()[srcSchedstat]; !src.InUse || src.Err != nil {
		t.Errorf("source %+v", src)
	}
}
