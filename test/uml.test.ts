// Self-test of the user-mode Linux harness (test/uml.ts): the guest has a
// real cgroup v2 hierarchy, runs the host's Node 24, and has the namespaces
// and overlayfs the engine needs; a run leaves nothing behind.
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { test } from "node:test";
import { fields, runInUml, umlUnavailable, type UmlResult } from "./uml.ts";

const reason = umlUnavailable();
if (reason) console.log(`# skipping the UML tests: ${reason}`);

/** Host processes of the guest with this umid that are still running. */
function umlProcesses(umid: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (readFileSync(`/proc/${name}/cmdline`, "utf8").split("\0").includes(`umid=${umid}`)) pids.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

function assertNothingLeft(r: UmlResult): void {
  assert.equal(existsSync(r.dir), false, `${r.dir} left behind`);
  const umid = r.dir.slice(r.dir.lastIndexOf("/") + 1);
  assert.deepEqual(umlProcesses(umid), [], `UML processes of ${umid} left behind`);
}

const PROBE = String.raw`
cg=/sys/fs/cgroup
echo "controllers: $(cat $cg/cgroup.controllers)"
if echo "+memory +pids +cpu" >$cg/cgroup.subtree_control; then echo "subtree_control: $(cat $cg/cgroup.subtree_control)"; else echo "subtree_control: rejected"; fi
echo "node: $(/usr/local/bin/node -e 'console.log(process.version)' 2>&1)"
unshare -iumpf true; echo "unshare: $?"
echo "unshare_pid: $(unshare -iumpf sh -c 'hostname uml-probe; echo $$ $(hostname)')"
if touch /uml-probe 2>/dev/null; then echo "root: writable"; else echo "root: read-only"; fi
mkdir -p /var/run/ov/u /var/run/ov/w /var/run/ov/m
if mount -t overlay overlay -o lowerdir=/etc,upperdir=/var/run/ov/u,workdir=/var/run/ov/w /var/run/ov/m &&
   [ -f /var/run/ov/m/passwd ] && echo hi >/var/run/ov/m/uml-probe && [ "$(cat /var/run/ov/u/uml-probe)" = hi ] && [ ! -e /etc/uml-probe ]
then echo "overlay: ok"; else echo "overlay: failed"; fi
mkdir $cg/probe
echo 32M >$cg/probe/memory.max
echo 20 >$cg/probe/pids.max
echo "50000 100000" >$cg/probe/cpu.max
echo "limits: $(cat $cg/probe/memory.max) $(cat $cg/probe/pids.max) $(cat $cg/probe/cpu.max)"
sh -c 'echo $$ >/sys/fs/cgroup/probe/cgroup.procs && exec /usr/local/bin/node -e "const a = []; for (let i = 0; i < 200; i++) a.push(Buffer.alloc(1 << 20, 1)); console.log(\"survived\")"'
echo "hog: $?"
echo "oom_kill: $(sed -n 's/^oom_kill //p' $cg/probe/memory.events)"
echo to-stderr >&2
exit 7
`;

test("UML guest: cgroup v2, Node 24, namespaces, overlayfs", { skip: reason }, async (t) => {
  const r = await runInUml(PROBE);
  console.log(`# UML boot + probe + poweroff: ${r.ms} ms`);
  const f = fields(r.output);
  const why = `\n--- output:\n${r.output}\n--- console:\n${r.console}`;
  assert.equal(r.timedOut, false, why);

  await t.test("carries back the exit status, stdout and stderr", () => {
    assert.equal(r.status, 7, why);
    assert.match(r.output, /^to-stderr$/m, why);
  });
  await t.test("cgroup2 at /sys/fs/cgroup has cpu io memory pids", () => {
    const have = (f.get("controllers") ?? "").split(" ");
    for (const c of ["cpu", "io", "memory", "pids"]) assert.ok(have.includes(c), `no ${c} controller${why}`);
    console.log(`# guest cgroup v2 controllers: ${f.get("controllers")}`);
  });
  await t.test("the root accepts +memory +pids +cpu in cgroup.subtree_control", () => {
    assert.deepEqual((f.get("subtree_control") ?? "").split(" ").sort(), ["cpu", "memory", "pids"], why);
  });
  await t.test("a child cgroup takes memory.max, pids.max, cpu.max", () => {
    assert.equal(f.get("limits"), "33554432 20 50000 100000", why);
  });
  await t.test("memory.max OOM-kills a 200 MB hog", () => {
    assert.equal(f.get("hog"), "137", why);
    assert.ok(Number(f.get("oom_kill")) >= 1, why);
  });
  await t.test("the host's /usr/local/bin/node is Node 24", () => {
    assert.match(f.get("node") ?? "", /^v24\./, why);
  });
  await t.test("unshare -iumpf works (new PID and UTS namespaces)", () => {
    assert.equal(f.get("unshare"), "0", why);
    assert.equal(f.get("unshare_pid"), "1 uml-probe", why);
  });
  await t.test("overlayfs mounts over a hostfs lowerdir", () => {
    assert.equal(f.get("overlay"), "ok", why);
  });
  await t.test("the host's root is read-only in the guest", () => {
    assert.equal(f.get("root"), "read-only", why);
  });
  await t.test("leaves no UML process and no temp dir", () => {
    assertNothingLeft(r);
  });
});

// The 4 s count from "started": the guest's boot, however slow, is not in them.
test("UML guest: killed at the timeout, nothing left behind", { skip: reason }, async () => {
  const r = await runInUml("echo started; sleep 600", { timeoutMs: 4000, timeoutFrom: "started" });
  assert.equal(r.timedOut, true);
  assert.equal(r.status, null);
  assert.equal(r.output, "started\n", r.console);
  assertNothingLeft(r);
});
