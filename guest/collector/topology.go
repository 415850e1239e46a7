package collector

import "errors"

// ErrNoAPICID: cpuinfo names no APIC ids (not an x86 guest, or a kernel
// that hides them). The actuator then has to map CPUs another way.
var ErrNoAPICID = errors.New("no APIC ids in cpuinfo (not an x86 guest?)")
