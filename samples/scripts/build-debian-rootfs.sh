#!/bin/sh
# Build a Debian rootfs with debootstrap, to run with minc -r DIR.
#
#   samples/scripts/build-debian-rootfs.sh [--arch ARCH] [--suite SUITE] [--include PKG,...] DIR
#
# SUITE: bookworm (default) or trixie; ARCH: a Debian arch (default: the
# host's). A foreign ARCH is bootstrapped in two stages: debootstrap
# --foreign unpacks the packages here, and the second stage runs inside a
# container of the new rootfs itself, through qemu-user
# (minc --direct --cross ARCH), as the original sample did.
# Needs debootstrap, and root; the packages come from Debian's mirror.
set -eu
arch=$(dpkg --print-architecture) suite=bookworm include=
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
while [ $# -gt 1 ]; do
  case $1 in
    --arch) arch=$2; shift 2 ;;
    --suite) suite=$2; shift 2 ;;
    --include) include=$2; shift 2 ;;
    *) echo "build-debian-rootfs.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
dir=${1:?usage: build-debian-rootfs.sh [--arch ARCH] [--suite SUITE] [--include PKG,...] DIR}
case $suite in bookworm|trixie) ;; *) echo "build-debian-rootfs.sh: suite $suite: use bookworm or trixie" >&2; exit 2 ;; esac
[ ! -e "$dir" ] || [ -z "$(ls -A "$dir")" ] || { echo "build-debian-rootfs.sh: $dir is not empty" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "build-debian-rootfs.sh: needs debootstrap (apt-get install debootstrap)" >&2; exit 2; }

set -- --variant=minbase --arch "$arch" ${include:+--include="$include"}
if [ "$arch" = "$(dpkg --print-architecture)" ]; then
  debootstrap "$@" "$suite" "$dir" "$mirror"
else
  debootstrap --foreign "$@" "$suite" "$dir" "$mirror"
  minc=$(dirname "$0")/../../bin/minc
  "$minc" --direct --cross "$arch" -r "$dir" /debootstrap/debootstrap --second-stage
fi
echo "$dir"
