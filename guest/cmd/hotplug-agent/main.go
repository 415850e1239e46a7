// Command hotplug-agent runs inside a guest: it measures what the guest
// needs and reports it to hotplug-actuator on the host, and onlines or
// offlines CPUs when the actuator asks.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/hashicorp/go-hclog"

	"github.com/hotplugheaven/hotplug/guest/agent"
	"github.com/hotplugheaven/hotplug/guest/applog"
	"github.com/hotplugheaven/hotplug/guest/collector"
	"github.com/hotplugheaven/hotplug/guest/runq"
	"github.com/hotplugheaven/hotplug/guest/transport"
	"github.com/hotplugheaven/hotplug/internal/cmdline"
	"github.com/hotplugheaven/hotplug/proto"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const defaultConfig = "/etc/hotplug-agent/agent.toml"

// fileConfig is the TOML file. Flags override it.
type fileConfig struct {
	Transport     string   `toml:"transport"`      // virtio-serial, vsock, tcp
	Port          string   `toml:"port"`           // virtio-serial port name
	Device        string   `toml:"device"`         // virtio-serial device path (overrides port)
	VsockCID      uint32   `toml:"vsock_cid"`      // actuator's CID, 2 = host
	VsockPort     uint32   `toml:"vsock_port"`     // actuator's vsock port
	TCPAddress    string   `toml:"tcp_address"`    // host:port for tcp
	VBoxControl   string   `toml:"vboxcontrol"`    // VBoxControl program (virtualbox-guestprops)
	Interval      duration `toml:"interval"`       // sampling interval
	AutoOnline    *bool    `toml:"auto_online"`    // online hot-added CPUs
	OnlineTimeout duration `toml:"online_timeout"` // wait for a hot-added CPU
	QueueSize     int      `toml:"queue_size"`     // unsent reports kept
	LogLevel      string   `toml:"log_level"`
	LogFormat     string   `toml:"log_format"` // text or json
	ProcRoot      string   `toml:"proc_root"`
	SysRoot       string   `toml:"sys_root"`
	AppsDir       string   `toml:"apps_dir"`  // per-application log configs (gray-box)
	StateDir      string   `toml:"state_dir"` // log positions kept across restarts

	// RunQSource is the best run-queue latency source to try: auto (=
	// ebpf), ebpf, raw_tp, schedstat, psi or off (see guest/runq).
	RunQSource string `toml:"runq_source"`
	// StatusFile is rewritten every sample for `hotplug-agent status`; "" for none.
	StatusFile string `toml:"status_file"`
}

type duration struct{ time.Duration }

func (d *duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("not a duration (use e.g. \"5s\"): %q", b)
	}
	d.Duration = v
	return nil
}

func defaults() fileConfig {
	on := true
	return fileConfig{
		Transport: "virtio-serial", Port: transport.DefaultPortName,
		VsockCID: 2, VsockPort: 7000,
		Interval: duration{5 * time.Second}, AutoOnline: &on,
		OnlineTimeout: duration{20 * time.Second}, QueueSize: 12,
		LogLevel: "info", LogFormat: "text",
		AppsDir: applog.DefaultDir, StateDir: applog.DefaultStateDir,
		RunQSource: string(runq.ModeAuto),
		StatusFile: agent.DefaultStatusFile,
	}
}

const usage = `hotplug-agent — Hot-Plug Heaven guest agent

Usage:
  hotplug-agent [flags]           run the agent (normally from systemd)
  hotplug-agent check [flags]     validate agent.toml and apps.d/*.toml, then exit
  hotplug-agent status [--json]   what the running agent sees (from its status file)
  hotplug-agent logstat --format FORMAT [--app FILE.toml] FILE...
                                  parse access logs as gray-box mode does; print JSON
  hotplug-agent help [COMMAND]    this text, or one command's
  hotplug-agent --version         print the version

The agent samples /proc and /sys every interval, sends the measurements to
hotplug-actuator on the host over virtio-serial (default), vsock or TCP, and
onlines/offlines CPUs when the actuator asks. Hot-added CPUs are onlined
unless auto_online = false.

Configuration is read from %s (TOML; see the packaged example for
every key); flags override it.

Flags:
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "logstat":
			return cmdLogstat(args[1:], stdout, stderr)
		case "status":
			return cmdStatus(args[1:], stdout, stderr)
		case "help":
			switch {
			case len(args) == 1 || args[1] == "help":
				return run([]string{"--help"}, stdout, stderr)
			case len(args) > 2:
				fmt.Fprintf(stderr, "hotplug-agent help: takes one command, got %q\n", args[1:])
				return 2
			case args[1] == "check" || args[1] == "logstat" || args[1] == "status":
				return run([]string{args[1], "--help"}, stdout, stderr)
			}
			fmt.Fprintf(stderr, "hotplug-agent help: unknown command %q (commands: check, status, logstat)\n", args[1])
			return 2
		}
	}
	// check validates the configuration (agent.toml, apps.d) and exits:
	// 0 when the agent would start, 2 with the reason otherwise.
	checkOnly := len(args) > 0 && args[0] == "check"
	if checkOnly {
		args = args[1:]
	}
	fs := flag.NewFlagSet("hotplug-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), usage, defaultConfig)
		fs.PrintDefaults()
	}
	configPath := fs.String("config", defaultConfig, "config file (a missing default file is not an error)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	transportFlag := fs.String("transport", "", "virtio-serial, vsock or tcp")
	port := fs.String("port", "", "virtio-serial port name")
	device := fs.String("device", "", "virtio-serial device path (instead of finding the port by name)")
	tcpAddr := fs.String("tcp", "", "actuator address for the tcp transport (host:port)")
	vsockPort := fs.Uint("vsock-port", 0, "actuator vsock port")
	interval := fs.Duration("interval", 0, "sampling interval (the actuator may change it)")
	noAutoOnline := fs.Bool("no-auto-online", false, "do not online hot-added CPUs on our own")
	logLevel := fs.String("log-level", "", "trace, debug, info, warn, error")
	if cmdline.WantsHelp(args) {
		cmdline.ShowUsage(fs, stdout)
		return 0
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		// Positional arguments used to be ignored, so a mistyped command
		// started the daemon.
		fmt.Fprintf(stderr, "hotplug-agent: unknown command or stray argument %q (commands: check, status, logstat, help)\n", fs.Arg(0))
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, "hotplug-agent", version)
		return 0
	}

	cfg := defaults()
	if b, err := os.ReadFile(*configPath); err == nil {
		md, err := toml.Decode(string(b), &cfg)
		if err != nil {
			fmt.Fprintf(stderr, "hotplug-agent: config %s: %v\n", *configPath, err)
			return 2
		}
		if u := md.Undecoded(); len(u) > 0 {
			fmt.Fprintf(stderr, "hotplug-agent: config %s: unknown key %q\n", *configPath, u[0].String())
			return 2
		}
	} else if !errors.Is(err, os.ErrNotExist) || *configPath != defaultConfig {
		fmt.Fprintf(stderr, "hotplug-agent: config: %v\n", err)
		return 2
	}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&cfg.Transport, *transportFlag)
	set(&cfg.Port, *port)
	set(&cfg.Device, *device)
	set(&cfg.TCPAddress, *tcpAddr)
	set(&cfg.LogLevel, *logLevel)
	if *vsockPort != 0 {
		cfg.VsockPort = uint32(*vsockPort)
	}
	if *interval != 0 {
		cfg.Interval.Duration = *interval
	}
	if *noAutoOnline {
		off := false
		cfg.AutoOnline = &off
	}

	level := hclog.LevelFromString(cfg.LogLevel)
	if level == hclog.NoLevel {
		fmt.Fprintf(stderr, "hotplug-agent: log_level: must be trace, debug, info, warn or error, got %q\n", cfg.LogLevel)
		return 2
	}
	runqMode, err := runq.ParseMode(cfg.RunQSource)
	if err != nil {
		fmt.Fprintf(stderr, "hotplug-agent: runq_source: %v\n", err)
		return 2
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "hotplug-agent", Level: level, Output: stderr,
		JSONFormat: cfg.LogFormat == "json", DisableTime: os.Getenv("JOURNAL_STREAM") != ""})

	var dialer transport.Dialer
	switch cfg.Transport {
	case "virtio-serial":
		dialer = &transport.VirtioSerial{Name: cfg.Port, Path: cfg.Device}
	case "vsock":
		dialer = &transport.Vsock{CID: cfg.VsockCID, Port: cfg.VsockPort}
	case "virtualbox-guestprops":
		dialer = &transport.VBoxProps{VBoxControl: cfg.VBoxControl}
	case "tcp":
		if cfg.TCPAddress == "" {
			fmt.Fprintln(stderr, "hotplug-agent: tcp_address: required for the tcp transport (or --tcp host:port)")
			return 2
		}
		dialer = &transport.TCP{Addr: cfg.TCPAddress}
	default:
		fmt.Fprintf(stderr, "hotplug-agent: transport: must be virtio-serial, vsock, tcp or virtualbox-guestprops, got %q\n", cfg.Transport)
		return 2
	}

	apps, err := loadAppLogs(cfg.AppsDir, cfg.StateDir, logger)
	if err != nil {
		fmt.Fprintf(stderr, "hotplug-agent: %v\n", err)
		return 2
	}
	if checkOnly {
		if cfg.Interval.Duration < proto.MinInterval || cfg.Interval.Duration > proto.MaxInterval {
			fmt.Fprintf(stderr, "hotplug-agent: interval: must be between %v and %v, got %v\n", proto.MinInterval, proto.MaxInterval, cfg.Interval.Duration)
			return 2
		}
		fmt.Fprintf(stdout, "%s: OK (transport %s, %d application log(s))\n", *configPath, dialer.String(), apps.Len())
		return 0
	}
	extras := []collector.Source{apps}
	if rq := openRunQ(runqMode, cfg.ProcRoot, cfg.SysRoot, logger); rq != nil {
		defer rq.Close()
		extras = append(extras, rq)
	}
	a, err := agent.New(agent.Config{
		Interval: cfg.Interval.Duration, AutoOnline: *cfg.AutoOnline, OnlineTimeout: cfg.OnlineTimeout.Duration,
		QueueSize: cfg.QueueSize, Version: version,
		Collector: collector.Options{ProcRoot: cfg.ProcRoot, SysRoot: cfg.SysRoot, Extra: extras},
		Apps:      apps.Names(), StatusFile: agent.NewStatusWriter(cfg.StatusFile),
	}, dialer, logger)
	if err != nil {
		fmt.Fprintf(stderr, "hotplug-agent: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	logger.Info("starting", "version", version, "transport", dialer.String(), "interval", cfg.Interval.Duration,
		"auto_online", *cfg.AutoOnline)
	appsDone := make(chan error, 1)
	go func() { appsDone <- apps.Run(ctx) }()
	a.Run(ctx)
	if err := <-appsDone; err != nil {
		logger.Warn("application logs", "error", err)
	}
	logger.Info("stopped")
	return 0
}

// openRunQ opens the run-queue latency source and says once which one and
// why. It never stops the agent: without a source, reports carry no
// RunQueue and the host sizes on utilisation and schedstat alone.
func openRunQ(mode runq.Mode, procRoot, sysRoot string, logger hclog.Logger) *runq.Source {
	rq, err := runq.New(runq.Options{Mode: mode, ProcRoot: procRoot, SysRoot: sysRoot})
	switch {
	case err == nil && len(rq.Choice().Skipped) == 0:
		logger.Info("run-queue latency source", "source", rq.Choice().Source, "why", rq.Choice().String())
	case err == nil:
		logger.Warn("run-queue latency source (fallback)", "source", rq.Choice().Source, "why", rq.Choice().String())
	case mode == runq.ModeOff:
		logger.Info("run-queue latency not measured (runq_source = \"off\")")
	default:
		logger.Warn("run-queue latency not measured", "why", err)
	}
	return rq
}
