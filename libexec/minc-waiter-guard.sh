# minc-waiter.sh --guard PID [tied]: sourced by minc-waiter.sh, after
# minc-waiter-common.sh.
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
# twice).
#
# The waiter may write its file, run the whole chain (which removes the
# file, with the directory or, kept, alone) and exit between two looks of a
# guard that is not scheduled: the file alone cannot tell "handed over, and
# done" from "minc died before the handover", and taking the one for the
# other would run the chain twice and, with -k, remove the kept directory.
# So the waiter also tells the guard, once its file is written, with a URG
# (minc gives it our PID as MINC_GUARD_PID): a signal that is pending is
# not lost, our trap (set first thing, in minc-waiter.sh) notes it, and a
# guard so told that finds no waiter file knows the chain has run. (URG:
# were it to come before the trap is set, its default action is to ignore
# it; the guard is then as it was without it.) Handed over to a waiter in the foreground (minc's own PID, the
# guard's parent), the guard stays until the waiter ends, which setpriv
# --pdeathsig tells it with a WINCH: if it ended without running the chain
# (SIGKILL), the guard runs it. A waiter in the background (-B) is not
# minc: it starts a watcher of its own (--watch, under setpriv --pdeathsig
# WINCH too), which does the same for it.

# shellcheck shell=sh
# shellcheck disable=SC2154   # (set by minc-waiter.sh and its common part)
trap '' INT TERM HUP QUIT   # minc's signals are minc's; this guard acts on its end
made=''
while read -r what name; do
  case $what in made) made=$name ;; dir) tmpdir=$name; workdir_files "$tmpdir"; hold_dir ;; esac
done
if [ -z "$tmpdir" ]; then
  # minc died between its mktemp and telling the name: only an empty
  # directory can be there, or one with its lock, which minc makes right
  # after it (nothing else: minc tells the name before it writes more).
  [ -z "$made" ] || for dir in "$made"??????; do
    [ ! -d "$dir" ] || { workdir_files "$dir"; rm -f "$lockfile"; rmdir "$dir"; } 2>/dev/null
  done
  exit 0
fi
# (-s, not -e: the file is made empty, then written; minc SIGKILLed in
# between never handed over, and never started the container.)
while [ ! -s "$waiterfile" ] && [ -z "$handed" ] && running "$guard"; do sleep 0.01; done
{ read -r waiter < "$waiterfile"; } 2>/dev/null || waiter=''
# Told, and no waiter file: the waiter has run the chain, which removed it.
[ -n "$waiter" ] || [ -z "$handed" ] || exit 0
if [ -n "$waiter" ]; then
  # Handed over. A waiter in the background is not minc (it has a watcher
  # of its own), and without setpriv nothing would tell us of its end:
  # nothing more to do then.
  [ "$waiter" = "$guard" ] && [ -n "$tied" ] || exit 0
  until_waiter_ends
  clean_after_waiter
fi
# (No directory: no chain left to run; minc's failure, or a chain run, removed it.)
[ -d "$tmpdir" ] || exit 0
had_chain=''; [ ! -s "$registered" ] || had_chain=1   # (made, but empty: minc died in the write of its first line)
cleanup
# A directory minc made, before it wrote the chain that removes it.
case $tmpdir in "$made"??????) [ -n "$had_chain" ] || rm -rf --one-file-system "$tmpdir" ;; esac
exit 0
