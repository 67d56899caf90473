# minc-waiter: the one host-side process (besides unshare) that stays while
# a container runs. It is plain sh, not Node, so a running container costs
# the host about a megabyte, like the shell MINCS.
#
#   sh minc-waiter.sh CLEANUP PIDFILE COMMAND...
#
# It runs COMMAND (unshare ... minc-core ...), passes INT, TERM, HUP and
# QUIT on to the container's init, and runs CLEANUP when the container ends,
# on success, failure or signal: the shell MINCS's `trap "$TRAPCMD" EXIT`.
#
# - COMMAND runs in the background so that a trapped signal interrupts
#   `wait`; a non-interactive sh gives background commands /dev/null as
#   stdin, so the real stdin is handed over through fd 3.
# - As PID 1 of its namespace, the container's init receives only signals it
#   has a handler for: the kernel drops the others, even SIGTERM. When init
#   neither handles nor ignores a relayed signal, the waiter gives it the
#   default action (terminate) by killing unshare, whose --kill-child takes
#   the whole container along, and exits with 128+N as if the signal had
#   killed it.
# - A signal before minc-core wrote PIDFILE stops the boot the same way.

cleanup=$1 pidfile=$2
shift 2
trap "$cleanup" EXIT
forced= init=

sigmask() { # FIELD PID: the low 32 bits of a signal mask in /proc/PID/status
  m=$(sed -n "s/^$1:[[:space:]]*//p" "/proc/$2/status" 2>/dev/null)
  m=${m#????????}
  echo "${m:-0}"
}

stop_container() { # SIGNAL-NUMBER
  kill -KILL "$child" 2>/dev/null
  forced=$1
}

relay() { # NAME NUMBER
  init=$(cat "$pidfile" 2>/dev/null) || init=
  [ -n "$init" ] || { stop_container "$2"; return 0; }
  mask=$(( 0x$(sigmask SigCgt "$init") | 0x$(sigmask SigIgn "$init") ))
  kill -s "$1" "$init" 2>/dev/null || return 0
  [ $(( mask >> ($2 - 1) & 1 )) -eq 1 ] || stop_container "$2"
}

trap 'relay INT 2' INT
trap 'relay TERM 15' TERM
trap 'relay HUP 1' HUP
trap 'relay QUIT 3' QUIT

exec 3<&0
"$@" <&3 3<&- &
child=$!
exec 3<&-
while :; do
  wait "$child" 2>/dev/null # (dash would report "Killed" on stderr)
  status=$?
  kill -0 "$child" 2>/dev/null || break
done

if [ -n "$forced" ]; then
  status=$((128 + forced))
  # unshare is gone at once; let the container's processes go before cleanup.
  n=0
  while [ -n "$init" ] && kill -0 "$init" 2>/dev/null && [ $n -lt 100 ]; do
    sleep 0.02; n=$((n + 1))
  done
fi
exit "$status"
