# minc-waiter: the host-side process that waits while a container runs,
# with minc's guard (both run this script). It is plain sh, not Node, so a
# running container costs the host a few megabytes, like the shell MINCS.
#
#   sh minc-waiter.sh TMPDIR COMMAND...      wait for the container
#   sh minc-waiter.sh --guard PID [tied]     guard minc's boot (see below)
#   sh minc-waiter.sh --watch TMPDIR PID     the same for a waiter in the background
#   sh minc-waiter.sh --cleanup TMPDIR       run the cleanup chain now
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
#
# --guard: before the waiter exists, minc itself (Node, with minc-exec
# loaded into it) makes the working directory and runs phases 2 and 3.
# When those make a cage, a network namespace or an sshfs mount, minc
# holds INT, TERM, HUP and QUIT until the end of phase 3 and then stops
# the boot and cleans up itself (--cleanup), as on a failure; otherwise,
# and on SIGKILL or a crash, a signal ends Node at once. So minc starts
# this guard first, with a pipe as its stdin, and tells it on that pipe
# "made TEMPLATE" before it makes TMPDIR with mktemp (TEMPLATE then
# XXXXXX) and "dir TMPDIR" once it has one. The pipe closes when minc
# exits or execs the waiter; the guard then waits until either the waiter
# has written TMPDIR/waiter (handed over) or minc's PID is gone (died: run
# the cleanup chain, which removes a made TMPDIR; one that died before it
# wrote the chain is removed by the guard; a chain run already is not run
# twice). Handed over to a waiter in the foreground (minc's own PID, the
# guard's parent), the guard stays until the waiter ends, which setpriv
# --pdeathsig tells it with a WINCH: if it ended without running the chain
# (SIGKILL), the guard runs it. A waiter in the background (-B) is not
# minc: it starts a watcher of its own (--watch, under setpriv --pdeathsig
# WINCH too), which does the same for it.
#
# The working directory is one container's at a time (lib/claim.ts): the
# guard, from the moment it is told the directory, and the waiter, for its
# whole life, hold TMPDIR/lock shared (fd 9), and so does the watcher, which
# inherits the waiter's; another minc refuses the directory while any of
# them holds it. The container is not given fd 9, nor is a sleep.

# A --debug reader that went away (minc --debug 2>&1 | head) must not kill
# us half way, with the container left behind: our trace lines then fail,
# and the rest goes on. Handled, not ignored: what we start gets the default.
trap : PIPE

guard= now= watch=
made=
case $1 in
  --guard) guard=$2 tied=${3:-}; shift 2; set -- "" ;;   # (tied: started by setpriv --pdeathsig WINCH)
  --watch) watch=1 guard=$3; shift ;;   # TMPDIR PID: the waiter of a -B container, our parent
  --cleanup) now=1; shift ;;
esac
tmpdir=$1
shift
libexec=${0%/*}
forced= init= child= pending=

workdir_files() { # TMPDIR: the paths of the working directory's files we act on
  # Spelled here alone, as lib/workdir.ts spells them (WORKDIR: its sh
  # fields are these variables).
  pidfile=$1/pid registered=$1/cleanup waiterfile=$1/waiter lockfile=$1/lock bootscript=$1/minc-core.sh wakefifo=$1/.wake-
}
workdir_files "$tmpdir"

say() { # LINE: into the --debug trace
  [ -z "${MINC_DEBUG:-}" ] || printf '%s\n' "$*" >&2
}

quoted() { # WORD: quoted for the trace as minc quotes (only with --debug: sed is a fork)
  case $1 in
    ''|*[!A-Za-z0-9_./:=@%+,-]*) printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")" ;;
    *) printf '%s' "$1" ;;
  esac
}

hold_dir() { # hold the working directory's lock (shared) on fd 9 while we, or what inherits fd 9, live
  command -v flock > /dev/null 2>&1 || return 0
  # Taken on fd 8 first: a claim of minc's that fd 9 may hold goes only once ours is held.
  { command exec 8>> "$lockfile"; } 2> /dev/null || return 0   # (gone: nothing left to hold)
  flock -s 8
  exec 9>&8 8>&-
}

cleanup_cages() { # DIR...: remove cgroups once the container's last process has left them
  for cage in "$@"; do
    n=0
    while [ -d "$cage" ] && ! rmdir "$cage" 2>/dev/null && [ $n -lt 100 ]; do
      sleep 0.02; n=$((n + 1))
    done
  done
}

cleanup() {
  say "# ==== minc-waiter: the container has ended: undo the boot, last registered first ===="
  if [ -f "$registered" ]; then
    chain=
    while IFS= read -r line; do chain="$line
$chain"; done < "$registered"   # last registered, first undone
    if [ -n "${MINC_DEBUG:-}" ]; then
      say "# (the lines of $(quoted "$registered"); cleanup_cages is minc-waiter.sh's: rmdir, retried while the cgroup empties)"
      printf '%s' "$chain" | while IFS= read -r line; do say "+ $line"; done
    fi
    eval "$chain"
  fi
  # Our own files, where the chain kept the directory (-k, -t): one rm, none when it is gone.
  if [ -d "$tmpdir" ]; then
    [ -z "${MINC_DEBUG:-}" ] || say "+ rm -f $(quoted "$registered") $(quoted "$waiterfile") $(quoted "$pidfile")"
    rm -f "$registered" "$waiterfile" "$pidfile"
  fi
}

running() { # PID: a thread of it is not gone, nor a zombie (a slow reaper may hold a zombie for a second)
  # Every thread: a multi-threaded init (Node) shows its main thread as a
  # zombie while another still ends the namespace's processes (a VM...).
  for task in /proc/"$1"/task/*; do
    { read -r stat < "$task/stat"; } 2>/dev/null || continue   # (builtins only: no fork)
    state=${stat##*) }
    [ "${state%% *}" = Z ] || return 0
  done
  return 1
}

read_init() { # init: the container's init, as its pid file says (empty before it wrote it)
  { read -r init < "$pidfile"; } 2>/dev/null || init=
}

until_gone() { # PID: wait (2 s at most) for the container's init to be gone before a cleanup
  n=0
  while [ -n "$1" ] && running "$1" && [ $n -lt 100 ]; do sleep 0.02; n=$((n + 1)); done
}

until_waiter_ends() {
  # The waiter is our parent (minc, which became it in the foreground; or,
  # with -B, the waiter that started us), and setpriv --pdeathsig sends WINCH
  # when it ends. sh blocks only in a read or in a wait for a child. A read,
  # of a FIFO that only the trap writes to, keeps no process of its own (a
  # sleep would: 2 MB more while the container runs). The trap's byte wakes
  # a read under way, or the next one: a WINCH between the check and the
  # read is not lost. Should the FIFO not be made (the container ended at
  # once and its chain removed the directory), a sleep stands in, which the
  # trap ends (KILL: TERM is ignored here, and so in the sleep).
  gone= nap= wake=
  ! wake_on_signal || wake=1
  trap 'gone=1; [ -z "$wake" ] || echo >&7; [ -z "$nap" ] || kill -KILL "$nap" 2>/dev/null' WINCH
  while [ -z "$gone" ] && running "$guard"; do
    if [ -n "$wake" ]; then
      read -r _ <&7 || :
      continue
    fi
    sleep 600 < /dev/null > /dev/null 2>&1 7>&- 9>&- &   # (without the lock: a killed guard's sleep must not keep it)
    nap=$!
    [ -n "$gone" ] || wait "$nap"
    kill -KILL "$nap" 2>/dev/null
  done
  exec 7<&-
}

wake_on_signal() { # fd 7: a pipe of our own, read and written (no EOF), with no name left in the file system
  fifo=$wakefifo$$
  mkfifo -m 600 "$fifo" 2>/dev/null || return 1
  exec 7<> "$fifo"
  rm -f "$fifo"
}

clean_after_waiter() {
  # It ran the chain (which removed the directory, or its own files with -k
  # and -t), unless it was SIGKILLed: then run it here, once the container
  # (killed with it by setpriv --pdeathsig) is gone.
  [ -e "$registered" ] || exit 0
  stop_untied_init
  until_gone "$init"
  cleanup
  exit 0
}

stop_untied_init() {
  # minc-fork.sh forks the container's init, which setpriv then ties to it:
  # an init forked just before the waiter's SIGKILL took minc-fork.sh with it
  # outlives both, untied, as PID 1 of its own namespace. It says who it is
  # in the pid file, its first step (a moment to write it, if need be).
  read_init
  [ -n "$init" ] || { sleep 0.05; read_init; }
  [ -n "$init" ] && running "$init" || return 0
  # (our pid file's, in a PID namespace not ours: a container's init, not a PID used again)
  [ /proc/"$init"/ns/pid -ef /proc/$$/ns/pid ] || kill -KILL "$init" 2>/dev/null
}

if [ -n "$now" ]; then cleanup; exit 0; fi

if [ -n "$watch" ]; then
  trap '' INT TERM HUP QUIT   # the waiter's signals are the waiter's; this acts on its end
  until_waiter_ends
  clean_after_waiter
fi

if [ -n "$guard" ]; then
  trap '' INT TERM HUP QUIT   # minc's signals are minc's; this guard acts on its end
  while read -r what name; do
    case $what in made) made=$name ;; dir) tmpdir=$name; workdir_files "$tmpdir"; hold_dir ;; esac
  done
  if [ -z "$tmpdir" ]; then
    # minc died between its mktemp and telling the name: only an empty directory can be there.
    [ -z "$made" ] || for dir in "$made"??????; do [ ! -d "$dir" ] || rmdir "$dir" 2>/dev/null; done
    exit 0
  fi
  # (-s, not -e: the file is made empty, then written; minc SIGKILLed in
  # between never handed over, and never started the container.)
  while [ ! -s "$waiterfile" ] && running "$guard"; do sleep 0.01; done
  { read -r waiter < "$waiterfile"; } 2>/dev/null || waiter=
  if [ -n "$waiter" ]; then
    # Handed over. A waiter in the background is not minc (it has a watcher
    # of its own), and without setpriv nothing would tell us of its end:
    # nothing more to do then.
    [ "$waiter" = "$guard" ] && [ -n "$tied" ] || exit 0
    until_waiter_ends
    clean_after_waiter
  fi
  had_chain=; [ ! -s "$registered" ] || had_chain=1   # (made, but empty: minc died in the write of its first line)
  cleanup
  # A directory minc made, before it wrote the chain that removes it.
  case $tmpdir in "$made"??????) [ -n "$had_chain" ] || rm -rf --one-file-system "$tmpdir" ;; esac
  exit 0
fi

trap cleanup EXIT

handles() { # PID NUMBER: does it catch or ignore that signal? (builtins only: polled)
  # Fails when it does neither, and also when its status cannot be read (gone).
  caught=
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


booting() { # PID: is it still a backend of ours (node libexec/minc-..., or sh running minc-core's script)?
  program=$( { tr '\0' '\n' < "/proc/$1/cmdline"; } 2>/dev/null | sed -n 2p)   # (it may be gone)
  case $program in "$libexec"/minc-*|"$bootscript") return 0 ;; esac
  return 1
}

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
  while [ $tries -lt 100 ] && [ -z "$forced" ]; do
    # (the mask first, then alive: a dead init's status shows no handler)
    if handles "$1" "$2"; then unhandled=0
    elif ! exiting "$1"; then
      unhandled=$((unhandled + 1))
      [ $unhandled -lt 2 ] || return 1
    fi
    running "$1" || return 0
    sleep 0.02
    tries=$((tries + 1))
  done
}

exiting() { # PID: has it begun to exit (PF_EXITING in the flags of its stat), or is it gone? (builtins only)
  { read -r stat < "/proc/$1/stat"; } 2>/dev/null || return 0
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
  say "+ exec 9>> $(quoted "$lockfile") && flock -s 9"
fi
hold_dir
if [ -n "${MINC_DEBUG:-}" ]; then
  say "# Say the waiter is in charge (minc's guard, which watched the boot, may go)"
  say "+ echo \"\$\$\" > $(quoted "$waiterfile")"
fi
echo $$ > "$waiterfile"
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
if [ $status -gt 128 ]; then
  wait "$child" 2>/dev/null
  reaped=$?
  [ $reaped -eq 127 ] || status=$reaped
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
