# minc-waiter.sh TMPDIR COMMAND...: the waiter; sourced by minc-waiter.sh,
# after minc-waiter-common.sh.
#
# minc (with minc-exec loaded into the same Node) execs it at the end of
# phase 3: it writes TMPDIR/waiter to say it is in charge, runs COMMAND
# (setpriv, unshare, then minc-fork.sh, whose child is the container's PID
# 1), passes INT, TERM, HUP and QUIT on to the container's init, and when
# the container ends, on success, failure or signal, runs the cleanup
# chain TMPDIR/cleanup, last line first: what the backends registered
# (minc-cage's cgroups, the network namespace, an sshfs mount) and,
# first registered and so last run, minc's own trap (remove TMPDIR). That
# is the shell MINCS's `trap "$TRAPCMD" EXIT`.
#
# - COMMAND runs in the background so that a trapped signal interrupts
#   `wait`; a non-interactive sh gives background commands /dev/null as
#   stdin, so the real stdin is handed over through fd 3.
# - As PID 1 of its namespace, the container's init receives only signals it
#   has a handler for: the kernel drops the others, even SIGTERM. When init
#   neither handles nor ignores a relayed signal, the waiter gives it the
#   default action (terminate) with SIGKILL (allowed from outside its
#   namespace; the rest of the namespace dies with it) and exits with 128+N
#   as if the signal had killed it.
# - A signal during the boot stops it the same way: before minc-core wrote
#   TMPDIR/pid, or while init is still one of the Node backends of libexec/
#   (Node catches TERM in its first milliseconds and would lose it) or the
#   sh running the boot minc-core wrote down (TMPDIR/minc-core.sh).

# shellcheck shell=sh
# shellcheck disable=SC2154   # (set by minc-waiter.sh and its common part)
trap cleanup EXIT

# shellcheck disable=SC2317   # (the relay calls it, from the traps below)
handles() { # PID NUMBER: does it catch or ignore that signal? (builtins only: polled)
  # Fails when it does neither, and also when its status cannot be read (gone).
  caught=''
  { while read -r field value; do
      case $field in SigIgn:|SigCgt:) value=${value#????????}; caught=$(( ${caught:-0} | 0x$value )) ;; esac
    done < "/proc/$1/status"; } 2>/dev/null   # (the low 32 bits: 16 hex digits may not fit sh's arithmetic)
  [ -z "$caught" ] || [ $(( caught >> ($2 - 1) & 1 )) -eq 1 ]
}

stop_container() { # SIGNAL-NUMBER
  forced=$1
  # Before it wrote its pid file, PID 1 is known as minc-fork.sh's child:
  # the cleanup must wait for it too, or its last writes race the rm -rf.
  [ -n "$init" ] || init=$(first_child "$child")
  [ -z "$init" ] || kill -KILL "$init" 2>/dev/null
  if [ -n "$child" ]; then kill -KILL "$child" 2>/dev/null; else pending=$1; fi
}

first_child() { # PID: its first child, if it has one (builtins only)
  [ -n "$1" ] || return 0
  { read -r kids < "/proc/$1/task/$1/children"; } 2>/dev/null || return 0
  echo "${kids%% *}"
}


# shellcheck disable=SC2317   # (the relay calls it)
booting() { # PID: is it still a backend of ours (node libexec/minc-..., or sh running minc-core's script)?
  program=$( { tr '\0' '\n' < "/proc/$1/cmdline"; } 2>/dev/null | sed -n 2p)   # (it may be gone)
  case $program in "$libexec"/minc-*|"$bootscript") return 0 ;; esac
  return 1
}

# shellcheck disable=SC2317   # (the traps below call it)
relay() { # NAME NUMBER
  read_init
  if [ -z "$init" ] || booting "$init"; then stop_container "$2"; return 0; fi
  if ! handles "$init" "$2"; then
    kill -s "$1" "$init" 2>/dev/null && stop_container "$2"
    return 0
  fi
  kill -s "$1" "$init" 2>/dev/null || return 0
  until_default "$init" "$2" || stop_container "$2"
}

# shellcheck disable=SC2317   # (the relay calls it)
until_default() { # PID NUMBER: fails if, still alive, it comes to neither handle nor ignore the signal (2 s at most)
  # An init that handles a signal may reset it to the default and raise it
  # again, to die by it: qemu-user (--cross) for a guest with no handler,
  # and many a C program that cleans up first. The kernel drops what PID 1
  # sends itself, so it would wait for ever: give it that default action.
  # An init that resets its handlers on its way out (sh does, before its
  # exit) is not one: it is seen so twice, and not while it exits.
  # A second signal meanwhile runs its own relay (a trap inside this one):
  # the loop keeps nothing but counts, and ends once that one stopped it.
  tries=0 unhandled=0
  while [ "$tries" -lt 100 ] && [ -z "$forced" ]; do
    # (the mask first, then alive: a dead init's status shows no handler)
    if handles "$1" "$2"; then unhandled=0
    elif ! exiting "$1"; then
      unhandled=$((unhandled + 1))
      [ "$unhandled" -lt 2 ] || return 1
    fi
    running "$1" || return 0
    sleep 0.02
    tries=$((tries + 1))
  done
}

# shellcheck disable=SC2317   # (until_default calls it)
exiting() { # PID: has it begun to exit (PF_EXITING in the flags of its stat), or is it gone? (builtins only)
  { read -r stat < "/proc/$1/stat"; } 2>/dev/null || return 0
  # shellcheck disable=SC2086   # (split on purpose, into its fields)
  set -- ${stat##*) }   # state ppid pgrp session tty_nr tpgid flags ...
  [ "$1" = Z ] || [ $(( $7 & 4 )) -ne 0 ]
}

trap 'relay INT 2' INT
trap 'relay TERM 15' TERM
trap 'relay HUP 1' HUP
trap 'relay QUIT 3' QUIT
# In charge from here (every trap is set): minc's guard may go.
if [ -n "${MINC_DEBUG:-}" ]; then
  say "# ==== minc-waiter: wait for the container, pass signals on to it, undo the boot when it ends ===="
  say "# Hold the working directory's lock to the end of the cleanup: another minc refuses the directory meanwhile (the container does not get it)"
  say "+ exec 9< $(quoted "$lockfile") && flock -s 9"
fi
hold_dir
if [ -n "${MINC_DEBUG:-}" ]; then
  say "# Say the waiter is in charge (minc's guard, which watched the boot, may go)"
  say "+ echo \"\$\$\" > $(quoted "$waiterfile")"
fi
echo $$ > "$waiterfile"
# And tell minc's guard so, should it look only once we have run the chain
# (which removes the file) and gone: no waiting for it (minc-waiter-guard.sh).
# Neither the container nor our watcher gets its PID.
[ -z "${MINC_GUARD_PID:-}" ] || kill -s URG "$MINC_GUARD_PID" 2>/dev/null
unset MINC_GUARD_PID
# In the background (-B) minc has left: a watcher of our own runs the chain
# should we be SIGKILLed (in the foreground, minc's guard does).
if [ -n "${MINC_BACKGROUND:-}" ] && command -v setpriv > /dev/null 2>&1; then
  (cd / && exec setpriv --pdeathsig WINCH /bin/sh "$0" --watch "$tmpdir" "$$" < /dev/null > /dev/null) &
fi

exec 3<&0
MINC_WAITER_PID=$$ "$@" <&3 3<&- 9>&- &   # (minc-fork.sh checks it is still our child)
child=$!
exec 3<&-
[ -z "$pending" ] || stop_container "$pending"   # a signal came before $child was known
while :; do
  wait "$child" 2>/dev/null # (dash would report "Killed" on stderr)
  status=$?
  kill -0 "$child" 2>/dev/null || break
done
# A trap's own commands (the relay's sleep) wait for children, and so may
# reap ours while a signal interrupts that wait: the shell keeps its
# status, which another wait reports (127: there was none to keep).
if [ "$status" -gt 128 ]; then
  wait "$child" 2>/dev/null
  reaped=$?
  [ "$reaped" -eq 127 ] || status=$reaped
fi

if [ -n "$forced" ]; then
  status=$((128 + forced))
  # A PID 1 forked just before minc-fork.sh was killed may not be tied to it
  # yet (setpriv's pdeathsig comes after the fork): it says who it is in the
  # pid file, its first step. Stopped here, it cannot boot on unseen.
  if [ -z "$init" ]; then
    sleep 0.05
    read_init
    [ -z "$init" ] || kill -KILL "$init" 2>/dev/null
  fi
  # minc-fork.sh is gone at once; let the container's processes go before cleanup.
  until_gone "$init"
fi
exit "$status"
