# An ftrace script for minc --ftrace: trace every program the container runs
# and every signal sent in it.
#
#   minc --ftrace samples/ftrace/trace-exec.sh -r ROOTFS COMMAND
#   then read the trace: cat /sys/kernel/tracing/trace (mount tracefs there first if needed)
#
# minc-hunt runs it with sh in the tracing directory, after limiting the
# events to the container's processes (set_event_pid, options/event-fork).
# shellcheck shell=sh
echo 0 > tracing_on
echo > trace
echo 1 > events/sched/sched_process_exec/enable
echo 1 > events/signal/signal_generate/enable
echo 1 > tracing_on
