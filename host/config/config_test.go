package config

import (
	"strings"
	"testing"
	"time"

	"github.com/hotplugheaven/hotplug/host/memory"
)

const good = `
event_log = "/tmp/events.jsonl"
host_vcpu_budget = 16

[defaults]
max_vcpus = 4
interval = "1s"

[[vm]]
name = "web1"
qmp = "/run/web1.qmp"
[vm.channel]
type = "virtio-serial"
path = "/run/web1.agent"
[vm.policy]
max_vcpus = 8
k = 2

[[vm]]
name = "db1"
qmp = "/run/db1.qmp"
unplug_timeout = "1m"
[vm.channel]
type = "tcp"
listen = "127.0.0.1:7001"
`

func TestParseGood(t *testing.T) {
	cfg, err := Parse(good)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HostVCPUBudget != 16 || len(cfg.VMs) != 2 {
		t.Fatalf("%+v", cfg)
	}
	web, db := cfg.VMs[0], cfg.VMs[1]
	if web.Policy.MaxVCPUs != 8 || web.Policy.K != 2 || web.Policy.Interval.D() != time.Second {
		t.Errorf("web1 policy = %+v: want its own max and k over the defaults' interval", web.Policy)
	}
	if db.Policy.MaxVCPUs != 4 || db.Policy.K != 3 || db.Policy.N != 5 {
		t.Errorf("db1 policy = %+v: want defaults over built-in defaults", db.Policy)
	}
	vb := strings.Replace(good, `qmp = "/run/db1.qmp"`, "hypervisor = \"virtualbox\"", 1)
	vb = strings.Replace(vb, "type = \"tcp\"\nlisten = \"127.0.0.1:7001\"", "type = \"virtualbox-guestprops\"\nmax_value = 127", 1)
	if c, err := Parse(vb); err != nil || c.VMs[1].VirtualBoxVM != "db1" || c.VMs[1].Channel.MaxValue != 127 {
		t.Errorf("virtualbox VM: %v %+v", err, c)
	}
	lv := strings.Replace(good, `qmp = "/run/db1.qmp"`, "hypervisor = \"libvirt\"\nlibvirt_domain = \"db-prod\"", 1)
	if c, err := Parse(lv); err != nil || c.VMs[1].LibvirtDomain != "db-prod" {
		t.Errorf("libvirt VM: %v", err)
	}
	if _, err := Parse(strings.Replace(good, "k = 2", "k = 2\nmode = \"graybox\"", 1)); err != nil {
		t.Errorf("graybox mode refused: %v", err)
	}
	if db.UnplugTimeout.D() != time.Minute || web.UnplugTimeout.D() != DefaultUnplugTimeout || web.Hypervisor != "qemu" {
		t.Errorf("timeouts/hypervisor defaults wrong: %+v %+v", web, db)
	}
}

func TestParseErrorsNameTheField(t *testing.T) {
	tests := []struct {
		name, text, want string
	}{
		{"typo in a key", strings.Replace(good, "k = 2", "kk = 2", 1), "vm.policy.kk"},
		{"bad policy", strings.Replace(good, "k = 2", "k = 9", 1), "vm[0].policy.k: must be in [1, n=5]"},
		{"bad defaults", strings.Replace(good, `interval = "1s"`, `interval = "1ms"`, 1), "defaults.interval"},
		{"not a duration", strings.Replace(good, `interval = "1s"`, `interval = "soon"`, 1), "not a duration"},
		{"duplicate name", strings.Replace(good, `name = "db1"`, `name = "web1"`, 1), `vm[1].name: "web1" is already used by vm[0]`},
		{"missing qmp", strings.Replace(good, `qmp = "/run/db1.qmp"`, ``, 1), "vm[1].qmp: required"},
		{"shared socket", strings.Replace(good, `qmp = "/run/db1.qmp"`, `qmp = "/run/web1.qmp"`, 1), "vm[1].qmp: socket /run/web1.qmp is already used"},
		{"unknown channel", strings.Replace(good, `type = "tcp"`, `type = "carrier-pigeon"`, 1), "vm[1].channel.type"},
		{"vsock without cid", strings.Replace(good, `type = "tcp"`, `type = "vsock"`, 1), "vm[1].channel.cid"},
		{"relative log", strings.Replace(good, `/tmp/events.jsonl`, `events.jsonl`, 1), "event_log: must be an absolute path"},
		{"negative budget", strings.Replace(good, `16`, `-1`, 1), "host_vcpu_budget"},
		{"no VMs", "event_log = \"/tmp/x\"\n", "vm: no VMs configured"},
		{"bad name", strings.Replace(good, `name = "db1"`, `name = "../etc"`, 1), "vm[1].name"},
		{"short timeout", strings.Replace(good, `unplug_timeout = "1m"`, `unplug_timeout = "1ms"`, 1), "vm[1].unplug_timeout"},
		{"not toml", "[[vm]\n", "toml"},
		{"unknown hypervisor", strings.Replace(good, `qmp = "/run/db1.qmp"`, "hypervisor = \"xen\"", 1), `vm[1].hypervisor: must be qemu, libvirt or virtualbox`},
		{"qmp for libvirt", strings.Replace(good, `qmp = "/run/db1.qmp"`, "hypervisor = \"libvirt\"\nqmp = \"/x\"", 1), `vm[1].qmp: only for hypervisor = "qemu"`},
		{"guestprops without virtualbox", strings.Replace(good, `type = "tcp"`, `type = "virtualbox-guestprops"`, 1), `vm[1].channel.type: virtualbox-guestprops needs hypervisor = "virtualbox"`},
		{"unknown mode", strings.Replace(good, "k = 2", "k = 2\nmode = \"magic\"", 1), `vm[0].policy.mode: unknown mode "magic"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.text)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestMemoryPolicy(t *testing.T) {
	base := `
[[vm]]
name = "web"
qmp = "/run/web.qmp"
[vm.channel]
type = "tcp"
listen = "127.0.0.1:7001"
`
	cfg, err := Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	if m := cfg.VMs[0].Memory; m.Mode != memory.ModeOff || m.Block != memory.DefaultPolicy().Block {
		t.Fatalf("default memory policy: %+v", m)
	}
	cfg, err = Parse(base + `[vm.memory]
mode = "pressure"
min = "512MiB"
max = "4GiB"
quiet = "5m"
`)
	if err != nil {
		t.Fatal(err)
	}
	m := cfg.VMs[0].Memory
	if m.Mode != memory.ModePressure || m.Min != 512<<20 || m.Max != 4<<30 || m.Quiet != 5*time.Minute || m.Headroom != memory.DefaultPolicy().Headroom {
		t.Fatalf("memory policy: %+v", m)
	}
	for text, want := range map[string]string{
		"[vm.memory]\nmode = \"pressure\"\n":                             "vm[0].memory.max: must be set",
		"[vm.memory]\nmode = \"balloonish\"\n":                           "vm[0].memory.mode:",
		"[vm.memory]\nmode = \"pressure\"\nmax = \"4 lots\"\n":           "not a size",
		"[vm.memory]\nmode = \"pressure\"\nmax = \"1G\"\nmin = \"2G\"\n": "vm[0].memory.min: must not exceed",
		"[vm.memory]\nmodes = \"pressure\"\n":                            "unknown key",
	} {
		if _, err := Parse(base + text); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", text, err, want)
		}
	}
}
