# minc-waiter-common.sh: what the roles of minc-waiter.sh share. It sources
# this first, then the role's own file; neither is a program of its own.

# shellcheck shell=sh
# shellcheck disable=SC2154   # (tmpdir, guard: minc-waiter.sh sets them)

# shellcheck disable=SC2034   # (bootscript: the waiter's file uses it)
workdir_files() { # TMPDIR: the paths of the working directory's files we act on
  # Spelled here alone, as lib/boot/workdir.ts spells them (WORKDIR, and its
  # SH_VARIABLES: these variables); test/workdir-layout.test.ts checks
  # that the two agree, and that no other line builds a path on $tmpdir.
  pidfile=$1/pid registered=$1/cleanup waiterfile=$1/waiter lockfile=$1/lock bootscript=$1/minc-core.sh
}

say() { # LINE: into the --debug trace
  [ -z "${MINC_DEBUG:-}" ] || printf '%s\n' "$*" >&2
}

quoted() { # WORD: quoted for the trace as minc quotes (only with --debug: sed is a fork)
  case $1 in
    ''|*[!A-Za-z0-9_./:=@%+,-]*) printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")" ;;
    *) printf '%s' "$1" ;;
  esac
}

# The working directory is one container's at a time (lib/boot/claim.ts): the
# guard, from the moment it is told the directory, and the waiter, for its
# whole life, hold TMPDIR/lock shared (fd 9), and so does the watcher, which
# inherits the waiter's; another minc refuses the directory while any of
# them holds it. The container is not given fd 9, nor is a sleep.
# The lock is opened, never made (flock holds a read-only one as well): minc
# makes it with the directory, its claim in one given (lib/boot/claim.ts). A
# guard told "dir TMPDIR" late, while a minc that failed early removes the
# directory itself, must not make the file again in it (rm would fail:
# Directory not empty).
hold_dir() { # hold the working directory's lock (shared) on fd 9 while we, or what inherits fd 9, live
  command -v flock > /dev/null 2>&1 || return 0
  # Taken on fd 8 first: a claim of minc's that fd 9 may hold goes only once ours is held.
  { command exec 8< "$lockfile"; } 2> /dev/null || return 0   # (gone, or never made: nothing to hold)
  flock -s 8
  exec 9>&8 8>&-
}

# The cleanup chain (lib/boot/cleanup.ts), and the helpers its lines call.

# shellcheck disable=SC2317   # (called by the chain's lines, which eval runs)
cleanup_cages() { # DIR...: remove cgroups once the container's last process has left them
  for cage in "$@"; do
    n=0
    while [ -d "$cage" ] && ! rmdir "$cage" 2>/dev/null && [ "$n" -lt 100 ]; do
      sleep 0.02; n=$((n + 1))
    done
  done
}

cleanup() {
  say "# ==== minc-waiter: the container has ended: undo the boot, last registered first ===="
  if [ -f "$registered" ]; then
    chain=''
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
  { read -r init < "$pidfile"; } 2>/dev/null || init=''
}

until_gone() { # PID: wait (2 s at most) for the container's init to be gone before a cleanup
  n=0
  while [ -n "$1" ] && running "$1" && [ "$n" -lt 100 ]; do sleep 0.02; n=$((n + 1)); done
}

# After the waiter: what its guard (minc's, in the foreground) and its
# watcher (with -B) do when it ends.

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
  gone='' nap='' wake=''
  ! wake_on_signal || wake=1
  trap 'gone=1; [ -z "$wake" ] || echo >&7; [ -z "$nap" ] || kill -KILL "$nap" 2>/dev/null' WINCH
  while [ -z "$gone" ] && running "$guard"; do
    if [ -n "$wake" ]; then
      read -r _ <&7 || :
      continue
    fi
    # shellcheck disable=SC2217   # (sleep reads nothing: the redirections keep our descriptors from it)
    sleep 600 < /dev/null > /dev/null 2>&1 7>&- 9>&- &   # (without the lock: a killed guard's sleep must not keep it)
    nap=$!
    [ -n "$gone" ] || wait "$nap"
    kill -KILL "$nap" 2>/dev/null
  done
  exec 7<&-
}

wake_on_signal() { # fd 7: a pipe of our own, read and written (no EOF), with no name left in the file system
  # Not in the working directory: a guard may get here late, after minc has
  # returned and while the user removes a kept directory (rm -rf after -k or
  # -t); a FIFO made there then, even for a moment, leaves it behind, empty.
  fifo=${TMPDIR:-/tmp}/.minc-wake-$$
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
  # shellcheck disable=SC3013   # (-ef: dash's and busybox's test have it)
  [ /proc/"$init"/ns/pid -ef /proc/$$/ns/pid ] || kill -KILL "$init" 2>/dev/null
}
