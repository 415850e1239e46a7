// Command vsockcheck runs inside a test guest with vsock_loopback loaded and
// plays the actuator's side of a vsock session with the real hotplug-agent:
// it listens through host/channel's VsockHub, greets the agent, reads a
// report and has a command acknowledged. It prints one line starting "OK"
// on success and exits non-zero otherwise. Test support only (under
// testdata, so `go build ./...` skips it).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/hotplugheaven/hotplug/host/channel"
	"github.com/hotplugheaven/hotplug/proto"
)

func main() {
	port := flag.Uint("port", 7000, "vsock port to listen on")
	cid := flag.Uint("cid", 1, "CID the agent connects from (1 = loopback)")
	flag.Parse()
	if err := run(uint32(*port), uint32(*cid)); err != nil {
		fmt.Println("FAIL", err)
		os.Exit(1)
	}
}

func run(port, cid uint32) error {
	hub, err := channel.ListenVsock(port, nil)
	if err != nil {
		return err
	}
	defer hub.Close()
	ch, err := hub.Channel(cid)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	fmt.Println("READY")
	conn, err := ch.Accept(ctx)
	if err != nil {
		return fmt.Errorf("accept: %w", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	r, w := proto.NewReader(conn, 0), proto.NewWriter(conn)
	m, err := r.Next()
	if err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	hello, ok := m.(*proto.Hello)
	if !ok {
		return fmt.Errorf("first message %v", m.Type())
	}
	if err := w.Write(&proto.Welcome{Version: proto.MaxVersion, VM: "vsock-test", IntervalNanos: int64(200 * time.Millisecond)}); err != nil {
		return err
	}
	var report *proto.Report
	for report == nil {
		m, err := r.Next()
		if err != nil {
			return fmt.Errorf("report: %w", err)
		}
		report, _ = m.(*proto.Report)
	}
	if err := w.Write(&proto.Command{ID: 1, IntervalNanos: int64(time.Second)}); err != nil {
		return err
	}
	for {
		m, err := r.Next()
		if err != nil {
			return fmt.Errorf("ack: %w", err)
		}
		if ack, ok := m.(*proto.Ack); ok {
			if !ack.OK || ack.ID != 1 {
				return fmt.Errorf("ack %+v", ack)
			}
			break
		}
	}
	fmt.Printf("OK remote=%s agent=%s online=%s report_seq=%d cpus=%d\n", conn.RemoteAddr(), hello.AgentVersion, hello.Online, report.Seq, len(report.CPUs))
	return nil
}
