package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/hashicorp/go-hclog"

	"github.com/hotplugheaven/hotplug/host/actuator"
	"github.com/hotplugheaven/hotplug/host/api"
	"github.com/hotplugheaven/hotplug/host/config"
)

// apiListeners are the API's sockets, opened before the VMs are touched so
// that a second actuator (whose socket is in use) stops before it does
// anything.
type apiListeners struct {
	unix  net.Listener
	tcp   net.Listener
	token *api.Token
	hub   *api.Hub
	met   *api.Metrics
}

func openAPI(c config.API, logger hclog.Logger) (*apiListeners, error) {
	l := &apiListeners{hub: api.NewHub(), met: api.NewMetrics()}
	var err error
	if l.unix, err = api.ListenUnix(c.Socket, c.SocketGroup); err != nil {
		return nil, err
	}
	if c.Listen == "" {
		logger.Info("API on the unix socket only (no api.listen)", "socket", c.Socket)
		return l, nil
	}
	if l.token, err = api.LoadToken(c.TokenFile); err != nil {
		l.unix.Close()
		return nil, fmt.Errorf("api.token_file: %w (no TCP listener without a token)", err)
	}
	if l.tcp, err = net.Listen("tcp", c.Listen); err != nil {
		l.unix.Close()
		return nil, fmt.Errorf("api.listen: %w", err)
	}
	logger.Info("API listening", "socket", c.Socket, "tcp", l.tcp.Addr().String(), "auth", "bearer token from api.token_file")
	return l, nil
}

// close closes the listeners (a no-op for those Serve already closed):
// the socket file goes with the unix one.
func (l *apiListeners) close() {
	l.unix.Close()
	if l.tcp != nil {
		l.tcp.Close()
	}
}

// observers are given to actuator.New.
func (l *apiListeners) observers() []actuator.Observer { return []actuator.Observer{l.hub, l.met} }

// serve serves the API until ctx ends; the returned func waits for it.
func (l *apiListeners) serve(ctx context.Context, act *actuator.Actuator, eventLog string, logger hclog.Logger) (wait func(), err error) {
	srv, err := api.New(api.Options{Actuator: act, Hub: l.hub, Metrics: l.met, EventLog: eventLog,
		Version: version, Logger: logger.Named("api")})
	if err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	run := func(ln net.Listener, tok *api.Token) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ctx, ln, tok); err != nil && !errors.Is(err, net.ErrClosed) {
				logger.Error("API server stopped", "address", ln.Addr().String(), "error", err)
			}
		}()
	}
	run(l.unix, nil)
	if l.tcp != nil {
		run(l.tcp, l.token)
	}
	return func() { srv.Shutdown(); wg.Wait() }, nil
}
