package transport

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
)

func TestVirtioSerialResolve(t *testing.T) {
	root := t.TempDir()
	dev, sys := filepath.Join(root, "dev"), filepath.Join(root, "sys")
	for port, name := range map[string]string{"vport0p1": "org.qemu.guest_agent.0", "vport0p2": DefaultPortName} {
		dir := filepath.Join(sys, "class", "virtio-ports", port)
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, "name"), []byte(name+"\n"), 0o644)
	}
	v := &VirtioSerial{DevRoot: dev, SysRoot: sys}
	if got, err := v.Resolve(); err != nil || got != filepath.Join(dev, "vport0p2") {
		t.Fatalf("scan /sys: %q %v", got, err)
	}
	// A udev link wins.
	os.MkdirAll(filepath.Join(dev, "virtio-ports"), 0o755)
	os.WriteFile(filepath.Join(dev, "virtio-ports", DefaultPortName), nil, 0o644)
	if got, _ := v.Resolve(); got != filepath.Join(dev, "virtio-ports", DefaultPortName) {
		t.Fatalf("udev link: %q", got)
	}
	if _, err := (&VirtioSerial{Name: "nope", DevRoot: dev, SysRoot: sys}).Resolve(); !errors.Is(err, ErrPortNotFound) {
		t.Fatalf("missing port: %v", err)
	}
	if got, _ := (&VirtioSerial{Path: "/dev/hvc9", Name: "x"}).Resolve(); got != "/dev/hvc9" {
		t.Fatalf("explicit path: %q", got)
	}
}

func TestTCPDial(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	c, err := (&TCP{Addr: ln.Addr().String()}).Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 2)
	if _, err := c.Read(buf); err != nil || string(buf) != "hi" {
		t.Fatalf("read %q %v", buf, err)
	}
}
