#!/bin/sh
# build-deb.sh — build hotplug-agent_<version>_amd64.deb and
# hotplug-actuator_<version>_amd64.deb with nfpm (a Go tool in go.mod).
#
#   packaging/build-deb.sh [OUTDIR]          (make deb: OUTDIR = build/deb)
#
# Environment:
#   DEB_VERSION     package version; default packaging/version.sh (git describe)
#   DEB_MAINTAINER  Maintainer field
#   GO              go binary; default go on PATH, else /usr/local/go/bin/go
#   DEB_PACKAGES    which to build; default "hotplug-agent hotplug-actuator"
#
# The binaries are built here, static (CGO_ENABLED=0) and position
# independent, with the package version as `--version` prints it. File
# times and the changelog date are the commit's (SOURCE_DATE_EPOCH): the same
# commit and version give byte-identical packages. Prints the two .deb paths.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/build/deb}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$root"

GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
version=${DEB_VERSION:-$(packaging/version.sh)}
maintainer=${DEB_MAINTAINER:-Hot-Plug Heaven maintainers <maintainers@hotplugheaven.org>}

# Debian: starts with a digit; letters, digits, . + ~ only (no '-': this
# package has no Debian revision, and no ':' epoch).
case $version in
[0-9]*) ;;
*) echo "build-deb: version $version must start with a digit" >&2; exit 2 ;;
esac
if [ -n "$(printf %s "$version" | tr -d 'A-Za-z0-9.+~')" ]; then
	echo "build-deb: version $version may hold only letters, digits, '.', '+' and '~'" >&2
	exit 2
fi

commit=$(git rev-parse HEAD)
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
export SOURCE_DATE_EPOCH
date=$(date -u -R -d "@$SOURCE_DATE_EPOCH")

work=$(mktemp -d "${TMPDIR:-/tmp}/hotplug-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT

# copyright writes the package's copyright file: the project's statement,
# then every module linked into the binary with its licence text, found in
# the module cache that built it.
copyright() {
	name=$1 bin=$2 dst=$3
	modcache=$("$GO" env GOMODCACHE)
	goroot=$("$GO" env GOROOT)
	sed -e "s|@NAME@|$name|g" -e "s|@COMMIT@|$commit|g" packaging/copyright.in >"$dst"
	mods=$("$GO" version -m "$bin" | awk '$1 == "dep" || $1 == "=>" { print $2, $3 }')
	{
		echo
		echo "--- Hot-Plug Heaven (LICENSE) ---"
		echo
		cat LICENSE
		echo
		echo "Go standard library $("$GO" env GOVERSION)"
		echo "$mods" | sed 's/^/Go module /'
		echo
		echo "--- Go standard library ($goroot/LICENSE) ---"
		echo
		cat "$goroot/LICENSE"
	} >>"$dst"
	echo "$mods" | while read -r path ver; do
		[ -n "$path" ] || continue
		# The module cache escapes capitals: github.com/BurntSushi -> !burnt!sushi.
		dir=$modcache/$(printf %s "$path" | sed 's/[A-Z]/!\L&/g')@$ver
		lic=$(find "$dir" -maxdepth 1 -type f \( -iname 'LICEN[CS]E*' -o -iname 'COPYING*' \) | sort | head -n 1)
		if [ -z "$lic" ]; then
			echo "build-deb: no licence file for $path $ver in $dir" >&2
			exit 1
		fi
		printf '\n--- %s %s (%s) ---\n\n' "$path" "$ver" "$(basename "$lic")"
		if head -n 5 "$lic" | grep -q 'Apache License' && grep -q 'Version 2.0, January 2004' "$lic"; then
			# Debian policy 12.5: refer to the common licence, do not copy it.
			echo "Licensed under the Apache License, Version 2.0."
			echo "On Debian systems its full text is in /usr/share/common-licenses/Apache-2.0."
			for n in "$dir"/NOTICE*; do
				[ -f "$n" ] || continue
				printf '\n%s:\n\n' "$(basename "$n")"
				cat "$n"
			done
		else
			cat "$lic"
		fi
		if grep -q 'GNU General Public License' "$lic"; then
			echo
			echo "On Debian systems the GNU General Public License version 2 is in"
			echo "/usr/share/common-licenses/GPL-2."
		fi
	done >>"$dst"
}

for name in ${DEB_PACKAGES:-hotplug-agent hotplug-actuator}; do
	case $name in
	hotplug-agent) pkg=./guest/cmd/hotplug-agent ;;
	hotplug-actuator) pkg=./host/cmd/hotplug-actuator ;;
	*) echo "build-deb: unknown package $name" >&2; exit 2 ;;
	esac
	b=$work/$name
	mkdir -p "$b"
	# Static and position independent (static-pie): lintian rejects a
	# non-PIE static binary (statically-linked-binary, an error) and ASLR
	# wants PIE anyway.
	CGO_ENABLED=0 "$GO" build -trimpath -buildmode=pie \
		-ldflags "-s -w -X main.version=$version" -o "$b/$name" "$pkg"
	gzip -9n <"packaging/$name/$name.8" >"$b/$name.8.gz"
	cat >"$b/changelog" <<EOF
$name ($version) unstable; urgency=medium

  * Built from commit $commit.
    The project's history is its git log.

 -- $maintainer  $date
EOF
	gzip -9n "$b/changelog"
	copyright "$name" "$b/$name" "$b/copyright"
	touch -d "@$SOURCE_DATE_EPOCH" "$b"/*

	rm -f "$out/${name}_${version}_amd64.deb"
	HOTPLUG_DEB_VERSION=$version HOTPLUG_DEB_BUILD=$b HOTPLUG_DEB_MAINTAINER=$maintainer \
		"$GO" tool nfpm package --config "packaging/nfpm/$name.yaml" --packager deb \
		--target "$out/${name}_${version}_amd64.deb" >"$work/nfpm.log" 2>&1 || {
		cat "$work/nfpm.log" >&2
		exit 1
	}
	echo "$out/${name}_${version}_amd64.deb"
done
