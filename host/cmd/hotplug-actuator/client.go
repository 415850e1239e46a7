package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/hotplugheaven/hotplug/host/api"
	"github.com/hotplugheaven/hotplug/host/config"
	"github.com/hotplugheaven/hotplug/internal/cmdline"
)

// clientFlags are the flags of every command that talks to the API.
type clientFlags struct {
	fs        *flag.FlagSet
	name      string
	stdout    io.Writer
	stderr    io.Writer
	exit      int // after parse returned false
	config    *string
	socket    *string
	url       *string
	tokenFile *string
	caFile    *string
	json      *bool
}

func newClientFlags(name string, stdout, stderr io.Writer) *clientFlags {
	fs := flag.NewFlagSet("hotplug-actuator "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return &clientFlags{fs: fs, name: name, stdout: stdout, stderr: stderr,
		config:    fs.String("config", defaultConfig, "configuration file, for api.socket (when it exists and --socket is not given)"),
		socket:    fs.String("socket", "", "API unix socket (default: api.socket of the configuration, else "+config.DefaultAPISocket+")"),
		url:       fs.String("url", "", "API over TCP instead, e.g. http://host:9470 (needs --token-file)"),
		tokenFile: fs.String("token-file", "", "file with the bearer token for --url"),
		caFile:    fs.String("ca-file", "", "PEM certificates to trust for an https --url (e.g. the actuator's api.tls_cert_file); default: the system's"),
		json:      fs.Bool("json", false, "print JSON"),
	}
}

// parse parses flags placed anywhere among the arguments and returns the
// positional ones. When it returns false the command is over, with the
// exit status in c.exit: 0 after --help, 2 after a bad flag.
func (c *clientFlags) parse(args []string) ([]string, bool) {
	if c.exit = 2; cmdline.WantsHelp(args) {
		c.exit = 0
		cmdline.ShowUsage(c.fs, c.stdout)
		return nil, false
	}
	var pos []string
	for {
		if err := c.fs.Parse(args); err != nil {
			return nil, false
		}
		rest := c.fs.Args()
		if len(rest) == 0 {
			return pos, true
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// client builds the API client the flags ask for.
func (c *clientFlags) client() (*api.Client, error) {
	if *c.url != "" {
		if *c.tokenFile == "" {
			return nil, errors.New("--url needs --token-file (the API over TCP requires the bearer token)")
		}
		b, err := os.ReadFile(*c.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("--token-file: %w", err)
		}
		var cfg *tls.Config
		if *c.caFile != "" {
			pem, err := os.ReadFile(*c.caFile)
			if err != nil {
				return nil, fmt.Errorf("--ca-file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--ca-file %s: no PEM certificate in it", *c.caFile)
			}
			cfg = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
		return api.NewTCPClientTLS(*c.url, strings.TrimSpace(string(b)), cfg), nil
	}
	if *c.socket != "" {
		return api.NewUnixClient(*c.socket), nil
	}
	socket := config.DefaultAPISocket
	explicit := false
	c.fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "config" })
	if _, err := os.Stat(*c.config); err == nil || explicit {
		cfg, err := config.Load(*c.config)
		if err != nil {
			return nil, fmt.Errorf("%v (or pass --socket PATH)", err)
		}
		socket = cfg.API.Socket
	}
	return api.NewUnixClient(socket), nil
}

// fail prints err as one line and returns the exit status.
func (c *clientFlags) fail(err error) int {
	var ce *api.ClientError
	switch {
	case errors.As(err, &ce):
		fmt.Fprintf(c.stderr, "hotplug-actuator %s: %s\n", c.name, oneLine(ce.Message))
	case errors.Is(err, context.Canceled):
		return 0 // interrupted by the user
	default:
		fmt.Fprintf(c.stderr, "hotplug-actuator %s: %s\n", c.name, oneLine(err.Error()))
	}
	return 1
}

// usage prints a usage error and returns 2.
func (c *clientFlags) usage(format string, a ...any) int {
	fmt.Fprintf(c.stderr, "hotplug-actuator %s: %s\n", c.name, fmt.Sprintf(format, a...))
	return 2
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// printJSON writes v indented.
func printJSON(w io.Writer, v any) {
	b, _ := json.MarshalIndent(v, "", "  ")
	fmt.Fprintf(w, "%s\n", b)
}

// interruptible is a context ended by Ctrl-C or SIGTERM.
func interruptible() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
}
