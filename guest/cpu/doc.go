// Package cpu brings guest CPUs online and offline through the kernel's CPU
// hotplug interface in sysfs (/sys/devices/system/cpu), ejects offline ones
// through their ACPI device (for VirtualBox, which waits for the guest to do
// so), and reads the possible, present and online CPU lists there.
//
// It follows Documentation/core-api/cpu_hotplug.rst for the online files,
// Documentation/admin-guide/cputopology.rst for the list files and
// Documentation/ABI/testing/sysfs-bus-acpi for eject. Every path hangs off
// an injected sysfs root so tests run on fixture trees (package cputest
// writes them and plays the kernel's part in an eject).
//
// The package only does what it is told for one CPU at a time and reports
// what the kernel did, never what was asked: it must not decide which CPUs to
// change, must not touch CPUs that cannot be hot-removed (cpu0, CPUs without
// an online file), and must not talk to the host.
package cpu
