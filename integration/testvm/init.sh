#!/bin/sh
# /init of a testvm guest (busybox ash). Built into the initramfs by
# BuildInitramfs; see integration/README.md.
#
# Every stage prints "testvm: stage=..." to the console (ttyS0) so a boot
# that stops can be read from console.log. Init must never exit: the kernel
# would panic (panic=-1 then ends QEMU and the test learns nothing).

export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root

# The kernel's built-in initramfs provides /dev/console; once devtmpfs is
# mounted, reopen it so our output does not depend on that.
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1

say() { echo "testvm: $*"; }
fatal() {
	say "FATAL: $*"
	# Stay alive so the host can read the console; the test times out with
	# this line in the console tail.
	while :; do sleep 3600; done
}

say "stage=init pid=$$ kernel=$(uname -r)"
mkdir -p /proc /sys /tmp /run /dev/pts /dev/shm /root
mount -t proc proc /proc || fatal "mount /proc"
mount -t sysfs sysfs /sys || fatal "mount /sys"
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t devpts devpts /dev/pts 2>/dev/null
say "stage=mounted"

name=testvm
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	testvm.name=*) name="${arg#testvm.name=}" ;;
	esac
done
hostname "$name"
ip link set lo up 2>/dev/null
say "stage=hostname name=$name"

while read -r mod; do
	[ -n "$mod" ] || continue
	insmod "$mod" || fatal "insmod $mod failed (see kernel messages above)"
done </etc/testvm/modules.load
say "stage=modules loaded=$(wc -l </etc/testvm/modules.load)"

# @CONTROL_SHELL@

i=0
until ctl=$(find_port org.hotplugheaven.test); do
	i=$((i + 1))
	[ $i -lt 600 ] || fatal "no virtio-serial port org.hotplugheaven.test after 60s; ports: $(cat /sys/class/virtio-ports/*/name 2>/dev/null | tr '\n' ' ')"
	sleep 0.1
done
agent=$(find_port org.hotplugheaven.0) || agent=none
say "stage=ports control=$ctl agent=$agent"

if [ -f /etc/testvm/start.sh ]; then
	# Its output goes to the console, prefixed, so it is in console.log.
	(sh /etc/testvm/start.sh </dev/null 2>&1 | sed 's/^/start.sh: /') &
	say "stage=start-script"
fi

say "stage=ready control-shell=$ctl"
serve_control "$ctl"
