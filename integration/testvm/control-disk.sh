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

# @CONTROL_SHELL@

i=0
until ctl=$(find_port org.hotplugheaven.test); do
	i=$((i + 1))
	if [ $i -ge 600 ]; then
		echo "testvm: FATAL: no virtio-serial port org.hotplugheaven.test after 60s"
		exit 1
	fi
	sleep 0.1
done

echo "testvm: stage=ready control-shell=$ctl"
serve_control "$ctl"
