package main

import (
	"fmt"
	"io"
)

// cmdSimulate replays CPU demand traces through the engine; see the
// simulator issue. Until it lands it says so and fails.
func cmdSimulate(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "hotplug-actuator simulate: not built yet")
	return 2
}
