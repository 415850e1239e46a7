package qmptest

import (
	"encoding/json"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
	"time"
)

// vm is the simulated machine. Every method runs under Server.mu.
type vm struct {
	cfg    Config
	slots  []*slot // QEMU's possible_cpus order: ascending APIC id
	legacy bool

	// created lists plugged slots in creation order, which is the order
	// of query-cpus-fast (QEMU walks its CPU list, appended on realize).
	created []*slot
	// anon numbers /machine/peripheral-anon/device[N] for device_add
	// without an id.
	anon       int
	nextThread int
}

// slot is one possible CPU.
type slot struct {
	index                     int // QEMU's cpu-index
	socket, die, core, thread int
	apicID                    int
	plugged                   bool
	qomPath                   string
	id                        string // device id, "" for -smp CPUs and anonymous ones
	threadID                  int
	unplugRequested           bool
	smp                       bool // created by -smp, not device_add
	unplugScheduled           bool
}

// machineType is what QEMU 7.2 names -machine pc's QOM type.
const machineType = "pc-i440fx-7.2-machine"

func newVM(cfg Config) (*vm, error) {
	if cfg.CPUType == "" {
		cfg.CPUType = "qemu64-x86_64-cpu"
	}
	if cfg.UnplugDelay == 0 {
		cfg.UnplugDelay = 20 * time.Millisecond
	}
	if cfg.BootCPUs == 0 {
		cfg.BootCPUs = 1
	}
	if cfg.NoGuest {
		cfg.LegacyCPUHotplug, cfg.GuestIgnoresUnplug = true, true
	}
	if cfg.Sockets == 0 && cfg.Dies == 0 && cfg.Cores == 0 && cfg.Threads == 0 {
		if cfg.MaxCPUs == 0 {
			cfg.MaxCPUs = 4
		}
		cfg.Sockets, cfg.Dies, cfg.Cores, cfg.Threads = 1, 1, cfg.MaxCPUs, 1
	}
	for _, p := range []*int{&cfg.Sockets, &cfg.Dies, &cfg.Cores, &cfg.Threads} {
		if *p == 0 {
			*p = 1
		}
	}
	n := cfg.Sockets * cfg.Dies * cfg.Cores * cfg.Threads
	if cfg.MaxCPUs == 0 {
		cfg.MaxCPUs = n
	}
	if n != cfg.MaxCPUs || n < 1 {
		return nil, fmt.Errorf("qmptest: topology %d sockets × %d dies × %d cores × %d threads = %d CPUs, MaxCPUs says %d",
			cfg.Sockets, cfg.Dies, cfg.Cores, cfg.Threads, n, cfg.MaxCPUs)
	}
	if cfg.BootCPUs < 1 || cfg.BootCPUs > cfg.MaxCPUs {
		return nil, fmt.Errorf("qmptest: BootCPUs %d not in 1..%d", cfg.BootCPUs, cfg.MaxCPUs)
	}
	v := &vm{cfg: cfg, legacy: cfg.LegacyCPUHotplug, nextThread: 7001}
	// Nested loops in (socket, die, core, thread) order give ascending
	// APIC ids, the order of QEMU's possible_cpus.
	for so := 0; so < cfg.Sockets; so++ {
		for d := 0; d < cfg.Dies; d++ {
			for c := 0; c < cfg.Cores; c++ {
				for t := 0; t < cfg.Threads; t++ {
					v.slots = append(v.slots, &slot{
						index: len(v.slots), socket: so, die: d, core: c, thread: t,
						apicID: v.apicID(so, d, c, t),
					})
				}
			}
		}
	}
	for i := 0; i < cfg.BootCPUs; i++ {
		sl := v.slots[i]
		// QEMU 7.2 -machine pc: the first CPU is device[0], then one other
		// device, then the remaining -smp CPUs from device[2] on.
		n := i
		if i > 0 {
			n = i + 1
		}
		v.plug(sl, fmt.Sprintf("/machine/unattached/device[%d]", n), "")
		sl.smp = true
	}
	return v, nil
}

// apicID follows QEMU 7.2's x86_apicid_from_topo_ids (include/hw/i386/
// topology.h): each level gets the bits its count needs.
func (v *vm) apicID(socket, die, core, thread int) int {
	width := func(n int) int {
		if n <= 1 {
			return 0
		}
		return bits.Len(uint(n - 1))
	}
	tw, cw, dw := width(v.cfg.Threads), width(v.cfg.Cores), width(v.cfg.Dies)
	return socket<<(dw+cw+tw) | die<<(cw+tw) | core<<tw | thread
}

func (v *vm) plug(sl *slot, qomPath, id string) {
	sl.plugged = true
	sl.qomPath = qomPath
	sl.id = id
	sl.threadID = v.nextThread
	sl.unplugRequested = false
	sl.unplugScheduled = false
	v.nextThread++
	v.created = append(v.created, sl)
}

func (v *vm) unplug(sl *slot) {
	sl.plugged = false
	sl.qomPath, sl.id = "", ""
	sl.threadID = 0
	sl.unplugRequested, sl.unplugScheduled = false, false
	sl.smp = false
	for i, x := range v.created {
		if x == sl {
			v.created = append(v.created[:i], v.created[i+1:]...)
			break
		}
	}
}

func (v *vm) pmPath() string {
	return fmt.Sprintf("/machine/unattached/device[%d]", 17+v.cfg.BootCPUs)
}

// props is CpuInstanceProperties as QEMU 7.2 prints it for x86: die-id
// only when there is more than one die.
type props struct {
	CoreID   int  `json:"core-id"`
	ThreadID int  `json:"thread-id"`
	DieID    *int `json:"die-id,omitempty"`
	SocketID int  `json:"socket-id"`
}

func (v *vm) props(sl *slot) props {
	p := props{CoreID: sl.core, ThreadID: sl.thread, SocketID: sl.socket}
	if v.cfg.Dies > 1 {
		d := sl.die
		p.DieID = &d
	}
	return p
}

// hotpluggableCPU is one entry of query-hotpluggable-cpus, members in
// QEMU's order.
type hotpluggableCPU struct {
	Props      props  `json:"props"`
	VCPUsCount int    `json:"vcpus-count"`
	QOMPath    string `json:"qom-path,omitempty"`
	Type       string `json:"type"`
}

// cpuInfoFast is one entry of query-cpus-fast.
type cpuInfoFast struct {
	ThreadID int    `json:"thread-id"`
	Props    props  `json:"props"`
	QOMPath  string `json:"qom-path"`
	CPUIndex int    `json:"cpu-index"`
	Target   string `json:"target"`
}

func genericError(format string, a ...any) *qmpError {
	return &qmpError{"GenericError", fmt.Sprintf(format, a...)}
}

func deviceNotFound(name string) *qmpError {
	return &qmpError{"DeviceNotFound", fmt.Sprintf("Device '%s' not found", name)}
}

// noArgs rejects arguments the way QEMU's generated unmarshallers do.
func noArgs(args map[string]json.RawMessage) *qmpError {
	for _, k := range sortedKeys(args) {
		return genericError("Parameter '%s' is unexpected", k)
	}
	return nil
}

// stringArg fetches a mandatory string parameter.
func stringArg(args map[string]json.RawMessage, name string) (string, *qmpError) {
	raw, ok := args[name]
	if !ok {
		return "", genericError("Parameter '%s' is missing", name)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", genericError("Invalid parameter type for '%s', expected: string", name)
	}
	return s, nil
}

// onlyArgs rejects members other than the named ones.
func onlyArgs(args map[string]json.RawMessage, names ...string) *qmpError {
	for _, k := range sortedKeys(args) {
		known := false
		for _, n := range names {
			known = known || k == n
		}
		if !known {
			return genericError("Parameter '%s' is unexpected", k)
		}
	}
	return nil
}

// dispatchLocked runs a negotiated command. ret == crashCommand asks the
// server to reply {} and then die.
func (s *Server) dispatchLocked(cmd string, args map[string]json.RawMessage) (any, *qmpError) {
	v := s.vm
	switch cmd {
	case "qmp_capabilities":
		return nil, &qmpError{"CommandNotFound", "Capabilities negotiation is already complete, command ignored"}
	case "query-hotpluggable-cpus":
		if e := noArgs(args); e != nil {
			return nil, e
		}
		out := make([]hotpluggableCPU, 0, len(v.slots))
		// QEMU builds the list by prepending, so the highest slot comes
		// first.
		for i := len(v.slots) - 1; i >= 0; i-- {
			sl := v.slots[i]
			e := hotpluggableCPU{Props: v.props(sl), VCPUsCount: 1, Type: v.cfg.CPUType}
			if sl.plugged {
				e.QOMPath = sl.qomPath
			}
			out = append(out, e)
		}
		return out, nil
	case "query-cpus-fast":
		if e := noArgs(args); e != nil {
			return nil, e
		}
		out := make([]cpuInfoFast, 0, len(v.created))
		for _, sl := range v.created {
			out = append(out, cpuInfoFast{
				ThreadID: sl.threadID, Props: v.props(sl), QOMPath: sl.qomPath,
				CPUIndex: sl.index, Target: "x86_64",
			})
		}
		return out, nil
	case "query-status":
		if e := noArgs(args); e != nil {
			return nil, e
		}
		return map[string]any{"status": "running", "singlestep": false, "running": true}, nil
	case "device_add":
		return s.deviceAddLocked(args)
	case "device_del":
		return s.deviceDelLocked(args)
	case "qom-get":
		return s.qomGetLocked(args)
	case "qom-set":
		return s.qomSetLocked(args)
	case "qom-list":
		return s.qomListLocked(args)
	}
	return nil, &qmpError{"CommandNotFound", fmt.Sprintf("The command %s has not been found", cmd)}
}

// cpuProps are the device properties device_add accepts for a CPU that this
// fake models. Real CPUs have hundreds more (feature flags); qmptest reports
// those as unknown.
var cpuProps = map[string]bool{
	"socket-id": true, "die-id": true, "core-id": true, "thread-id": true,
	"node-id": true, "apic-id": true,
}

// idWellFormed is QEMU's id_wellformed: a letter, then letters, digits,
// '-', '.', '_'.
func idWellFormed(id string) bool {
	if id == "" || !isLetter(id[0]) {
		return false
	}
	for i := 1; i < len(id); i++ {
		c := id[i]
		if !isLetter(c) && !(c >= '0' && c <= '9') && c != '-' && c != '.' && c != '_' {
			return false
		}
	}
	return true
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// intProp parses a property the way QEMU's keyval visitor does for device_add:
// a JSON integer or a string holding one.
func intProp(name string, raw json.RawMessage) (int, *qmpError) {
	var n int64
	if err := json.Unmarshal(raw, &n); err == nil {
		return int(n), nil
	}
	var str string
	if err := json.Unmarshal(raw, &str); err == nil {
		if n, err := strconv.ParseInt(str, 10, 32); err == nil {
			return int(n), nil
		}
	}
	return 0, genericError("Parameter '%s' expects integer", name)
}

// deviceAddLocked checks in QEMU 7.2's order: driver, id, properties, then
// the CPU pre-plug checks (type, topology ranges, occupied slot).
func (s *Server) deviceAddLocked(args map[string]json.RawMessage) (any, *qmpError) {
	v := s.vm
	rawDriver, ok := args["driver"]
	if !ok {
		return nil, genericError("Parameter 'driver' is missing")
	}
	var driver string
	if err := json.Unmarshal(rawDriver, &driver); err != nil {
		driver = strings.Trim(string(rawDriver), `"`)
	}
	isCPUModel := strings.HasSuffix(driver, "-x86_64-cpu")
	if !isCPUModel {
		// qmptest: every non-CPU device model is unknown here.
		return nil, genericError("'%s' is not a valid device model name", driver)
	}

	// QEMU takes the id with qdict_get_try_str: a non-string id is
	// silently ignored and the device becomes anonymous.
	var id string
	if raw, ok := args["id"]; ok {
		var sid string
		if json.Unmarshal(raw, &sid) == nil {
			if !idWellFormed(sid) {
				return nil, genericError("Parameter 'id' expects an identifier")
			}
			id = sid
		}
	}
	if id != "" {
		for _, sl := range v.slots {
			if sl.plugged && sl.id == id {
				return nil, genericError("Duplicate device ID '%s'", id)
			}
		}
	}

	vals := map[string]int{"socket-id": -1, "die-id": -1, "core-id": -1, "thread-id": -1, "apic-id": -1}
	for _, k := range sortedKeys(args) {
		if k == "driver" || k == "id" {
			continue
		}
		if !cpuProps[k] {
			return nil, genericError("Property '%s.%s' not found", driver, k)
		}
		n, e := intProp(k, args[k])
		if e != nil {
			return nil, e
		}
		vals[k] = n
	}

	// From here on QEMU has named the device, so an anonymous one uses
	// up a peripheral-anon number even if realize fails.
	qomPath := "/machine/peripheral/" + id
	if id == "" {
		qomPath = fmt.Sprintf("/machine/peripheral-anon/device[%d]", v.anon)
		v.anon++
	}

	if driver != v.cfg.CPUType {
		return nil, genericError("Invalid CPU type, expected cpu type: '%s'", v.cfg.CPUType)
	}
	cfg := v.cfg
	if vals["die-id"] < 0 && cfg.Dies == 1 {
		vals["die-id"] = 0
	}
	for _, lv := range []struct {
		name string
		max  int
	}{{"socket-id", cfg.Sockets}, {"die-id", cfg.Dies}, {"core-id", cfg.Cores}, {"thread-id", cfg.Threads}} {
		n := vals[lv.name]
		if n < 0 {
			return nil, genericError("CPU %s is not set", lv.name)
		}
		if n > lv.max-1 {
			return nil, genericError("Invalid CPU %s: %d must be in range 0:%d", lv.name, n, lv.max-1)
		}
	}
	want := v.apicID(vals["socket-id"], vals["die-id"], vals["core-id"], vals["thread-id"])
	if a := vals["apic-id"]; a >= 0 && a != want {
		// qmptest: QEMU derives topology ids from an explicit apic-id and
		// names the first mismatching one; we only check consistency.
		return nil, genericError("qmptest: apic-id 0x%x does not match the topology ids (APIC ID %d)", a, want)
	}
	var sl *slot
	for _, x := range v.slots {
		if x.apicID == want {
			sl = x
		}
	}
	if sl.plugged {
		return nil, genericError("CPU[%d] with APIC ID %d exists", sl.index, sl.apicID)
	}
	v.plug(sl, qomPath, id)
	if !v.legacy && !v.cfg.NoGuest {
		// The guest's ACPI handler acknowledges the insert (_OST).
		s.afterLocked(time.Millisecond, func() {
			s.emitLocked("ACPI_DEVICE_OST", ostInfo(id, 1, 0, sl.index))
		})
	}
	return struct{}{}, nil
}

// ostInfo is the data of ACPI_DEVICE_OST. source 1 is insert, 3 eject;
// status 0 success, 132 (0x84) eject in progress.
func ostInfo(device string, source, status, index int) any {
	type info struct {
		Device   string `json:"device,omitempty"`
		Source   int    `json:"source"`
		Status   int    `json:"status"`
		Slot     string `json:"slot"`
		SlotType string `json:"slot-type"`
	}
	return struct {
		Info info `json:"info"`
	}{info{device, source, status, strconv.Itoa(index), "CPU"}}
}

// findDevice resolves device_del's id: a QOM path when it starts with '/',
// else a device id under /machine/peripheral.
func (v *vm) findDevice(id string) *slot {
	for _, sl := range v.slots {
		if !sl.plugged {
			continue
		}
		if strings.HasPrefix(id, "/") && sl.qomPath == id || sl.id != "" && sl.id == id {
			return sl
		}
	}
	return nil
}

func (s *Server) deviceDelLocked(args map[string]json.RawMessage) (any, *qmpError) {
	v := s.vm
	id, e := stringArg(args, "id")
	if e != nil {
		return nil, e
	}
	if e := onlyArgs(args, "id"); e != nil {
		return nil, e
	}
	sl := v.findDevice(id)
	if sl == nil {
		if id == "/machine" {
			return nil, genericError("/machine is not a hotpluggable device")
		}
		return nil, deviceNotFound(id)
	}
	if sl.index == 0 {
		return nil, genericError("Boot CPU is unpluggable")
	}
	if v.legacy {
		return nil, genericError("acpi: device unplug request for not supported device type: %s", v.cfg.CPUType)
	}
	// QEMU re-sends the eject request on every device_del and answers {}.
	sl.unplugRequested = true
	if !v.cfg.GuestIgnoresUnplug && !v.cfg.NoGuest && !sl.unplugScheduled {
		sl.unplugScheduled = true
		s.afterLocked(v.cfg.UnplugDelay, func() {
			if sl.plugged && sl.unplugRequested && !s.vm.cfg.GuestIgnoresUnplug {
				s.ejectLocked(sl)
			} else {
				sl.unplugScheduled = false
			}
		})
	}
	return struct{}{}, nil
}

// ejectLocked is the guest finishing an unplug, with the events QEMU 7.2
// sent for a Linux 6.1 guest: _OST "eject in progress" naming the device,
// DEVICE_DELETED for the CPU's lapic child only (no "device" member), then
// _OST success without the device, which is gone by then.
func (s *Server) ejectLocked(sl *slot) {
	id, path, index := sl.id, sl.qomPath, sl.index
	s.emitLocked("ACPI_DEVICE_OST", ostInfo(id, 3, 132, index))
	s.vm.unplug(sl)
	s.emitLocked("DEVICE_DELETED", map[string]string{"path": path + "/lapic"})
	s.emitLocked("ACPI_DEVICE_OST", ostInfo("", 3, 0, index))
}

func (s *Server) qomGetLocked(args map[string]json.RawMessage) (any, *qmpError) {
	v := s.vm
	path, e := stringArg(args, "path")
	if e != nil {
		return nil, e
	}
	prop, e := stringArg(args, "property")
	if e != nil {
		return nil, e
	}
	if e := onlyArgs(args, "path", "property"); e != nil {
		return nil, e
	}
	switch path {
	case "/machine":
		return nil, genericError("Property '%s.%s' not found", machineType, prop)
	case v.pmPath():
		if prop == "cpu-hotplug-legacy" {
			return v.legacy, nil
		}
		return nil, genericError("Property 'PIIX4_PM.%s' not found", prop)
	}
	for _, sl := range v.slots {
		if sl.plugged && sl.qomPath == path {
			if prop == "apic-id" {
				return sl.apicID, nil
			}
			return nil, genericError("Property '%s.%s' not found", v.cfg.CPUType, prop)
		}
	}
	return nil, deviceNotFound(path)
}

func (s *Server) qomSetLocked(args map[string]json.RawMessage) (any, *qmpError) {
	v := s.vm
	path, e := stringArg(args, "path")
	if e != nil {
		return nil, e
	}
	prop, e := stringArg(args, "property")
	if e != nil {
		return nil, e
	}
	raw, ok := args["value"]
	if !ok {
		return nil, genericError("Parameter 'value' is missing")
	}
	if path != v.pmPath() || prop != "cpu-hotplug-legacy" {
		return nil, genericError("qmptest: qom-set is only modelled for %s cpu-hotplug-legacy", v.pmPath())
	}
	var legacy bool
	if err := json.Unmarshal(raw, &legacy); err != nil {
		return nil, genericError("Invalid parameter type for 'cpu-hotplug-legacy', expected: boolean")
	}
	if legacy {
		// QEMU 7.2 asserts !value in piix4_set_cpu_hotplug_legacy and
		// aborts, closing every monitor.
		return crashCommand, nil
	}
	v.legacy = false
	return struct{}{}, nil
}

// qomListLocked lists /machine/unattached partially: the -smp CPUs and the
// PIIX4_PM device, enough to find PMPath the way a test does on real QEMU.
func (s *Server) qomListLocked(args map[string]json.RawMessage) (any, *qmpError) {
	v := s.vm
	path, e := stringArg(args, "path")
	if e != nil {
		return nil, e
	}
	if path != "/machine/unattached" {
		return nil, genericError("qmptest: qom-list is only modelled for /machine/unattached")
	}
	type prop struct {
		Name string `json:"name"`
		Type string `json:"type"`
	}
	out := []prop{{"type", "string"}}
	for _, sl := range v.slots {
		if sl.plugged && sl.smp {
			out = append(out, prop{strings.TrimPrefix(sl.qomPath, "/machine/unattached/"), "child<" + v.cfg.CPUType + ">"})
		}
	}
	out = append(out, prop{strings.TrimPrefix(v.pmPath(), "/machine/unattached/"), "child<PIIX4_PM>"})
	return out, nil
}
