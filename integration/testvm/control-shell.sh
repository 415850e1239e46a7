# control-shell.sh — shared by init.sh (busybox guest) and control-disk.sh
# (systemd guest): Go puts it in place of their "# @CONTROL_SHELL@" line
# when it builds the image (withControlShell), so both speak exactly the
# same protocol to VM.Run, Spawn and Kill.

# find_port NAME: the /dev node of the virtio-serial port called NAME.
# Without udev there is no /dev/virtio-ports/NAME symlink; sysfs has the
# name.
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

# serve_control PORT: the control shell. The host sends one line per
# command:
#   <id> <base64 of the script>
# and gets back
#   TESTVM-BEGIN <id>\n<stdout+stderr>\nTESTVM-END <id> <exit status>\n
# The newline before TESTVM-END is always added, so the host strips exactly
# one and the output is returned byte for byte.
#
# While no host is connected, reads of the port return EOF at once: the
# pause keeps the loop from spinning, and reopening picks up the next host.
serve_control() {
	mkdir -p /tmp/testvm
	while :; do
		if exec 3<>"$1"; then
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
}
