#!/bin/bash
# bench/start.sh: container start latency of minc, against baselines measured
# in the same run on the same busybox rootfs.
#
#   bench/start.sh [-n RUNS]      (or BENCH_RUNS=RUNS; default 20; needs root)
#
# Each round runs every command once, /bin/true in the container, output to
# /dev/null, in a rotating order so that machine noise hits all of them alike;
# one warm-up round is not counted. The table gives the MEDIAN wall time and
# the median user+sys CPU time (the command and every descendant it reaped)
# in ms, and how many times slower minc is than each baseline:
#   raw floor    unshare -iumpf chroot ROOTFS /bin/true: the namespaces alone
#   bwrap        bubblewrap with its own /proc and /dev (skipped if absent)
#   shell MINCS  $MINCS_SHELL_DIR/minc, only if that variable names a checkout
#                of the original shell MINCS (github mhiramat/mincs)
#   --privileged minc unconfined: what the default confinement (capabilities,
#                seccomp filter, masks) costs is ours / --privileged
# "ours / X = 4.10x" means minc takes 4.1 times as long as X to run /bin/true.
# Then it prints the resident memory (VmRSS) of the host-side processes that
# wait while a container runs `sleep 3` (minc's waiter and unshare; not the
# container's own processes, which live in another PID namespace).
# No thresholds: it exits 1 only if a command fails.
set -eu
cd "$(dirname "$0")/.."
RUNS=${BENCH_RUNS:-20}
while getopts n:h opt; do
  case $opt in
    n) RUNS=$OPTARG ;;
    *) echo "usage: $0 [-n RUNS]" >&2; exit 2 ;;
  esac
done
case $RUNS in ''|*[!0-9]*|0) echo "$0: RUNS must be a positive integer" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "$0: must run as root (namespaces, mounts)" >&2; exit 2; }
[ -x bin/minc ] || make >&2

WORK=$(mktemp -d /tmp/minc-bench.XXXXXX)
cleanup() { # never follow a mount left behind into the host's files
  if grep -q " $WORK" /proc/self/mountinfo; then echo "left $WORK (still mounted)" >&2
  else rm -rf --one-file-system "$WORK"; fi
}
trap cleanup EXIT

# The same busybox rootfs as the tests.
ROOTFS=$(sh samples/scripts/busybox-rootfs.sh "$WORK/rootfs" | tail -n 1)
from=samples/scripts/busybox-rootfs.sh
[ -e "$ROOTFS/bin/true" ] || [ -L "$ROOTFS/bin/true" ] || { echo "no /bin/true in rootfs '$ROOTFS'" >&2; exit 1; }
echo "rootfs: $ROOTFS (from $from)"
echo "host:   $(uname -sr), $(nproc) CPUs; $RUNS rounds + 1 warm-up"

# The commands, as NAME, ARGV... and ";" between them.
set -- "raw floor" unshare -iumpf chroot "$ROOTFS" /bin/true ";"
if command -v bwrap >/dev/null; then
  set -- "$@" bwrap bwrap --bind "$ROOTFS" / --proc /proc --dev /dev --unshare-all --share-net /bin/true ";"
else
  echo "bwrap: skipped (bwrap not installed; Debian package bubblewrap)"
fi
SHELL_MINC=
if [ -n "${MINCS_SHELL_DIR:-}" ]; then
  if [ -x "$MINCS_SHELL_DIR/minc" ] && [ -d "$MINCS_SHELL_DIR/libexec" ]; then
    SHELL_MINC=$MINCS_SHELL_DIR/minc
    set -- "$@" "shell MINCS" "$SHELL_MINC" -r "$ROOTFS" /bin/true ";"
  else
    echo "shell MINCS: skipped ($MINCS_SHELL_DIR has no executable minc and libexec/)"
  fi
fi
set -- "$@" ours bin/minc -r "$ROOTFS" /bin/true ";" --privileged bin/minc --privileged -r "$ROOTFS" /bin/true ";"
set -- "$@" --debug bin/minc --debug -r "$ROOTFS" /bin/true ";"

python3 - "$RUNS" "$WORK/summary" "$@" <<'EOF'
import os, resource, statistics, subprocess, sys, time
runs, summary, args = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
cmds, cur = [], []
for a in args:
    if a == ";": cmds.append((cur[0], cur[1:])); cur = []
    else: cur.append(a)
wall = {n: [] for n, _ in cmds}; cpu = {n: [] for n, _ in cmds}
def cputime():
    r = resource.getrusage(resource.RUSAGE_CHILDREN); return r.ru_utime + r.ru_stime
for rnd in range(runs + 1):  # round 0 is the warm-up
    k = rnd % len(cmds)
    for name, argv in cmds[k:] + cmds[:k]:
        c0, t0 = cputime(), time.perf_counter_ns()
        rc = subprocess.call(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t1, c1 = time.perf_counter_ns(), cputime()
        if rc != 0:
            print(f"FAILED: {name} exited {rc}: {' '.join(argv)}", file=sys.stderr)
            err = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True).stderr
            print("".join(err.splitlines(True)[-10:]), end="", file=sys.stderr)
            sys.exit(1)
        if rnd: wall[name].append((t1 - t0) / 1e6); cpu[name].append((c1 - c0) * 1e3)
med = {n: statistics.median(v) for n, v in wall.items()}
mcpu = {n: statistics.median(v) for n, v in cpu.items()}
print(f"\n{'command':<12} {'wall ms':>8} {'min':>7} {'max':>7} {'cpu ms':>7}  ratio")
lines = []
for name, _ in cmds:
    if name == "ours": ratio = ""
    elif name == "--debug": ratio = f"--debug / plain = {med[name] / med['ours']:.2f}x"
    elif name == "--privileged": ratio = f"confined (ours) / --privileged = {med['ours'] / med[name]:.2f}x (target: at most 1.05x)"
    else: ratio = f"ours / {name} = {med['ours'] / med[name]:.2f}x"
    if ratio: lines.append(ratio)
    print(f"{name:<12} {med[name]:8.2f} {min(wall[name]):7.2f} {max(wall[name]):7.2f} {mcpu[name]:7.2f}  {ratio}".rstrip())
print(f"\nours CPU (user+sys, median) = {mcpu['ours']:.1f} ms of {med['ours']:.1f} ms wall")
with open(summary, "w") as f: f.write("".join(f"summary: {l}\n" for l in lines))
EOF

host_rss() { # LABEL COMMAND...: VmRSS of COMMAND and its host-side descendants
  local label=$1 pid ns p pp s todo rss total=0 list='' cmd
  shift; cmd="$*"
  "$@" >/dev/null 2>&1 </dev/null & pid=$!; sleep 1
  ns=$(readlink "/proc/$pid/ns/pid") || { echo "$label: exited within 1 s" >&2; exit 1; }
  todo=" $pid "
  while [ -n "${todo// }" ]; do
    # shellcheck disable=SC2086 # todo is a list of pids, split on purpose
    set -- $todo; p=$1; shift; todo=" $* "
    [ "$(readlink "/proc/$p/ns/pid" 2>/dev/null)" = "$ns" ] || continue # inside
    rss=$(sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$p/status" 2>/dev/null) || continue
    total=$((total + ${rss:-0}))
    list="$list $(cat "/proc/$p/comm" 2>/dev/null)[$p]=${rss:-0}kB"
    for s in /proc/[0-9]*/stat; do # children: ppid is field 4 (after "comm)")
      pp=$(cat "$s" 2>/dev/null) || continue; pp=${pp##*) }; pp=${pp#* }
      [ "${pp%% *}" = "$p" ] && { s=${s#/proc/}; todo="$todo ${s%/stat} "; }
    done
  done
  printf '%-12s %6d kB:%s\n' "$label" "$total" "$list"
  wait "$pid" || { echo "FAILED: $label exited $?: $cmd" >&2; exit 1; }
}
echo
echo "host-side RSS while a container runs 'sleep 3' (sampled after 1 s):"
host_rss ours bin/minc -r "$ROOTFS" sleep 3
[ -z "$SHELL_MINC" ] || host_rss "shell MINCS" "$SHELL_MINC" -r "$ROOTFS" sleep 3
echo
cat "$WORK/summary"
