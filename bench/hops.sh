#!/bin/bash
# bench/hops.sh: where the time of one container start goes, program by
# program, from the kernel's own record of each exec, fork and exit.
#
#   bench/hops.sh [-n RUNS] [MINC_ARGS...]     (root, perf; default: -r BUSYBOX /bin/true)
#   MINC=/path/to/shell-mincs/minc bench/hops.sh    the same for another minc
#
# Runs `minc MINC_ARGS` RUNS times (default 5) after one warm-up, under
# `perf record` of the sched_process_exec/fork/exit tracepoints, and prints
# for the median run (by total time) each program that ran, in the order it
# started, with when it started and how long it lived, in ms from minc's
# start; then the number of programs run. A Node program's time includes its
# own start (about 20 ms on the development machines).
set -eu
cd "$(dirname "$0")/.."
RUNS=5
while getopts n:h opt; do
  case $opt in
    n) RUNS=$OPTARG ;;
    *) echo "usage: $0 [-n RUNS] [MINC_ARGS...]" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
case $RUNS in ''|*[!0-9]*|0) echo "$0: RUNS must be a positive integer" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "$0: must run as root (namespaces, mounts)" >&2; exit 2; }
command -v perf >/dev/null || { echo "$0: needs perf (Debian package linux-perf)" >&2; exit 2; }
MINC=${MINC:-bin/minc}
[ "$MINC" != bin/minc ] || [ -x bin/minc ] || make >&2

WORK=$(mktemp -d /tmp/minc-hops.XXXXXX)
trap 'rm -rf --one-file-system "$WORK"' EXIT
if [ $# -eq 0 ]; then
  ROOTFS=$(sh samples/scripts/busybox-rootfs.sh "$WORK/rootfs" | tail -n 1)
  set -- -r "$ROOTFS" /bin/true
fi
"$MINC" "$@" >/dev/null 2>&1 || true   # warm-up (page cache, compile cache)

for i in $(seq "$RUNS"); do
  perf record -q -o "$WORK/perf.$i" -e sched:sched_process_exec -e sched:sched_process_fork -e sched:sched_process_exit -a -- \
    "$MINC" "$@" >/dev/null 2>&1 || true
  perf script -i "$WORK/perf.$i" -F pid,time,event,trace 2>/dev/null > "$WORK/events.$i"
done

python3 - "$WORK" "$RUNS" <<'EOF'
import re, statistics, sys
work, runs = sys.argv[1], int(sys.argv[2])
def timeline(path):
    starts, progs, ends, t0 = {}, [], {}, None
    for line in open(path):
        m = re.match(r"\s*(\d+)\s+([\d.]+):\s+sched:sched_process_(\w+):\s+(.*)", line)
        if not m: continue
        pid, t, ev, rest = int(m[1]), float(m[2]) * 1000, m[3], m[4]
        if ev == "exec":
            name = re.search(r"filename=(\S+)", rest)[1]
            if name.endswith("/perf"): continue
            if t0 is None: t0 = t
            progs.append([pid, name, t - t0, None])
        elif ev == "exit" and t0 is not None and "group_dead=true" in rest:
            ends[pid] = t - t0
    # A program lives until the next exec of its PID, or its PID's exit.
    for i, p in enumerate(progs):
        nxt = next((q[2] for q in progs[i + 1:] if q[0] == p[0]), None)
        p[3] = nxt if nxt is not None else ends.get(p[0])
    total = max([e for e in ends.values()] + [0])
    return total, progs
runs_ = sorted((timeline(f"{work}/events.{i}") for i in range(1, runs + 1)), key=lambda r: r[0])
total, progs = runs_[len(runs_) // 2]
print(f"median run of {runs}: {total:.1f} ms from minc's exec to the last exit")
print(f"{'start':>7} {'lived':>6}  program")
for pid, name, start, end in progs:
    lived = f"{end - start:6.1f}" if end is not None else "     ?"
    print(f"{start:7.1f} {lived}  {name} [{pid}]")
print(f"{len(progs)} programs run")
EOF
