// Resource limits on a real cgroup v2 hierarchy: the host has only v1, so
// minc runs inside a user-mode Linux guest booted with cgroup_no_v1=all
// (test/uml.ts), on the host's files, and reports back "key: value" lines.
import assert from "node:assert/strict";
import { test } from "node:test";
import { cannotBoot, REPO, rootfs } from "./helpers.ts";
import { fields, runInUml, umlUnavailable } from "./uml.ts";

const skip = cannotBoot() ?? umlUnavailable();
if (skip) console.log(`# skipping the cgroup v2 test: ${skip}`);

// Node starts in about a second in the guest, so one boot checks everything.
// minc's working dirs are the guest's /var/run (a tmpfs of its own: no
// XDG_RUNTIME_DIR reaches a guest's init, and none is wanted here).
// Waits are for events (the command's file in a bound dir), bounded by
// the clock, and say what they saw.
const SCRIPT = (root: string): string => `
unset XDG_RUNTIME_DIR
cd ${REPO}
R=${root}
hog="dd if=/dev/zero of=/dev/null bs=200M count=1"
echo "controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
bin/minc --debug --mem-limit 64M --mem-kmem 8M -r $R $hog > /dev/null 2> /var/run/trace
echo "limited: $?"
echo "hierarchy: $(grep -m1 '^# Use cgroup' /var/run/trace)"
echo "kmem warning: $(grep -c 'v2 has no separate kernel memory limit' /var/run/trace)"
echo "memory.max line: $(grep -c 'memory.max$' /var/run/trace)"
bin/minc -r $R $hog > /dev/null 2>&1
echo "free: $?"
# (the sleeps last until PID 1 ends, however slow the forks: the namespace goes with it)
bin/minc --pid-max 5 -r $R sh -c 'for i in 1 2 3 4 5 6 7; do sleep 600 & done' 2> /var/run/forks
echo "fork failed: $(grep -c "can't fork" /var/run/forks)"
# The command makes /ctl/up once it runs, PID 1 having stepped into its
# cage at the end of the boot; it ends when /ctl/stop appears.
mkdir -p /var/run/ctl
bin/minc --cpu-quota 50000 --cpu-shares 1024 --mem-limit 32M --mem-swap 48M -b /var/run/ctl:/ctl -r $R \\
  sh -c 'touch /ctl/up; while [ ! -e /ctl/stop ]; do sleep 0.1; done' &
minc=$!
end=$(($(date +%s) + 150))
while [ ! -e /var/run/ctl/up ] && kill -0 $minc 2>/dev/null && [ $(date +%s) -lt $end ]; do sleep 0.1; done
if [ -e /var/run/ctl/up ]; then echo "command up: yes"
elif kill -0 $minc 2>/dev/null; then echo "command up: not after 150 s"
else echo "command up: minc ended first"; fi
id=$(ls /sys/fs/cgroup/mincs 2>/dev/null | grep minc | head -n 1)
echo "cage: $id"
cg=/sys/fs/cgroup/mincs/$id
echo "cpu.max: $(cat $cg/cpu.max)"
echo "cpu.weight: $(cat $cg/cpu.weight)"
echo "memory.max: $(cat $cg/memory.max)"
echo "memory.swap.max: $(cat $cg/memory.swap.max 2>/dev/null || echo none)"
echo "pid 1 caged: $(grep -cx "$(cat /var/run/$id/pid)" $cg/cgroup.procs)"
echo "subtree: $(cat /sys/fs/cgroup/mincs/cgroup.subtree_control)"
touch /var/run/ctl/stop
wait $minc
echo "caged exit: $?"
echo "cages left: $(find /sys/fs/cgroup/mincs -mindepth 1 -maxdepth 1 -type d | wc -l)"
echo "workdirs left: $(ls /var/run | grep -c '^minc[0-9]')"
`;

// Four containers in a guest: about a minute, several on a busy machine.
test("cgroup v2: memory.max OOM-kills the hog, pids.max stops forks, cpu.max and the rest are written", {
  skip,
  timeout: 480_000,
}, async () => {
  const r = await runInUml(SCRIPT(rootfs()), { timeoutMs: 420_000 });
  const f = fields(r.output);
  const why = `\n--- guest output ---\n${r.output}\n--- console (tail) ---\n${r.console.slice(-2000)}`;
  assert.equal(r.status, 0, why);
  assert.match(f.get("controllers") ?? "", /memory/, why);
  assert.equal(f.get("limited"), "137", why);
  assert.match(f.get("hierarchy") ?? "", /cgroup v2 at \/sys\/fs\/cgroup/, why);
  assert.equal(f.get("kmem warning"), "1", why);
  assert.equal(f.get("memory.max line"), "1", why);
  assert.equal(f.get("free"), "0", why);
  assert.notEqual(f.get("fork failed"), "0", why);
  assert.equal(f.get("command up"), "yes", why);
  assert.equal(f.get("cpu.max"), "50000 100000", why);
  assert.equal(f.get("cpu.weight"), "39", why);
  assert.equal(f.get("memory.max"), String(32 * 1024 * 1024), why);
  const swap = f.get("memory.swap.max");
  if (swap !== "none") assert.equal(swap, String(16 * 1024 * 1024), why);
  assert.equal(f.get("pid 1 caged"), "1", why);
  assert.match(f.get("subtree") ?? "", /memory/, why);
  assert.equal(f.get("caged exit"), "0", why);
  assert.equal(f.get("cages left"), "0", why);
  assert.equal(f.get("workdirs left"), "0", why);
});
