# minc-waiter.sh --watch TMPDIR PID: sourced by minc-waiter.sh, after
# minc-waiter-common.sh.
#
# The watcher of a waiter in the background (-B), PID, which started it
# under setpriv --pdeathsig WINCH: it does for that waiter what minc's
# guard does for one in the foreground (see minc-waiter-guard.sh), and
# runs the cleanup chain should the waiter end without running it.

# shellcheck shell=sh

trap '' INT TERM HUP QUIT   # the waiter's signals are the waiter's; this acts on its end
until_waiter_ends
clean_after_waiter
