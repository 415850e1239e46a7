package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/hashicorp/go-hclog"

	"github.com/hotplugheaven/hotplug/host/actuator"
	"github.com/hotplugheaven/hotplug/host/apiserver"
	"github.com/hotplugheaven/hotplug/host/config"
)

// apiListeners are the API's sockets, opened before the VMs are touched so
// that a second actuator (whose socket is in use) stops before it does
// anything.
type apiListeners struct {
	unix  net.Listener
	tcp   net.Listener
	token *apiserver.Token
	tls   *tls.Config // nil: plain HTTP on tcp
	hub   *apiserver.Hub
	met   *apiserver.Metrics
}

func openAPI(c config.API, logger hclog.Logger) (*apiListeners, error) {
	l := &apiListeners{hub: apiserver.NewHub(), met: apiserver.NewMetrics()}
	var err error
	if l.unix, err = apiserver.ListenUnix(c.Socket, c.SocketGroup); err != nil {
		return nil, err
	}
	if c.Listen == "" {
		logger.Info("API on the unix socket only (no api.listen)", "socket", c.Socket)
		return l, nil
	}
	if l.token, err = apiserver.LoadToken(c.TokenFile); err != nil {
		l.unix.Close()
		return nil, fmt.Errorf("api.token_file: %w (no TCP listener without a token)", err)
	}
	scheme := "http"
	if c.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
		if err != nil {
			l.unix.Close()
			return nil, fmt.Errorf("api.tls_cert_file, api.tls_key_file: %w", err)
		}
		l.tls, scheme = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, "https"
	}
	if l.tcp, err = net.Listen("tcp", c.Listen); err != nil {
		l.unix.Close()
		return nil, fmt.Errorf("api.listen: %w", err)
	}
	logger.Info("API listening", "socket", c.Socket, "tcp", scheme+"://"+l.tcp.Addr().String(), "auth", "bearer token from api.token_file")
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
	srv, err := apiserver.New(apiserver.Options{Actuator: act, Hub: l.hub, Metrics: l.met, EventLog: eventLog,
		Version: version, Logger: logger.Named("api")})
	if err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	run := func(ln net.Listener, o apiserver.Listen) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ctx, ln, o); err != nil && !errors.Is(err, net.ErrClosed) {
				logger.Error("API server stopped", "address", ln.Addr().String(), "error", err)
			}
		}()
	}
	run(l.unix, apiserver.Listen{})
	if l.tcp != nil {
		run(l.tcp, apiserver.Listen{Token: l.token, TLS: l.tls})
	}
	return func() { srv.Shutdown(); wg.Wait() }, nil
}
