package actuator

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/host/actuator/fakeguest"
)

// dialPipe connects to the actuator through ch as a guest would, failing
// the test if the actuator does not accept within 10 s.
func dialPipe(t *testing.T, ch *fakeguest.PipeChannel) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := ch.Dial(ctx)
	if err != nil {
		t.Fatalf("actuator did not accept a connection: %v", err)
	}
	return c
}
