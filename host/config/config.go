// Package config reads and checks the actuator's TOML configuration.
//
// Every problem is reported with the path of the offending key
// (`vm[1].policy.k: must be in [1, n=5], got 9`) and the actuator refuses to
// start on any of them, unknown keys included: a typo in a policy must not
// silently fall back to a default. The package only reads; it opens no
// sockets.
package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/hotplugheaven/hotplug/host/engine"
	"github.com/hotplugheaven/hotplug/host/memory"
)

// Config is the whole file.
type Config struct {
	// EventLog is the path of the JSON-lines event log.
	EventLog string `toml:"event_log"`
	// HostVCPUBudget caps the sum of vCPUs over all VMs; 0 means no cap.
	HostVCPUBudget int `toml:"host_vcpu_budget"`
	// HostMemoryBudget caps the memory of all memory-sized VMs together,
	// e.g. "24GiB"; 0 means no cap.
	HostMemoryBudget memory.Size `toml:"host_memory_budget"`
	// HostMemoryReserve turns the host-pressure override on: when the
	// host's MemAvailable falls under it, memory-sized VMs give memory back
	// (lowest memory.priority first) and none grows. 0 means off.
	HostMemoryReserve memory.Size `toml:"host_memory_reserve"`
	// LogLevel: trace, debug, info, warn, error.
	LogLevel string `toml:"log_level"`
	// Defaults apply to every VM's policy before its own policy table.
	Defaults engine.Policy `toml:"defaults"`
	VMs      []VM          `toml:"vm"`
	// API is where the HTTP API is served (api.go).
	API API `toml:"api"`
}

// VM is one managed virtual machine.
type VM struct {
	Name string `toml:"name"`
	// Hypervisor selects the backend: qemu (default), libvirt or
	// virtualbox.
	Hypervisor string `toml:"hypervisor"`
	// QMP is the path of the VM's QMP unix socket (qemu).
	QMP string `toml:"qmp"`
	// libvirt: the domain (default: the VM's name), libvirtd's socket and
	// URI, and whether to trust libvirt's own vCPU view instead of QEMU's
	// (read through libvirt's monitor passthrough).
	LibvirtDomain   string `toml:"libvirt_domain"`
	LibvirtSocket   string `toml:"libvirt_socket"`
	LibvirtURI      string `toml:"libvirt_uri"`
	LibvirtViewOnly bool   `toml:"libvirt_view_only"`
	// virtualbox: the VM (default: the VM's name) and the VBoxManage
	// program.
	VirtualBoxVM string `toml:"virtualbox_vm"`
	VBoxManage   string `toml:"vboxmanage"`
	// UnplugTimeout bounds the wait for the guest to eject a CPU.
	UnplugTimeout engine.Duration `toml:"unplug_timeout"`
	// CommandTimeout bounds the wait for the agent to answer a command.
	CommandTimeout engine.Duration `toml:"command_timeout"`
	// BlackBox measures and scales the VM from the host when no agent has
	// been connected for AgentTimeout (default true, 60 s). The guest must
	// then online hot-added CPUs itself (udev rule).
	BlackBox     *bool           `toml:"black_box"`
	AgentTimeout engine.Duration `toml:"agent_timeout"`
	Channel      Channel         `toml:"channel"`
	Policy       engine.Policy   `toml:"policy"`
	// Memory is the VM's memory policy ([vm.memory]); off unless set.
	Memory memory.Policy `toml:"memory"`
}

// Channel is how the VM's agent reaches the actuator.
type Channel struct {
	// Type is virtio-serial, vsock, tcp or virtualbox-guestprops.
	Type string `toml:"type"`
	// PollWait and MaxValue tune the VirtualBox guest-property bridge:
	// the longest wait before the properties are read again anyway
	// (default 1 s), and the longest value written (default 1023; 127 for
	// VirtualBox 6.0 and older).
	PollWait engine.Duration `toml:"poll_wait"`
	MaxValue int             `toml:"max_value"`
	// Path of the unix socket of the virtio-serial chardev (virtio-serial).
	Path string `toml:"path"`
	// Listen address (tcp).
	Listen string `toml:"listen"`
	// CID and Port (vsock).
	CID  uint32 `toml:"cid"`
	Port uint32 `toml:"port"`
}

// Default values for optional keys.
const (
	DefaultEventLog       = "/var/lib/hotplug-actuator/events.jsonl"
	DefaultUnplugTimeout  = 30 * time.Second
	DefaultCommandTimeout = 30 * time.Second
	DefaultAgentTimeout   = 60 * time.Second
	DefaultVsockPort      = 7000
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Load reads and validates the file at path.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := Parse(string(b))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse reads and validates a configuration. Each VM's policy starts from
// engine.DefaultPolicy, overlaid by [defaults], overlaid by its own table.
func Parse(text string) (*Config, error) {
	// Policies are decoded in a second step, each onto its base, so that a
	// table sets only the keys it names.
	type fileVM struct {
		VM
		Policy toml.Primitive `toml:"policy"`
		Memory toml.Primitive `toml:"memory"`
	}
	var f struct {
		Config
		Defaults toml.Primitive `toml:"defaults"`
		VMs      []fileVM       `toml:"vm"`
	}
	md, err := toml.Decode(text, &f)
	if err != nil {
		return nil, err
	}
	cfg := f.Config
	cfg.Defaults = engine.DefaultPolicy()
	if err := md.PrimitiveDecode(f.Defaults, &cfg.Defaults); err != nil {
		return nil, fmt.Errorf("defaults: %w", err)
	}
	cfg.VMs = make([]VM, len(f.VMs))
	for i, fv := range f.VMs {
		cfg.VMs[i] = fv.VM
		cfg.VMs[i].Policy = cfg.Defaults
		cfg.VMs[i].Memory = memory.DefaultPolicy()
		if err := md.PrimitiveDecode(fv.Memory, &cfg.VMs[i].Memory); err != nil {
			return nil, fmt.Errorf("vm[%d].memory: %w", i, err)
		}
		if err := md.PrimitiveDecode(fv.Policy, &cfg.VMs[i].Policy); err != nil {
			return nil, fmt.Errorf("vm[%d].policy: %w", i, err)
		}
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		keys := make([]string, len(undecoded))
		for i, k := range undecoded {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("unknown key(s): %s (check the spelling against the documented keys)", strings.Join(keys, ", "))
	}
	cfg.applyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

func (c *Config) applyDefaults() {
	if c.EventLog == "" {
		c.EventLog = DefaultEventLog
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	c.API.applyDefaults()
	for i := range c.VMs {
		vm := &c.VMs[i]
		if vm.Hypervisor == "" {
			vm.Hypervisor = "qemu"
		}
		if vm.UnplugTimeout == 0 {
			vm.UnplugTimeout = engine.Duration(DefaultUnplugTimeout)
		}
		if vm.CommandTimeout == 0 {
			vm.CommandTimeout = engine.Duration(DefaultCommandTimeout)
		}
		if vm.BlackBox == nil {
			on := true
			vm.BlackBox = &on
		}
		if vm.AgentTimeout == 0 {
			vm.AgentTimeout = engine.Duration(DefaultAgentTimeout)
		}
		if vm.Channel.Type == "vsock" && vm.Channel.Port == 0 {
			vm.Channel.Port = DefaultVsockPort
		}
		if vm.LibvirtDomain == "" {
			vm.LibvirtDomain = vm.Name
		}
		if vm.VirtualBoxVM == "" {
			vm.VirtualBoxVM = vm.Name
		}
	}
}

// Validate checks the whole configuration and names the first bad field.
func (c *Config) Validate() error {
	var errs []error
	field := func(path, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, a...)))
	}
	if c.HostVCPUBudget < 0 {
		field("host_vcpu_budget", "must not be negative (0 means no cap), got %d", c.HostVCPUBudget)
	}
	switch c.LogLevel {
	case "trace", "debug", "info", "warn", "error":
	default:
		field("log_level", "must be trace, debug, info, warn or error, got %q", c.LogLevel)
	}
	if !filepath.IsAbs(c.EventLog) {
		field("event_log", "must be an absolute path, got %q", c.EventLog)
	}
	c.API.validate(field)
	if err := c.Defaults.Validate(); err != nil {
		field("defaults."+fieldOf(err), "%s", msgOf(err))
	}
	if len(c.VMs) == 0 {
		field("vm", "no VMs configured: add at least one [[vm]] table")
	}
	names := map[string]int{}
	sockets := map[string]string{}
	// socket checks a unix socket the actuator connects to: required, and
	// not shared with another key (two clients on one chardev or QMP
	// socket would steal each other's messages).
	socket := func(key, path, required string) {
		if path == "" {
			field(key, "%s", required)
		} else if other, dup := sockets[path]; dup {
			field(key, "socket %s is already used by %s", path, other)
		}
		sockets[path] = key
	}
	cids := map[uint32]int{}
	for i, vm := range c.VMs {
		p := fmt.Sprintf("vm[%d]", i)
		if !nameRE.MatchString(vm.Name) {
			field(p+".name", "must be 1-64 characters of letters, digits, '.', '_' or '-', got %q", vm.Name)
		} else if j, dup := names[vm.Name]; dup {
			field(p+".name", "%q is already used by vm[%d]", vm.Name, j)
		}
		names[vm.Name] = i
		switch vm.Hypervisor {
		case "qemu":
			socket(p+".qmp", vm.QMP, "required: path of the VM's QMP unix socket (-qmp unix:PATH,server=on,wait=off)")
		case "libvirt", "virtualbox":
			if vm.QMP != "" {
				field(p+".qmp", "only for hypervisor = \"qemu\"; %s VMs are reached through %s", vm.Hypervisor, vm.Hypervisor)
			}
		default:
			field(p+".hypervisor", "must be qemu, libvirt or virtualbox, got %q", vm.Hypervisor)
		}
		if vm.Channel.Type == "virtualbox-guestprops" && vm.Hypervisor != "virtualbox" {
			field(p+".channel.type", "virtualbox-guestprops needs hypervisor = \"virtualbox\"")
		}
		if vm.UnplugTimeout.D() < time.Second {
			field(p+".unplug_timeout", "must be at least 1s, got %v", vm.UnplugTimeout)
		}
		if vm.CommandTimeout.D() < time.Second {
			field(p+".command_timeout", "must be at least 1s, got %v", vm.CommandTimeout)
		}
		if vm.AgentTimeout.D() < time.Second {
			field(p+".agent_timeout", "must be at least 1s, got %v", vm.AgentTimeout)
		}
		ch := vm.Channel
		cp := p + ".channel"
		switch ch.Type {
		case "virtio-serial":
			socket(cp+".path", ch.Path, "required for virtio-serial: the unix socket of the port's chardev")
		case "tcp":
			if ch.Listen == "" {
				field(cp+".listen", "required for tcp: the address to listen on, e.g. 127.0.0.1:7001")
			}
		case "vsock":
			if ch.CID < 3 {
				field(cp+".cid", "required for vsock: the guest's context id (3 or more), got %d", ch.CID)
			} else if j, dup := cids[ch.CID]; dup {
				field(cp+".cid", "CID %d is already used by vm[%d]", ch.CID, j)
			}
			cids[ch.CID] = i
		case "virtualbox-guestprops":
			if ch.MaxValue < 0 || ch.MaxValue > 1023 {
				field(cp+".max_value", "must be in [0, 1023] (0: 1023), got %d", ch.MaxValue)
			}
		case "":
			field(cp+".type", "required: virtio-serial, vsock, tcp or virtualbox-guestprops")
		default:
			field(cp+".type", "must be virtio-serial, vsock, tcp or virtualbox-guestprops, got %q", ch.Type)
		}
		if err := vm.Policy.Validate(); err != nil {
			field(p+".policy."+fieldOf(err), "%s", msgOf(err))
		}
		if err := vm.Memory.Validate(); err != nil {
			for _, e := range unjoin(err) {
				errs = append(errs, fmt.Errorf("%s.%w", p, e))
			}
		}
		if (vm.Memory.Mode == memory.ModeProxmox || vm.Memory.Mode == memory.ModeMoM) && c.HostMemoryBudget == 0 {
			field(p+".memory.mode", "%q looks at the host's memory: it needs host_memory_budget", vm.Memory.Mode)
		}
		if vm.Memory.Mode != memory.ModeOff && vm.Hypervisor == "virtualbox" {
			field(p+".memory.mode", "VirtualBox memory is not resized yet (balloon control is unverified here): use \"off\"")
		}
	}
	return errors.Join(errs...)
}

// unjoin lists the errors errors.Join put together.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func fieldOf(err error) string {
	var fe *engine.FieldError
	if errors.As(err, &fe) {
		return fe.Field
	}
	return "?"
}

func msgOf(err error) string {
	var fe *engine.FieldError
	if errors.As(err, &fe) {
		return fe.Msg
	}
	return err.Error()
}
