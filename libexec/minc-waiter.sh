# minc-waiter: the host-side process that waits while a container runs,
# with minc's guard (both run this script). It is plain sh, not Node, so a
# running container costs the host a few megabytes, like the shell MINCS.
#
#   sh minc-waiter.sh TMPDIR COMMAND...      wait for the container
#   sh minc-waiter.sh --guard PID [tied]     guard minc's boot
#   sh minc-waiter.sh --watch TMPDIR PID     the same for a waiter in the background
#   sh minc-waiter.sh --cleanup TMPDIR       run the cleanup chain now
#
# Each role is a file beside this one, which sources it after the part
# they share (minc-waiter-common.sh: the working directory's files, the
# cleanup chain, the lock):
#
#   minc-waiter-wait.sh    the waiter
#   minc-waiter-guard.sh   --guard
#   minc-waiter-watch.sh   --watch
#
# and --cleanup is the common part's cleanup alone. How minc, the guard,
# the waiter and its watcher hand the working directory over to one
# another is told as a whole in lib/boot/workdir.ts.

# (minc and minc-exec run it with /bin/sh: no #! line.)
# shellcheck shell=sh

# A --debug reader that went away (minc --debug 2>&1 | head) must not kill
# us half way, with the container left behind: our trace lines then fail,
# and the rest goes on. Handled, not ignored: what we start gets the default.
trap : PIPE

guard='' now='' watch=''
case $1 in
  --guard)   # (tied: started by setpriv --pdeathsig WINCH)
    # First thing: the waiter's URG, "in charge" (minc-waiter-guard.sh).
    handed=''; trap 'handed=1' URG
    guard=$2 tied=${3:-}; shift 2; set -- "" ;;
  --watch) watch=1 guard=$3; shift ;;   # TMPDIR PID: the waiter of a -B container, our parent
  --cleanup) now=1; shift ;;
esac
tmpdir=$1
shift
libexec=${0%/*}
forced='' init='' child='' pending=''

# shellcheck source=minc-waiter-common.sh
. "$libexec/minc-waiter-common.sh"
workdir_files "$tmpdir"

if [ -n "$now" ]; then cleanup; exit 0; fi

# The role's own part; each ends with an exit.
if [ -n "$watch" ]; then
  # shellcheck source=minc-waiter-watch.sh
  . "$libexec/minc-waiter-watch.sh"
elif [ -n "$guard" ]; then
  # shellcheck source=minc-waiter-guard.sh
  . "$libexec/minc-waiter-guard.sh"
else
  # shellcheck source=minc-waiter-wait.sh
  . "$libexec/minc-waiter-wait.sh"
fi
