// Package testvm boots throw-away QEMU guests for end-to-end tests and the
// demo: a Debian cloud kernel, a busybox initramfs built on the fly, CPU
// hot-plug slots, two QMP sockets and two virtio-serial ports.
//
// The pieces, in the order a test uses them:
//
//   - EnsureKernel fetches Debian's linux-image-cloud-amd64 with apt-get
//     download and unpacks it into the cache (build/cache by default), so
//     later runs work offline.
//   - BuildInitramfs writes a gzip'd newc cpio holding static busybox, the
//     virtio modules (plus any the caller asks for), an /init script and the
//     caller's files. Images are cached by content hash.
//   - Start runs qemu-system-x86_64. The guest's /init loads the virtio
//     modules, runs /etc/testvm/start.sh in the background if present, and
//     serves a control shell on the virtio-serial port
//     "org.hotplugheaven.test". VM.Run executes commands through it.
//   - VM.Stop quits QEMU over QMP, kills it if it lingers, and always reaps
//     it. QEMU also dies with the test binary (Pdeathsig).
//
// The agent port "org.hotplugheaven.0" and the QMP socket qmp.sock belong to
// the code under test (hotplug-agent, hotplug-actuator); this package only
// creates them. The test owns qmp-test.sock.
//
// This package is test infrastructure: it must not be imported by the agent
// or the actuator, and it must not implement QMP beyond the "quit" it needs
// to stop a VM (host/qmp is the real client).
package testvm
