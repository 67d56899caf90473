# minc-fork: start the container's PID 1 in the new PID namespace, and wait.
#
#   unshare -iump sh minc-fork.sh COMMAND...
#
# `unshare -p` without --fork puts only the children of its program into the
# new PID namespace, the first one as PID 1. This script is that program:
# it does what `unshare --fork` does, except that `wait` gives the real
# status of PID 1: util-linux 2.38's unshare --fork exits 1 ("sigprocmask
# unblock failed") when PID 1 is SIGKILLed, as the OOM killer of a memory
# limit does, where the user must see 137.
#
# Like unshare --fork, it leaves INT, QUIT, TERM and HUP to PID 1 (minc's
# waiter relays them), hands the real stdin over (a background job would get
# /dev/null), and ties PID 1's life to its own with setpriv --pdeathsig.

# (minc-exec runs it with /bin/sh: no #! line.)
# shellcheck shell=sh

# minc's waiter starts us (through setpriv --pdeathsig KILL, unshare...) and
# passes its pid. setpriv ties us to it only after the fork: a waiter
# SIGKILLed in between leaves us to another parent, with nothing to stop the
# container or clean up after it. Then do not start it.
if [ -n "${MINC_WAITER_PID:-}" ] && [ "$PPID" != "$MINC_WAITER_PID" ]; then
  echo "minc-fork: minc's waiter is gone; the container is not started" >&2
  exit 1
fi
unset MINC_WAITER_PID

trap '' INT QUIT TERM HUP
tie=
command -v setpriv >/dev/null 2>&1 && tie="setpriv --pdeathsig KILL"
exec 3<&0
(
  trap - INT QUIT TERM HUP
  exec $tie "$@" <&3 3<&-
) &
exec 3<&-
wait $! 2>/dev/null   # (dash would print "Killed" for a SIGKILLed PID 1)
