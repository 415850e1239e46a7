#!/bin/sh
# version.sh — the Debian package version of this checkout, from git describe.
#
#   packaging/version.sh            prints e.g. 0.0.0+58.g34695fb
#
# dpkg must order every build of main correctly, so the version is built from
# the nearest release tag (vX.Y.Z) and the number of commits since it:
#
#   git describe                   Debian version          why
#   v0.2.0                         0.2.0                   a release
#   v0.2.0-12-gabc1234             0.2.0+12.gabc1234       12 commits after it: > 0.2.0, < 0.2.1
#   v0.3.0-rc1                     0.3.0~rc1               '~' sorts before 0.3.0
#   v0.3.0-rc1-4-gabc1234          0.3.0~rc1+4.gabc1234
#   (no tag yet) abc1234           0.0.0+N.gabc1234        N = commits in HEAD's history, as if
#                                                          the first commit were tagged v0.0.0
#   any of these, uncommitted      ….dirty                 never for a release
#
# The commit count, not the hash, is what orders builds: on one branch it
# only grows. The hash only names the commit. Versions have no '-' (that
# would start a Debian revision) and start with a digit, as dpkg requires.
set -eu
cd "$(dirname "$0")/.."

dirty=
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
	dirty=.dirty
fi
hash=$(git rev-parse --short=7 HEAD)
if desc=$(git describe --tags --long --match 'v[0-9]*' 2>/dev/null); then
	# vX.Y.Z[-pre]-N-gHASH
	n=${desc%-g*}
	n=${n##*-}
	tag=${desc%-*-g*}
	base=${tag#v}
	case $base in
	*-*) base=$(echo "$base" | sed 's/-/~/') ;; # v0.3.0-rc1 -> 0.3.0~rc1
	esac
	if [ "$n" = 0 ]; then
		echo "$base$dirty"
	else
		echo "$base+$n.g$hash$dirty"
	fi
else
	n=$(git rev-list --count HEAD)
	echo "0.0.0+$n.g$hash$dirty"
fi
