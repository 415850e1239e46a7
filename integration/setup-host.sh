#!/usr/bin/env bash
# setup-host.sh — install what the end-to-end tests and the demo need on a
# Debian bookworm host, then warm the guest kernel cache.
#
#   integration/setup-host.sh        (as root, or a user with sudo)
#
# Idempotent: apt-get runs only when a package is missing, and the kernel is
# downloaded only when build/cache (or $HOTPLUG_CACHE) lacks it. Prints
# nothing on success; on failure says what failed and shows the log.
#
# Needs only Debian's archive and the Go module proxy. Nothing here may
# download from anywhere else.
set -euo pipefail

# What the harness (integration/testvm) uses on the host:
#   qemu-system-x86  qemu-system-x86_64 boots the guests; version 8 or newer
#                    (bookworm-backports on bookworm, see below)
#   busybox-static   /bin/busybox, copied into every guest initramfs
#   cpio             not needed by the harness (it writes cpio in Go), kept
#                    for inspecting images: zcat IMG | cpio -t
#   xz-utils, zstd   unpack compressed kernel modules (newer Debian kernels)
#   apt, dpkg        apt-get download + dpkg-deb -x fetch the guest kernel
#                    (always present on Debian)
#   clang, llvm, libbpf-dev
#                    bpf/: the test that rebuilds the eBPF object and compares
#                    it with the committed one (make bpf)
#   chromium         the dashboard's browser test (host/apiserver), driven by chromedp
#   libvirt-daemon, libvirt-daemon-driver-qemu, libvirt-clients
#                    the libvirt backend's tests against a real libvirtd
#   prometheus       promtool, for the alerting rules' unit tests (host/apiserver)
#   debootstrap, e2fsprogs, lintian
#                    the .deb proof: a Debian rootfs, its ext4 image, package lint
packages=(qemu-system-x86 busybox-static cpio xz-utils zstd chromium debootstrap e2fsprogs lintian prometheus
	libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients clang llvm libbpf-dev)

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
log=$(mktemp "${TMPDIR:-/tmp}/setup-host.XXXXXX")
trap 'rm -f "$log"' EXIT

die() {
	echo "setup-host: FAILED: $*" >&2
	if [[ -s $log ]]; then
		echo "----- log -----" >&2
		tail -n 60 "$log" >&2
		echo "---------------" >&2
	fi
	exit 1
}

# as_root runs a command as root, through sudo when we are not root.
as_root() {
	if [[ $EUID -eq 0 ]]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		die "need root to run '$*': run this script as root, or install sudo"
	fi
}

apt_updated=
apt_update() {
	[[ -n $apt_updated ]] && return 0
	as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$log" 2>&1 ||
		die "apt-get update (is the Debian archive reachable?)"
	apt_updated=1
}

# --- Debian packages -------------------------------------------------------
command -v dpkg >/dev/null 2>&1 || die "this script needs Debian (dpkg not found)"
missing=()
for p in "${packages[@]}"; do
	dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
	apt_update
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$log" 2>&1 ||
		die "apt-get install ${missing[*]}"
fi

# --- QEMU new enough for CPU re-plug ----------------------------------------
# QEMU 7.2 (bookworm) under TCG crashes on any device_add after a completed
# CPU unplug: a use-after-free of the unplugged CPU's address space in the
# RCU thread (address_space_dispatch_free -> object_unref, SIGSEGV). QEMU
# 10.0 from bookworm-backports does not. Install that on bookworm.
qemu_major() { qemu-system-x86_64 --version 2>/dev/null | sed -n 's/^QEMU emulator version \([0-9]*\)\..*/\1/p'; }
major=$(qemu_major || true)
if [[ -z $major || $major -lt 8 ]]; then
	# shellcheck source=/dev/null
	. /etc/os-release
	if [[ ${VERSION_CODENAME:-} == bookworm ]]; then
		if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
			as_root tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
			apt_updated=
		fi
		apt_update
		as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
			-t bookworm-backports qemu-system-x86 >>"$log" 2>&1 ||
			die "apt-get install -t bookworm-backports qemu-system-x86"
	fi
	major=$(qemu_major || true)
	[[ -n $major && $major -ge 8 ]] ||
		die "qemu-system-x86_64 is version ${major:-unknown}; QEMU 7 crashes on CPU re-plug under TCG, install QEMU 8 or newer"
fi

for tool in qemu-system-x86_64 apt-get dpkg-deb; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool still missing after installing ${packages[*]}"
done
[[ -x /bin/busybox ]] || die "/bin/busybox missing after installing busybox-static"

# --- libvirtd ---------------------------------------------------------------
# The libvirt tests need a running libvirtd with the users and groups its
# QEMU driver expects; nothing starts it on a machine without systemd.
getent group kvm >/dev/null || as_root groupadd -r kvm
getent group libvirt-qemu >/dev/null || as_root groupadd -r libvirt-qemu
id libvirt-qemu >/dev/null 2>&1 ||
	as_root useradd -r -g kvm -G libvirt-qemu -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
as_root mkdir -p /var/log/libvirt
pgrep -x virtlogd >/dev/null || as_root virtlogd -d || die "starting virtlogd"
pgrep -x libvirtd >/dev/null || as_root libvirtd -d || die "starting libvirtd"
for _ in $(seq 100); do [[ -S /run/libvirt/libvirt-sock ]] && break; sleep 0.1; done
[[ -S /run/libvirt/libvirt-sock ]] || die "libvirtd did not create /run/libvirt/libvirt-sock"

# --- Go --------------------------------------------------------------------
# Any Go >= 1.21 will do: with GOTOOLCHAIN=auto it fetches the version go.mod
# names from the Go module proxy. Bookworm's own golang-go is 1.19, so on
# bookworm it comes from backports (1.23).
if ! command -v go >/dev/null 2>&1; then
	if [[ -x /usr/local/go/bin/go ]]; then
		export PATH=$PATH:/usr/local/go/bin
	else
		# shellcheck source=/dev/null
		. /etc/os-release
		if [[ ${VERSION_CODENAME:-} == bookworm ]]; then
			apt_update
			as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
				-t bookworm-backports golang-go >>"$log" 2>&1 || die "apt-get install -t bookworm-backports golang-go"
		else
			apt_update
			as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends golang-go >>"$log" 2>&1 ||
				die "apt-get install golang-go"
		fi
	fi
fi
# Fetch the toolchain go.mod asks for now, once, rather than in the middle
# of the first test.
(cd "$root" && GOTOOLCHAIN=auto go version) >>"$log" 2>&1 ||
	die "go cannot provide the toolchain go.mod names (is the Go module proxy reachable?)"

# --- Guest kernel ----------------------------------------------------------
# The kernel comes from apt-get download, which needs package lists. Fetch
# them only when apt does not know the kernel yet.
if ! apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1; then
	apt_update
fi

# Same code as the tests (testvm.EnsureKernel), so the cache layout cannot
# drift. Run as the invoking user under sudo, so build/cache is not owned by
# root.
fetch=(go run ./integration/testvm/cmd/testvm-kernel)
if [[ $EUID -eq 0 && -n ${SUDO_USER:-} && $SUDO_USER != root ]]; then
	fetch=(sudo -u "$SUDO_USER" env "PATH=$PATH" ${HOTPLUG_CACHE:+"HOTPLUG_CACHE=$HOTPLUG_CACHE"} "${fetch[@]}")
fi
(cd "$root" && "${fetch[@]}") >>"$log" 2>&1 || die "fetching the guest kernel (go run ./integration/testvm/cmd/testvm-kernel)"
