#!/bin/sh
# Build a rootfs from Debian packages extracted with dpkg -x (no debootstrap,
# no maintainer scripts): dynamically linked programs with just their
# libraries, e.g. to try polecat on them.
#
#   samples/scripts/debian-packages-rootfs.sh DIR [PACKAGE...]   (prints DIR when it is ready)
#   polecat -o ls.sh DIR ls -l /
#
# The default packages are coreutils, dash (as /bin/sh) and the libraries
# coreutils links to. The packages come from this host's apt sources, for
# its architecture. DIR is built once (atomically: a finished copy is
# renamed into place) and then reused; the .debs are kept in DIR.debs/.
# The polecat tests use this script for their dynamically linked fixture.
set -eu
dir=${1:?usage: debian-packages-rootfs.sh DIR [PACKAGE...]}
shift
[ $# -gt 0 ] || set -- coreutils dash libc6 libselinux1 libpcre2-8-0 libacl1 libattr1 libgmp10
dir=$(realpath -m "$dir")
if [ -x "$dir/bin/sh" ]; then echo "$dir"; exit 0; fi

debs=$dir.debs
mkdir -p "$debs"
for pkg in "$@"; do
  ls "$debs/${pkg}"_*.deb >/dev/null 2>&1 && continue
  (cd "$debs" && apt-get download "$pkg" >/dev/null 2>&1) || {
    echo "debian-packages-rootfs.sh: cannot download $pkg (run apt-get update?)" >&2
    exit 1
  }
done

tmp=$(mktemp -d "$(dirname "$dir")/.packages-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
for pkg in "$@"; do
  # (ls only to take the first .deb the glob names; Debian file names have no newline.)
  # shellcheck disable=SC2012
  dpkg-deb -x "$(ls "$debs/${pkg}"_*.deb | head -n 1)" "$tmp"
done
cd "$tmp"
# What the maintainer scripts would have made: /bin/sh, and the users.
[ -e bin/sh ] || ln -s dash bin/sh
mkdir -p etc proc sys dev tmp root
chmod 1777 tmp
cat > etc/passwd <<'EOT'
root:x:0:0:root:/root:/bin/sh
EOT
cat > etc/group <<'EOT'
root:x:0:
EOT
rm -rf usr/share/doc usr/share/man usr/share/info usr/share/locale
cd /
[ -e "$dir" ] || mv "$tmp" "$dir"   # another run may have won the race
trap - EXIT
rm -rf "$tmp"
echo "$dir"
