package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/hotplugheaven/hotplug/host/actuator"
	"github.com/hotplugheaven/hotplug/host/channel"
	"github.com/hotplugheaven/hotplug/host/config"
	"github.com/hotplugheaven/hotplug/host/eventlog"
	"github.com/hotplugheaven/hotplug/host/hypervisor"
)

func flags(name string, stderr io.Writer) (*flag.FlagSet, *string, *bool) {
	fs := flag.NewFlagSet("hotplug-actuator "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := fs.String("config", defaultConfig, "configuration file")
	ver := fs.Bool("version", false, "print the version and exit")
	return fs, cfg, ver
}

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs, path, _ := flags("check", stderr)
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintf(stderr, "hotplug-actuator: %v\n", err)
		return 2
	}
	fmt.Fprintf(stdout, "%s: OK, %d VM(s)\n", *path, len(cfg.VMs))
	return 0
}

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs, path, ver := flags("run", stderr)
	logFormat := fs.String("log-format", "text", "text or json")
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	if *ver {
		fmt.Fprintln(stdout, "hotplug-actuator", version)
		return 0
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintf(stderr, "hotplug-actuator: %v\n", err)
		return 2
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "hotplug-actuator", Level: hclog.LevelFromString(cfg.LogLevel),
		Output: stderr, JSONFormat: *logFormat == "json", DisableTime: os.Getenv("JOURNAL_STREAM") != ""})

	if err := os.MkdirAll(filepath.Dir(cfg.EventLog), 0o750); err != nil {
		fmt.Fprintf(stderr, "hotplug-actuator: event_log: %v\n", err)
		return 1
	}
	events, err := eventlog.Open(cfg.EventLog)
	if err != nil {
		fmt.Fprintf(stderr, "hotplug-actuator: %v\n", err)
		return 1
	}
	defer events.Close()
	if events.Repaired > 0 {
		logger.Warn("event log ended in a torn line (crash while writing?); cut it off", "path", cfg.EventLog, "bytes", events.Repaired)
	}

	apiL, err := openAPI(cfg.API, logger)
	if err != nil {
		fmt.Fprintf(stderr, "hotplug-actuator: %v\n", err)
		return 1
	}
	defer apiL.close()

	var hub *channel.VsockHub
	vms := make([]actuator.VMConfig, 0, len(cfg.VMs))
	for _, vm := range cfg.VMs {
		vmLog := logger.Named(vm.Name)
		var ch channel.Channel
		switch vm.Channel.Type {
		case "virtio-serial":
			ch = &channel.VirtioSerial{Path: vm.Channel.Path, Logger: vmLog}
		case "tcp":
			if ch, err = channel.ListenTCP(vm.Channel.Listen); err != nil {
				fmt.Fprintf(stderr, "hotplug-actuator: vm %s: %v\n", vm.Name, err)
				return 1
			}
		case "virtualbox-guestprops":
			ch = &channel.VBoxProps{VM: vm.VirtualBoxVM, VBoxManage: vm.VBoxManage, PollWait: vm.Channel.PollWait.D(),
				MaxValue: vm.Channel.MaxValue, Logger: vmLog}
		case "vsock":
			if hub == nil {
				if hub, err = channel.ListenVsock(vm.Channel.Port, logger); err != nil {
					fmt.Fprintf(stderr, "hotplug-actuator: vm %s: %v\n", vm.Name, err)
					return 1
				}
				defer hub.Close()
			}
			if ch, err = hub.Channel(vm.Channel.CID); err != nil {
				fmt.Fprintf(stderr, "hotplug-actuator: vm %s: %v\n", vm.Name, err)
				return 1
			}
		}
		var hyp hypervisor.Hypervisor
		switch vm.Hypervisor {
		case "libvirt":
			hyp = hypervisor.NewLibvirt(vm.LibvirtDomain, hypervisor.LibvirtOptions{Socket: vm.LibvirtSocket, URI: vm.LibvirtURI,
				UnplugTimeout: vm.UnplugTimeout.D(), LibvirtViewOnly: vm.LibvirtViewOnly, Logger: vmLog})
		case "virtualbox":
			hyp = hypervisor.NewVirtualBox(vm.VirtualBoxVM, hypervisor.VirtualBoxOptions{VBoxManage: vm.VBoxManage, Logger: vmLog})
		default:
			hyp = hypervisor.NewQEMU(vm.QMP, hypervisor.QEMUOptions{UnplugTimeout: vm.UnplugTimeout.D(), Logger: vmLog})
		}
		vms = append(vms, actuator.VMConfig{Name: vm.Name, Policy: vm.Policy, Hypervisor: hyp, Channel: ch,
			CommandTimeout: vm.CommandTimeout.D(), BlackBox: *vm.BlackBox, AgentTimeout: vm.AgentTimeout.D(), Memory: vm.Memory})
	}
	act, err := actuator.New(vms, events, cfg.HostVCPUBudget, logger, apiL.observers()...)
	if err != nil {
		fmt.Fprintf(stderr, "hotplug-actuator: %v\n", err)
		return 1
	}
	act.SetMemoryBudget(uint64(cfg.HostMemoryBudget))
	if cfg.HostMemoryReserve > 0 {
		hm, err := actuator.NewProcHostMemory("")
		if err != nil {
			fmt.Fprintf(stderr, "hotplug-actuator: host_memory_reserve: %v\n", err)
			return 1
		}
		act.SetHostMemoryReserve(hm, uint64(cfg.HostMemoryReserve), 10*time.Second)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	waitAPI, err := apiL.serve(ctx, act, cfg.EventLog, logger)
	if err != nil {
		fmt.Fprintf(stderr, "hotplug-actuator: %v\n", err)
		return 1
	}
	defer waitAPI()
	logger.Info("starting", "version", version, "config", *path, "vms", len(vms), "event_log", cfg.EventLog,
		"host_vcpu_budget", cfg.HostVCPUBudget, "host_memory_budget", cfg.HostMemoryBudget, "host_memory_reserve", cfg.HostMemoryReserve)
	act.Run(ctx)
	logger.Info("stopped")
	return 0
}
