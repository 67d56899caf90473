// --ftrace: events of the container's processes only, through minc-hunt.
// The function tracer's pid filter is refused by some kernels (this one):
// minc warns and goes on with events; that part is not tested here.
//
// Tracing is the kernel's global state: the test runs only when nobody
// uses it (it says why it skips otherwise), and puts back what it changed.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { after, before, describe, test } from "node:test";
import { MINC, REPO, cannotBoot, leftovers, minc, rootfs, start } from "./helpers.ts";

/** Run sh in a private mount namespace with tracefs at /tmp/minc-tracefs (the host's mounts stay as they are). */
function tracefs(script: string): string {
  const r = spawnSync(
    "unshare",
    [
      "-m",
      "sh",
      "-c",
      `mkdir -p /tmp/minc-tracefs && mount -t tracefs nodev /tmp/minc-tracefs && cd /tmp/minc-tracefs && ${script}`,
    ],
    { encoding: "utf8" },
  );
  return r.status === 0 ? r.stdout : `FAILED: ${r.stderr}`;
}

/** The tracing files minc-hunt and samples/ftrace/trace-exec.sh write (the trace buffer aside). */
const STATE = ["tracing_on", "current_tracer", "set_event", "set_event_pid", "options/event-fork", "set_ftrace_pid"];

/** Their contents, of those this kernel lets us read. */
function tracingState(): Record<string, string> {
  const out = tracefs(
    `for f in ${STATE.join(" ")}; do v=$(cat "$f" 2>/dev/null) && printf '== %s\\n%s\\n' "$f" "$v"; done; true`,
  );
  const state: Record<string, string> = {};
  for (const [, file, value] of out.matchAll(/^== (\S+)\n([\s\S]*?)(?=^== |(?![\s\S]))/gm)) state[file] = value.trim();
  return state;
}

/** The entries in the trace buffer (its lines but the # header). */
function traceEntries(): number {
  return tracefs("cat trace")
    .split("\n")
    .filter((l) => l && !l.startsWith("#")).length;
}

/** Why the test must not change the tracing state: somebody uses it. */
function inUse(state: Record<string, string>): string | undefined {
  const busy = [
    state.set_event && `events enabled (${state.set_event.split("\n").join(" ")})`,
    state.set_event_pid && `an event pid filter (${state.set_event_pid.split("\n").join(" ")})`,
    state.current_tracer && state.current_tracer !== "nop" && `the ${state.current_tracer} tracer`,
    state.set_ftrace_pid && !/^no pid$/.test(state.set_ftrace_pid) && `a function pid filter (${state.set_ftrace_pid})`,
  ].filter(Boolean);
  const entries = traceEntries();
  if (entries) busy.push(`${entries} entries in the trace buffer, which the test's script clears`);
  return busy.length ? `ftrace is in use on this host: ${busy.join(", ")}` : undefined;
}

const skip =
  cannotBoot() ??
  (tracefs("test -w set_event_pid && echo ok").trim() === "ok" ? undefined : "no writable tracefs on this kernel") ??
  inUse(tracingState());
if (skip) console.log(`# skipping the ftrace tests: ${skip}`);

/** Put a file's saved value back (a list of events or pids: cleared, then each written). */
function restore(file: string, value: string): void {
  const q = (s: string): string => `'${s.replaceAll("'", "'\\''")}'`;
  const script =
    file === "set_event"
      ? [
          `echo > ${file}`,
          ...value
            .split("\n")
            .filter(Boolean)
            .map((e) => `echo ${q(e)} >> ${file}`),
        ].join("; ")
      : file === "set_ftrace_pid" && value === "no pid"
        ? `echo > ${file}`
        : `echo ${q(value.split("\n").join(" "))} > ${file}`;
  tracefs(script);
}

describe("--ftrace", { skip }, () => {
  let found: Record<string, string> = {};
  before(() => {
    found = tracingState();
    assert.ok(found.tracing_on !== undefined, "the tracing state cannot be read");
  });
  after(() => {
    // Put back what the test changed: it found the trace buffer empty, and these files as they were.
    const now = tracingState();
    for (const file of STATE) if (found[file] !== undefined && now[file] !== found[file]) restore(file, found[file]);
    tracefs("echo > trace");
    assert.deepEqual(tracingState(), found, "the tracing state is not as the test found it");
    assert.equal(traceEntries(), 0, "the trace buffer is not empty, as the test found it");
    assert.deepEqual(leftovers(), []);
  });

  test("with samples/ftrace/trace-exec.sh, the trace holds the container's execs and signals, none of the host's", async () => {
    // The container execs (/bin/busybox echo ready) and waits; host processes exec meanwhile (/bin/true),
    // which must not be traced; then the container goes on (a kill, /bin/busybox echo traced): so tracing
    // was on before the host's execs and after them.
    const run = start(
      MINC,
      [
        "--ftrace",
        `${REPO}/samples/ftrace/trace-exec.sh`,
        "-r",
        rootfs(),
        "sh",
        "-c",
        "/bin/busybox echo ready; read go; sleep 5 & kill $!; wait; /bin/busybox echo traced",
      ],
      { stdio: ["pipe", "pipe", "pipe"] },
    );
    try {
      await run.printed("ready");
      for (let i = 0; i < 2; i++) assert.equal(spawnSync("/bin/true").status, 0);
    } finally {
      run.child.stdin!.end("go\n"); // (also when the test failed: the container must not wait on)
    }
    assert.equal(await run.exit(), 0, run.stderr());
    assert.equal(run.stdout(), "ready\ntraced\n");
    assert.match(run.stderr(), /going on with events only|^$/);
    const trace = tracefs("cat trace");
    const busybox = [...trace.matchAll(/sched_process_exec: filename=\/bin\/busybox /g)];
    assert.equal(busybox.length, 2, `the container's execs before the host's and after them: ${trace.slice(0, 3000)}`);
    assert.match(trace, /signal_generate: sig=15 /, "the kill in the container");
    assert.doesNotMatch(trace, /filename=\/(usr\/)?bin\/true/, "a host process is in the container's trace");
  });

  test("--ftrace with a script that does not exist: exit 2", () => {
    const r = minc(["--ftrace", "/no/such/script", "-r", rootfs(), "true"]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /not a file/);
  });
});
