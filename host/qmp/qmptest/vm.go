package qmptest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
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
	// vcpusCreated counts every vCPU QEMU has created, boot CPUs
	// included: under TCG each took a context it never gives back.
	vcpusCreated int
}

// levels are x86's topology levels in QEMU 10.0, outermost first: the
// order of the APIC id's bit fields and of QEMU's checks.
var levels = [nLevels]string{"socket-id", "die-id", "module-id", "core-id", "thread-id"}

const (
	lSocket = iota
	lDie
	lModule
	lCore
	lThread
	nLevels
)

// slot is one possible CPU.
type slot struct {
	index           int // QEMU's cpu-index
	topo            [nLevels]int
	apicID          int
	plugged         bool
	qomPath         string
	id              string // device id, "" for -smp CPUs and anonymous ones
	threadID        int
	unplugRequested bool
	unplugScheduled bool
}

// machineType is what QEMU 10.0 names -machine pc's QOM type.
const machineType = "pc-i440fx-10.0-machine"

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
	switch cfg.Accel {
	case "":
		cfg.Accel = "tcg"
	case "tcg", "kvm":
	default:
		return nil, fmt.Errorf("qmptest: Accel %q: want \"tcg\" or \"kvm\"", cfg.Accel)
	}
	if cfg.Sockets == 0 && cfg.Dies == 0 && cfg.Modules == 0 && cfg.Cores == 0 && cfg.Threads == 0 {
		if cfg.MaxCPUs == 0 {
			cfg.MaxCPUs = 4
		}
		cfg.Sockets, cfg.Dies, cfg.Modules, cfg.Cores, cfg.Threads = 1, 1, 1, cfg.MaxCPUs, 1
	}
	for _, p := range []*int{&cfg.Sockets, &cfg.Dies, &cfg.Modules, &cfg.Cores, &cfg.Threads} {
		if *p == 0 {
			*p = 1
		}
	}
	n := cfg.Sockets * cfg.Dies * cfg.Modules * cfg.Cores * cfg.Threads
	if cfg.MaxCPUs == 0 {
		cfg.MaxCPUs = n
	}
	if n != cfg.MaxCPUs || n < 1 {
		return nil, fmt.Errorf("qmptest: topology %d sockets × %d dies × %d modules × %d cores × %d threads = %d CPUs, MaxCPUs says %d",
			cfg.Sockets, cfg.Dies, cfg.Modules, cfg.Cores, cfg.Threads, n, cfg.MaxCPUs)
	}
	if cfg.BootCPUs < 1 || cfg.BootCPUs > cfg.MaxCPUs {
		return nil, fmt.Errorf("qmptest: BootCPUs %d not in 1..%d", cfg.BootCPUs, cfg.MaxCPUs)
	}
	v := &vm{cfg: cfg, legacy: cfg.LegacyCPUHotplug, nextThread: 7001}
	// Counting through the levels, innermost fastest, gives ascending
	// APIC ids, the order of QEMU's possible_cpus.
	for i := 0; i < n; i++ {
		var topo [nLevels]int
		rest := i
		for l := nLevels - 1; l >= 0; l-- {
			topo[l] = rest % v.count(l)
			rest /= v.count(l)
		}
		v.slots = append(v.slots, &slot{index: i, topo: topo, apicID: v.apicID(topo)})
	}
	for i := 0; i < cfg.BootCPUs; i++ {
		sl := v.slots[i]
		// -machine pc: the first CPU is device[0], then kvmvapic, then
		// the remaining -smp CPUs from device[2] on.
		n := i
		if i > 0 {
			n = i + 1
		}
		v.plug(sl, fmt.Sprintf("/machine/unattached/device[%d]", n), "")
	}
	return v, nil
}

// count is how many of a level's units there are in the next one out.
func (v *vm) count(level int) int {
	return [nLevels]int{v.cfg.Sockets, v.cfg.Dies, v.cfg.Modules, v.cfg.Cores, v.cfg.Threads}[level]
}

// width is how many APIC id bits a level takes (include/hw/i386/
// topology.h): what its count needs; sockets take the rest.
func (v *vm) width(level int) int {
	n := v.count(level)
	if n <= 1 {
		return 0
	}
	return bits.Len(uint(n - 1))
}

// apicID follows QEMU's x86_apicid_from_topo_ids.
func (v *vm) apicID(topo [nLevels]int) int {
	id := topo[lSocket]
	for l := lDie; l < nLevels; l++ {
		id = id<<v.width(l) | topo[l]
	}
	return id
}

// topoOf follows QEMU's x86_topo_ids_from_apicid: each level's bits, the
// socket taking all that is left.
func (v *vm) topoOf(apicID uint32) [nLevels]int {
	var topo [nLevels]int
	for l := nLevels - 1; l > lSocket; l-- {
		w := v.width(l)
		topo[l] = int(apicID & (1<<w - 1))
		apicID >>= w
	}
	topo[lSocket] = int(apicID)
	return topo
}

func (v *vm) plug(sl *slot, qomPath, id string) {
	sl.plugged = true
	sl.qomPath = qomPath
	sl.id = id
	sl.threadID = v.nextThread
	sl.unplugRequested = false
	sl.unplugScheduled = false
	v.nextThread++
	v.vcpusCreated++
	v.created = append(v.created, sl)
}

func (v *vm) unplug(sl *slot) {
	sl.plugged = false
	sl.qomPath, sl.id = "", ""
	sl.threadID = 0
	sl.unplugRequested, sl.unplugScheduled = false, false
	for i, x := range v.created {
		if x == sl {
			v.created = append(v.created[:i], v.created[i+1:]...)
			break
		}
	}
}

// southbridgePath is the PIIX3 device. QEMU 10.0 -machine pc -nodefaults
// creates, under /machine/unattached, the -smp CPUs and kvmvapic
// (device[0] to device[N]), then i440FX, then PIIX3.
func (v *vm) southbridgePath() string {
	return fmt.Sprintf("/machine/unattached/device[%d]", v.cfg.BootCPUs+2)
}

// pmPath is the PIIX4_PM device: in QEMU 10.0 a child of PIIX3 (in 7.2 it
// was /machine/unattached/device[17+N]).
func (v *vm) pmPath() string { return v.southbridgePath() + "/pm" }

// qomObject is one object of the fake's QOM tree.
type qomObject struct{ path, typ string }

// qomObjects is the fake's QOM tree, parents before children: the
// containers, the -smp and hot-plugged CPUs with their lapic, PIIX3 and its
// PIIX4_PM. Real QEMU has hundreds more objects (fw_cfg, i440fx, IRQs,
// memory regions, ...); to the fake they do not exist.
func (v *vm) qomObjects() []qomObject {
	objs := []qomObject{
		{"/machine", machineType},
		{"/machine/unattached", "container"},
		{"/machine/peripheral", "container"},
		{"/machine/peripheral-anon", "container"},
		{v.southbridgePath(), "PIIX3"},
		{v.pmPath(), pmType},
	}
	for _, sl := range v.created {
		objs = append(objs, qomObject{sl.qomPath, v.cfg.CPUType}, qomObject{sl.qomPath + "/lapic", "apic"})
	}
	return objs
}

// qomType is the type of the object at path, "" when the fake has none.
func (v *vm) qomType(path string) string {
	for _, o := range v.qomObjects() {
		if o.path == path {
			return o.typ
		}
	}
	return ""
}

// props is CpuInstanceProperties as QEMU 10.0 prints it for x86: die-id
// and module-id only when there is more than one die or module.
type props struct {
	CoreID   int  `json:"core-id"`
	ThreadID int  `json:"thread-id"`
	DieID    *int `json:"die-id,omitempty"`
	SocketID int  `json:"socket-id"`
	ModuleID *int `json:"module-id,omitempty"`
}

func (v *vm) props(sl *slot) props {
	p := props{CoreID: sl.topo[lCore], ThreadID: sl.topo[lThread], SocketID: sl.topo[lSocket]}
	if v.cfg.Dies > 1 {
		d := sl.topo[lDie]
		p.DieID = &d
	}
	if v.cfg.Modules > 1 {
		m := sl.topo[lModule]
		p.ModuleID = &m
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
	if ret, e, ok := s.memoryCommandLocked(cmd, args); ok {
		return ret, e
	}
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
	case "query-kvm":
		if e := noArgs(args); e != nil {
			return nil, e
		}
		return map[string]any{"enabled": v.cfg.Accel == "kvm", "present": true}, nil
	case "query-status":
		if e := noArgs(args); e != nil {
			return nil, e
		}
		// QEMU 7.2 also had "singlestep": false; 10.0 dropped it.
		return map[string]any{"status": "running", "running": true}, nil
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
// fake models, with their QOM types. Real CPUs have hundreds more (feature
// flags); qmptest reports those as unknown.
var cpuProps = map[string]string{
	"socket-id": "int32", "die-id": "int32", "module-id": "int32", "core-id": "int32", "thread-id": "int32",
	"node-id": "int32", "apic-id": "uint32",
}

// unassignedAPICID is QEMU's UNASSIGNED_APIC_ID, apic-id's default.
const unassignedAPICID = 0xffffffff

// intLiteral returns raw's digits when it is a JSON number QEMU's parser
// keeps as an integer: no fraction or exponent. Callers check the range.
func intLiteral(raw json.RawMessage) (string, bool) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if d.Decode(&v) != nil {
		return "", false
	}
	n, ok := v.(json.Number)
	if !ok || strings.ContainsAny(string(n), ".eE") {
		return "", false
	}
	return string(n), true
}

// int32Prop parses an int32 property the way QEMU 10.0's QObject input
// visitor does for device_add: strict JSON types (7.2 also took "3").
func int32Prop(name string, raw json.RawMessage) (int, *qmpError) {
	lit, ok := intLiteral(raw)
	n, err := strconv.ParseInt(lit, 10, 64)
	if !ok || err != nil {
		return 0, genericError("Invalid parameter type for '%s', expected: integer", name)
	}
	if n < math.MinInt32 || n > math.MaxInt32 {
		return 0, genericError("Parameter '%s' expects int32_t", name)
	}
	return int(n), nil
}

// uint32Prop parses a uint32 property like int32Prop; QEMU takes negative
// numbers as their two's complement, for backward compatibility.
func uint32Prop(name string, raw json.RawMessage) (uint32, *qmpError) {
	lit, ok := intLiteral(raw)
	if !ok {
		return 0, genericError("Parameter '%s' expects uint64", name)
	}
	u, err := strconv.ParseUint(lit, 10, 64)
	if err != nil {
		n, err := strconv.ParseInt(lit, 10, 64)
		if err != nil {
			return 0, genericError("Parameter '%s' expects uint64", name)
		}
		u = uint64(n)
	}
	if u > math.MaxUint32 {
		return 0, genericError("Parameter '%s' expects uint32_t", name)
	}
	return uint32(u), nil
}

// deviceAddLocked checks in QEMU 10.0's order: driver, id, properties, then
// x86_cpu_pre_plug's checks (type, topology ids or apic-id, occupied slot).
func (s *Server) deviceAddLocked(args map[string]json.RawMessage) (any, *qmpError) {
	v := s.vm
	var driver string
	if raw, ok := args["driver"]; !ok || json.Unmarshal(raw, &driver) != nil {
		return nil, genericError("Parameter 'driver' is missing")
	}
	isCPUModel := strings.HasSuffix(driver, "-x86_64-cpu")
	if !isCPUModel {
		// qmptest: every non-CPU device model is unknown here.
		return nil, genericError("'%s' is not a valid device model name", driver)
	}

	// QEMU takes the id with qdict_get_try_str: a non-string id is
	// silently ignored and the device becomes anonymous. 10.0 no longer
	// checks the id's syntax (7.2 said "Parameter 'id' expects an
	// identifier" for "9x" or "").
	var id string
	if raw, ok := args["id"]; ok {
		var sid string
		if json.Unmarshal(raw, &sid) == nil {
			if sid == "" || strings.Contains(sid, "/") {
				return nil, genericError("qmptest: device id %q is not modelled; QEMU 10.0.2 takes it and names the CPU /machine/peripheral/%s", sid, sid)
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

	// Unset ids are -1, an unset apic-id is UNASSIGNED_APIC_ID.
	vals := map[string]int{"socket-id": -1, "die-id": -1, "module-id": -1, "core-id": -1, "thread-id": -1}
	var apicID uint32 = unassignedAPICID
	for _, k := range sortedKeys(args) {
		if k == "driver" || k == "id" {
			continue
		}
		switch cpuProps[k] {
		case "int32":
			n, e := int32Prop(k, args[k])
			if e != nil {
				return nil, e
			}
			vals[k] = n
		case "uint32":
			n, e := uint32Prop(k, args[k])
			if e != nil {
				return nil, e
			}
			apicID = n
		default:
			return nil, genericError("Property '%s.%s' not found", driver, k)
		}
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
	if apicID == unassignedAPICID {
		// die-id and module-id may be left out when there is one.
		if vals["die-id"] < 0 && v.cfg.Dies == 1 {
			vals["die-id"] = 0
		}
		if vals["module-id"] < 0 && v.cfg.Modules == 1 {
			vals["module-id"] = 0
		}
		var topo [nLevels]int
		for l, name := range levels {
			n := vals[name]
			if n < 0 {
				return nil, genericError("CPU %s is not set", name)
			}
			if n > v.count(l)-1 {
				return nil, genericError("Invalid CPU %s: %d must be in range 0:%d", name, n, v.count(l)-1)
			}
			topo[l] = n
		}
		apicID = uint32(v.apicID(topo))
	}
	var sl *slot
	for _, x := range v.slots {
		if uint32(x.apicID) == apicID {
			sl = x
		}
	}
	if sl == nil {
		t := v.topoOf(apicID)
		return nil, genericError("Invalid CPU [socket: %d, die: %d, module: %d, core: %d, thread: %d] with APIC ID %d, valid index range 0:%d",
			t[lSocket], t[lDie], t[lModule], t[lCore], t[lThread], apicID, len(v.slots)-1)
	}
	if sl.plugged {
		return nil, genericError("CPU[%d] with APIC ID %d exists", sl.index, sl.apicID)
	}
	for l, name := range levels {
		if n := vals[name]; n != -1 && n != sl.topo[l] {
			return nil, genericError("property %s: %d doesn't match set apic-id: 0x%x (%s: %d)", name, uint32(n), apicID, name, sl.topo[l])
		}
	}
	if v.cfg.Accel == "tcg" && v.vcpusCreated >= v.cfg.MaxCPUs {
		// QEMU 10.0.2 aborts starting the vCPU thread, before it
		// replies: "tcg_register_thread: assertion failed: (n <
		// tcg_max_ctxs)".
		return crashCommand, nil
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

// findDevice resolves device_del's id as QEMU 10.0's find_device_state
// does: a QOM path when it starts with '/', else a device id under
// /machine/peripheral. It returns the CPU, or the error for an object that
// is no CPU.
func (v *vm) findDevice(id string) (*slot, *qmpError) {
	path := id
	if !strings.HasPrefix(id, "/") {
		path = "/machine/peripheral/" + id
	}
	switch typ := v.qomType(path); typ {
	case "":
		return nil, deviceNotFound(id)
	case "container", machineType:
		return nil, genericError("%s is not a device", id)
	case "PIIX3", pmType:
		return nil, genericError("Device '%s' does not support hotplugging", typ)
	case "apic":
		return nil, genericError("Device 'apic' can not be hotplugged on this machine")
	}
	for _, sl := range v.created {
		if sl.qomPath == path {
			return sl, nil
		}
	}
	panic("qmptest: QOM tree lists a CPU that is not plugged: " + path)
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
	sl, e := v.findDevice(id)
	if e != nil {
		return nil, e
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

// ejectLocked is the guest finishing an unplug, with the events QEMU 10.0.2
// (like 7.2) sent under TCG for a Linux 6.1 guest: _OST "eject in progress"
// naming the device, DEVICE_DELETED for the CPU's lapic child only (no
// "device" member), then _OST success without the device, which is gone by
// then. Under KVM a DEVICE_DELETED for the CPU itself follows the lapic's.
// With NoGuest the eject is a test writing the eject register (what
// QEMU.EjectCPU does on real QEMU): no guest runs _OST, so only the
// DEVICE_DELETED events come.
func (s *Server) ejectLocked(sl *slot) {
	id, path, index := sl.id, sl.qomPath, sl.index
	guest := !s.vm.cfg.NoGuest
	if guest {
		s.emitLocked("ACPI_DEVICE_OST", ostInfo(id, 3, 132, index))
	}
	s.vm.unplug(sl)
	s.emitLocked("DEVICE_DELETED", deviceDeleted{Path: path + "/lapic"})
	if s.vm.cfg.Accel == "kvm" {
		s.emitLocked("DEVICE_DELETED", deviceDeleted{Device: id, Path: path})
	}
	if guest {
		s.emitLocked("ACPI_DEVICE_OST", ostInfo("", 3, 0, index))
	}
}

// deviceDeleted is DEVICE_DELETED's data; "device" is absent for a device
// without an id.
type deviceDeleted struct {
	Device string `json:"device,omitempty"`
	Path   string `json:"path"`
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
	if ret, ok := s.memQOMGetLocked(path, prop); ok {
		return ret, nil
	}
	typ := v.qomType(path)
	switch {
	case typ == "":
		return nil, deviceNotFound(path)
	case prop == "type":
		return typ, nil
	case path == v.pmPath() && prop == "cpu-hotplug-legacy":
		return v.legacy, nil
	case typ == v.cfg.CPUType && prop == "apic-id":
		for _, sl := range v.created {
			if sl.qomPath == path {
				return sl.apicID, nil
			}
		}
	}
	// qmptest: real objects have many more properties; to the fake
	// they do not exist.
	return nil, genericError("Property '%s.%s' not found", typ, prop)
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
	if ret, e, ok := s.memQOMSetLocked(path, prop, raw); ok {
		return ret, e
	}
	if v.qomType(path) == "" {
		return nil, deviceNotFound(path)
	}
	if path != v.pmPath() || prop != "cpu-hotplug-legacy" {
		return nil, genericError("qmptest: qom-set is only modelled for %s cpu-hotplug-legacy", v.pmPath())
	}
	var legacy bool
	if err := json.Unmarshal(raw, &legacy); err != nil {
		return nil, genericError("Invalid parameter type for 'cpu-hotplug-legacy', expected: boolean")
	}
	if legacy {
		// QEMU asserts !value in piix4_set_cpu_hotplug_legacy and
		// aborts before replying, closing every monitor.
		return crashCommand, nil
	}
	v.legacy = false
	return struct{}{}, nil
}

// qomListLocked lists an object of the fake's QOM tree (see qomObjects):
// "type", the children the fake models, and the properties it can get.
// QEMU's order is its hash table's; the fake's is fixed.
func (s *Server) qomListLocked(args map[string]json.RawMessage) (any, *qmpError) {
	v := s.vm
	path, e := stringArg(args, "path")
	if e != nil {
		return nil, e
	}
	if e := onlyArgs(args, "path"); e != nil {
		return nil, e
	}
	typ := v.qomType(path)
	if typ == "" {
		return nil, deviceNotFound(path)
	}
	out := []qomEntry{{"type", "string"}}
	switch {
	case path == v.pmPath():
		out = append(out, qomEntry{"cpu-hotplug-legacy", "bool"})
	case typ == v.cfg.CPUType:
		out = append(out, qomEntry{"apic-id", "uint32"})
	}
	for _, o := range v.qomObjects() {
		if parent, name, ok := cutLast(o.path); ok && parent == path {
			out = append(out, qomEntry{name, "child<" + o.typ + ">"})
		}
	}
	return out, nil
}

// cutLast splits a QOM path at its last '/'.
func cutLast(path string) (parent, name string, ok bool) {
	i := strings.LastIndexByte(path, '/')
	if i <= 0 {
		return "", "", false
	}
	return path[:i], path[i+1:], true
}
