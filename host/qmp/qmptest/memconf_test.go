package qmptest

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// memSession exercises a VM with a virtio-mem device and no guest: the
// device is asked for a size it never reaches (nobody plugs), and errors.
var memSession = []string{
	`{"execute": "qmp_capabilities"}`,
	`{"execute": "query-memory-size-summary"}`,
	`{"execute": "query-memory-devices"}`,
	`{"execute": "qom-get", "arguments": {"path": "/machine/peripheral/vm0", "property": "requested-size"}}`,
	`{"execute": "qom-get", "arguments": {"path": "/machine/peripheral/vm0", "property": "size"}}`,
	`{"execute": "qom-set", "arguments": {"path": "/machine/peripheral/vm0", "property": "requested-size", "value": 268435456}}`,
	`{"execute": "query-memory-devices"}`,
	`{"execute": "qom-set", "arguments": {"path": "/machine/peripheral/vm0", "property": "requested-size", "value": 12345}}`,
	`{"execute": "qom-set", "arguments": {"path": "/machine/peripheral/vm0", "property": "requested-size", "value": 1073741824}}`,
	`{"execute": "qom-set", "arguments": {"path": "/machine/peripheral/vm0", "property": "requested-size", "value": -1}}`,
	`{"execute": "qom-set", "arguments": {"path": "/machine/peripheral/vm0", "property": "requested-size", "value": "1G"}}`,
	`{"execute": "qom-set", "arguments": {"path": "/machine/peripheral/vm0", "property": "size", "value": 0}}`,
	`{"execute": "qom-set", "arguments": {"path": "/machine/peripheral/nosuch", "property": "requested-size", "value": 0}}`,
	`{"execute": "qom-set", "arguments": {"path": "/machine/peripheral/vm0", "property": "requested-size", "value": 0}}`,
	`{"execute": "query-memory-devices"}`,
	`{"execute": "query-balloon"}`,
}

// TestConformanceMemory runs memSession against a real QEMU with a
// virtio-mem device and no guest, and against the fake with the same
// device and no guest; then against QEMU and the fake without a device.
func TestConformanceMemory(t *testing.T) {
	t.Parallel()
	real := StartQEMUWith(t, "1", "size=128M,maxmem=1G",
		"-object", "memory-backend-ram,id=vmem0,size=512M,reserve=off",
		"-device", "virtio-mem-pci,id=vm0,memdev=vmem0,block-size=2M,requested-size=0")
	fake := Start(t, &Config{NoGuest: true, VirtioMem: &VirtioMem{}})
	compare(t, memSession, real, fake)

	plainSession := []string{`{"execute": "qmp_capabilities"}`, `{"execute": "query-memory-devices"}`,
		`{"execute": "query-balloon"}`, `{"execute": "query-memory-size-summary"}`}
	compare(t, plainSession, StartQEMU(t, "1"), Start(t, &Config{NoGuest: true}))
}

// With a guest, the fake's device reaches what is requested, announces it
// with MEMORY_DEVICE_SIZE_CHANGE, and a shrink stops at the unmovable part.
func TestVirtioMemGuest(t *testing.T) {
	fake := Start(t, &Config{VirtioMem: &VirtioMem{Guest: true, PlugDelay: time.Millisecond, Unmovable: 64 << 20}})
	c := dialRaw(t, fake.Path())
	defer c.close()
	c.exchange(`{"execute": "qmp_capabilities"}`)
	c.exchange(`{"execute": "qom-set", "arguments": {"path": "/machine/peripheral/vm0", "property": "requested-size", "value": 268435456}}`)
	time.Sleep(50 * time.Millisecond)
	c.exchange(`{"execute": "query-memory-devices"}`)
	c.exchange(`{"execute": "qom-set", "arguments": {"path": "/machine/peripheral/vm0", "property": "requested-size", "value": 0}}`)
	time.Sleep(50 * time.Millisecond)
	c.exchange(`{"execute": "qom-get", "arguments": {"path": "/machine/peripheral/vm0", "property": "size"}}`)
	b, _ := json.Marshal(c.out)
	got := string(b)
	for _, want := range []string{`"event":"MEMORY_DEVICE_SIZE_CHANGE"`, `"size":268435456`, `{"return":67108864}`} {
		if !strings.Contains(got, want) {
			t.Errorf("replies lack %s:\n%s", want, got)
		}
	}
}
