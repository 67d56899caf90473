#!/bin/sh
# A self-executable container made by polecat (MINCS in TypeScript), of:
#   @POLECAT_COMMAND_LINE@
# Run it as root; it needs sh, mktemp, mount, umount, unshare and Node.js 24 here.
# After this header comes a squashfs image (the command's files and, in
# @POLECAT_RUNTIME_DIR@, the minc that boots it): the last @POLECAT_SIZE@ bytes.
size=@POLECAT_SIZE@
prog=${0##*/}
[ -z "${MINC_DEBUG:-}" ] || set -x
fail() { echo "$prog: $*" >&2; exit 2; }
for tool in mount umount unshare node mktemp; do
  command -v "$tool" >/dev/null 2>&1 || fail "needs $tool, which is not in PATH ($PATH)"
done
# (A closed fd 0 would make the exec 3<&0 below fail: give it /dev/null.)
true 2>/dev/null 3<&0 || exec </dev/null

dir='' mounted=''
# shellcheck disable=SC2317 # (run by the EXIT trap)
cleanup() {
  trap - EXIT INT TERM HUP
  # The container's mount namespace may hold the image for a moment after minc ends.
  n=0
  while [ -n "$mounted" ] && ! umount "$dir/image" 2>/dev/null; do
    n=$((n + 1))
    if [ "$n" -ge 50 ]; then umount -l "$dir/image"; break; fi
    sleep 0.1
  done
  [ -z "$dir" ] || { rm -f "$dir/node.err"; rmdir "$dir/image" "$dir" 2>/dev/null; }
}
trap cleanup EXIT
# Until the container runs, a signal ends this script (and so cleans up).
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

dir=$(mktemp -d /tmp/polecat-run-XXXXXX) || exit 1
# Node checks itself and the user and finds the image. Only its answer is
# read: what it says on stderr (a warning, say) is shown if it fails, and
# NODE_OPTIONS is the command's (it could make it print more), not its own.
if ! offset=$(NODE_OPTIONS='' node -e '
  const [self, size] = process.argv.slice(1);
  const fs = require("fs");
  const fail = (m) => { console.error(m); process.exit(2); };
  if (+process.versions.node.split(".")[0] < 24) fail("needs Node.js 24 or newer (node here is " + process.version + ")");
  if (process.getuid() !== 0) fail("needs root (to mount the image and make namespaces)");
  const offset = fs.statSync(self).size - Number(size);
  if (!(offset > 0)) fail(self + " is cut short: its image is missing");
  process.stdout.write(String(offset));
' "$0" "$size" 2>"$dir/node.err"); then
  fail "$(cat "$dir/node.err")"
fi

mkdir "$dir/image" || exit 1
mount -t squashfs -o ro,loop,offset="$offset" "$0" "$dir/image" || exit 1
mounted=1

# Ctrl-C reaches minc too, which stops the container: only wait for it here.
trap : INT
trap 'kill -TERM "$child" 2>/dev/null' TERM
trap 'kill -HUP "$child" 2>/dev/null' HUP
# In the background, so that a signal interrupts wait; stdin handed over.
exec 3<&0
node "$dir/image@POLECAT_MINC@" ${MINC_DEBUG:+--debug} -r "$dir/image" -- @POLECAT_COMMAND@ "$@" <&3 3<&- &
child=$!
exec 3<&-
while :; do
  wait "$child"
  status=$?
  kill -0 "$child" 2>/dev/null || break
done
exit "$status"
