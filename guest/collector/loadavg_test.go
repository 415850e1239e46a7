package collector

import (
	"errors"
	"math"
	"testing"

	"github.com/prometheus/procfs"
)

func TestCheckLoad(t *testing.T) {
	for _, tc := range []struct {
		name string
		load procfs.LoadAvg
		ok   bool
	}{
		{"idle", procfs.LoadAvg{}, true},
		{"busy", procfs.LoadAvg{Load1: 64.5, Load5: 30, Load15: 12}, true},
		{"NaN", procfs.LoadAvg{Load1: math.NaN()}, false},
		{"Inf", procfs.LoadAvg{Load5: math.Inf(1)}, false},
		{"negative", procfs.LoadAvg{Load15: -1}, false},
		{"past the limit", procfs.LoadAvg{Load1: maxLoad + 1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkLoad(&tc.load)
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrParse)) {
				t.Errorf("checkLoad = %v, want ok %v", err, tc.ok)
			}
		})
	}
}
