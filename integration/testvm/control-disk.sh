#!/bin/sh
# testvm-control: the control shell of a disk-image guest booted with
# systemd (see rootfs.go). InstallControlShell writes it to
# /usr/local/sbin/testvm-control and runs it from testvm-control.service.
#
# Same protocol as the busybox guest's /init (init.sh), so VM.Run, Spawn and
# Kill work unchanged. The host sends one line per command,
#   <id> <base64 of the script>
# and gets back
#   TESTVM-BEGIN <id>\n<stdout+stderr>\nTESTVM-END <id> <exit status>\n
# Its stage lines go to the console (StandardOutput=journal+console).

export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root

# find_port NAME: the /dev node of the virtio-serial port called NAME.
find_port() {
	for d in /sys/class/virtio-ports/*; do
		[ -r "$d/name" ] || continue
		if [ "$(cat "$d/name")" = "$1" ] && [ -c "/dev/${d##*/}" ]; then
			echo "/dev/${d##*/}"
			return 0
		fi
	done
	return 1
}

i=0
until ctl=$(find_port org.hotplugheaven.test); do
	i=$((i + 1))
	if [ $i -ge 600 ]; then
		echo "testvm: FATAL: no virtio-serial port org.hotplugheaven.test after 60s"
		exit 1
	fi
	sleep 0.1
done

mkdir -p /tmp/testvm
echo "testvm: stage=ready control-shell=$ctl"
while :; do
	if exec 3<>"$ctl"; then
		while read -r id b64 <&3; do
			[ -n "$id" ] || continue
			if ! echo "$b64" | base64 -d >/tmp/testvm/cmd 2>/dev/null; then
				printf 'TESTVM-BEGIN %s\nbad base64\nTESTVM-END %s 255\n' "$id" "$id" >&3
				continue
			fi
			printf 'TESTVM-BEGIN %s\n' "$id" >&3
			sh /tmp/testvm/cmd </dev/null >&3 2>&1 3>&-
			rc=$?
			printf '\nTESTVM-END %s %d\n' "$id" "$rc" >&3
		done
		exec 3>&-
	fi
	sleep 0.2
done
