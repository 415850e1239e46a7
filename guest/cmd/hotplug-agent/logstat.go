package main

import (
	"fmt"
	"io"
)

// cmdLogstat parses access logs once and prints their statistics; see the
// gray-box issue. Until it lands it says so and fails.
func cmdLogstat(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "hotplug-agent logstat: not built yet")
	return 2
}
