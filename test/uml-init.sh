#!/bin/sh
# PID 1 of a UML guest made by test/uml.ts. Messages go to the console.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
SHARE=@SHARE@
fail() { echo "uml-init: $*"; }
mounted() { grep -q "^[^ ]* $1 " /proc/mounts; }
mount -t proc proc /proc || fail "cannot mount /proc"
mount -t sysfs sysfs /sys || fail "cannot mount /sys"
mounted /dev || mount -t devtmpfs devtmpfs /dev || fail "cannot mount /dev"
mkdir -p /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts || fail "cannot mount /dev/pts"
mount -t tmpfs -o mode=1777 tmpfs /dev/shm || fail "cannot mount /dev/shm"
mount -t cgroup2 cgroup2 /sys/fs/cgroup || fail "cannot mount cgroup2"
mount -t tmpfs -o mode=755 tmpfs /var/run || fail "cannot mount /var/run"
{ mkdir -p "$SHARE" && mount -t hostfs hostfs "$SHARE" -o "$SHARE"; } || fail "cannot mount the shared dir $SHARE"
if ! grep -qw overlay /proc/filesystems; then
  ko=@UML_MODULES@/$(uname -r)/kernel/fs/overlayfs/overlay.ko
  if command -v insmod >/dev/null; then insmod "$ko"
  else perl -e 'open(F, "<", $ARGV[0]) or die "$ARGV[0]: $!\n"; my $p = ""; syscall(313, fileno(F), $p, 0) == 0 or die "finit_module $ARGV[0]: $!\n"' "$ko"
  fi || fail "cannot load overlayfs"
fi
cd /
/bin/sh "$SHARE/script.sh" </dev/null >"$SHARE/output" 2>&1
echo $? >"$SHARE/status"
sync
umount "$SHARE" 2>/dev/null
echo o >/proc/sysrq-trigger
poweroff -f 2>/dev/null
while :; do sleep 60; done
