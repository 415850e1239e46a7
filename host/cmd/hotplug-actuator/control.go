package main

import (
	"fmt"
	"io"
	"strconv"

	"github.com/hotplugheaven/hotplug/host/api"
	"github.com/hotplugheaven/hotplug/host/memory"
)

// cmdPause and cmdResume stop and restart scaling of a VM.
func cmdPause(args []string, stdout, stderr io.Writer) int {
	return pauseResume("pause", args, stdout, stderr)
}
func cmdResume(args []string, stdout, stderr io.Writer) int {
	return pauseResume("resume", args, stdout, stderr)
}

func pauseResume(name string, args []string, stdout, stderr io.Writer) int {
	f := newClientFlags(name, stdout, stderr)
	pos, ok := f.parse(args)
	if !ok {
		return f.exit
	}
	if len(pos) != 1 {
		return f.usage("usage: %s VM [--json]", name)
	}
	c, err := f.client()
	if err != nil {
		return f.fail(err)
	}
	ctx, cancel := interruptible()
	defer cancel()
	call := c.Pause
	if name == "resume" {
		call = c.Resume
	}
	v, err := call(ctx, pos[0])
	if err != nil {
		return f.fail(err)
	}
	if *f.json {
		printJSON(stdout, v)
		return 0
	}
	if v.Paused {
		fmt.Fprintf(stdout, "%s: scaling paused at %d vCPUs (decisions are still computed: explain %s)\n", v.Name, v.Current, v.Name)
	} else {
		fmt.Fprintf(stdout, "%s: scaling resumed at %d vCPUs\n", v.Name, v.Current)
	}
	return 0
}

// cmdSetVCPUs moves a VM to N vCPUs now, within its policy.
func cmdSetVCPUs(args []string, stdout, stderr io.Writer) int {
	f := newClientFlags("set-vcpus", stdout, stderr)
	pos, ok := f.parse(args)
	if !ok {
		return f.exit
	}
	if len(pos) != 2 {
		return f.usage("usage: set-vcpus VM N [--json]")
	}
	n, err := strconv.Atoi(pos[1])
	if err != nil || n < 1 {
		return f.usage("N must be a whole number of vCPUs, at least 1, got %q", pos[1])
	}
	c, err := f.client()
	if err != nil {
		return f.fail(err)
	}
	ctx, cancel := interruptible()
	defer cancel()
	v, err := c.SetVCPUs(ctx, pos[0], n)
	if err != nil {
		return f.fail(err)
	}
	if *f.json {
		printJSON(stdout, v)
		return 0
	}
	msg := fmt.Sprintf("%s: %d vCPUs", v.Name, v.Current)
	if v.Current != n {
		msg += fmt.Sprintf(" (asked for %d; the policy allows %d–%d and the host budget and hot-plug slots limit it too)",
			n, v.Policy.MinVCPUs, v.Policy.MaxVCPUs)
	}
	fmt.Fprintln(stdout, msg)
	if !v.Paused {
		fmt.Fprintf(stdout, "note: %s is not paused, so the engine may resize it again (pause %s to keep this size)\n", v.Name, v.Name)
	}
	return 0
}

// cmdSetMemory moves a VM's memory to SIZE now, within its memory device.
func cmdSetMemory(args []string, stdout, stderr io.Writer) int {
	f := newClientFlags("set-memory", stdout, stderr)
	force := f.fs.Bool("force", false, "shrink below the guest's safety floor (what it uses plus headroom): the guest may OOM-kill its processes")
	pos, ok := f.parse(args)
	if !ok {
		return f.exit
	}
	if len(pos) != 2 {
		return f.usage("usage: set-memory VM SIZE [--force] [--json]   (SIZE e.g. 1536MiB, 2GiB)")
	}
	var size memory.Size
	if err := size.UnmarshalText([]byte(pos[1])); err != nil || size < 1<<20 {
		return f.usage("SIZE must be a size of at least 1MiB, e.g. 2GiB, got %q", pos[1])
	}
	c, err := f.client()
	if err != nil {
		return f.fail(err)
	}
	ctx, cancel := interruptible()
	defer cancel()
	v, err := c.SetMemory(ctx, pos[0], api.MemoryRequest{Bytes: uint64(size), Force: *force})
	if err != nil {
		return f.fail(err)
	}
	if *f.json {
		printJSON(stdout, v)
		return 0
	}
	if v.Memory == nil {
		fmt.Fprintf(stdout, "%s: memory resized\n", v.Name)
		return 0
	}
	fmt.Fprintf(stdout, "%s: %s of memory (%s device, at most %s)\n", v.Name, memory.Size(v.Memory.Total), v.Memory.Device, memory.Size(v.Memory.Max))
	if !v.Paused && v.Memory.Mode != memory.ModeOff {
		fmt.Fprintf(stdout, "note: %s is not paused, so memory sizing may resize it again (pause %s to keep this size)\n", v.Name, v.Name)
	}
	return 0
}
