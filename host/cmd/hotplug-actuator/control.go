package main

import (
	"fmt"
	"io"
	"strconv"
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
