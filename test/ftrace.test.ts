// --ftrace: events of the container's processes only, through minc-hunt.
// The function tracer's pid filter is refused by some kernels (this one):
// minc warns and goes on with events; that part is not tested here.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { after, describe, test } from "node:test";
import { REPO, cannotBoot, leftovers, minc, rootfs } from "./helpers.ts";

/** Run sh in a private mount namespace with tracefs at /t (the host's mounts stay as they are). */
function tracefs(script: string): string {
  const r = spawnSync("unshare", ["-m", "sh", "-c", `mkdir -p /tmp/minc-tracefs && mount -t tracefs nodev /tmp/minc-tracefs && cd /tmp/minc-tracefs && ${script}`], { encoding: "utf8" });
  return r.status === 0 ? r.stdout : `FAILED: ${r.stderr}`;
}
const skip = cannotBoot() ?? (tracefs("test -w set_event_pid && echo ok").trim() === "ok" ? undefined : "no writable tracefs on this kernel");
if (skip) console.log(`# skipping the ftrace tests: ${skip}`);

describe("--ftrace", { skip }, () => {
  after(() => {
    // Tracing is global: put back what the test changed.
    tracefs("echo 0 > events/sched/sched_process_exec/enable; echo 0 > events/signal/signal_generate/enable; echo > set_event_pid; echo 0 > options/event-fork; echo > trace; echo 1 > tracing_on");
    assert.deepEqual(leftovers(), []);
  });

  test("with samples/ftrace/trace-exec.sh, the trace holds the container's execs and signals, none of the host's", () => {
    // Host processes that exec while the container runs: they must not be traced.
    spawn("sh", ["-c", "sleep 0.8; /bin/true; /bin/true"], { stdio: "ignore" });
    const r = minc(["--ftrace", `${REPO}/samples/ftrace/trace-exec.sh`, "-r", rootfs(), "sh", "-c", "sleep 1.5; sleep 5 & kill $!; wait; /bin/busybox echo traced"]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, "traced\n");
    assert.match(r.stderr, /going on with events only|^$/);
    const trace = tracefs("cat trace");
    assert.match(trace, /sched_process_exec: filename=\/bin\/busybox/, trace.slice(0, 2000));
    assert.match(trace, /signal_generate: sig=15 /, "the kill in the container");
    assert.doesNotMatch(trace, /filename=\/(usr\/)?bin\/true/, "a host process is in the container's trace");
  });

  test("--ftrace with a script that does not exist: exit 2", () => {
    const r = minc(["--ftrace", "/no/such/script", "-r", rootfs(), "true"]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /not a file/);
  });
});
