// The working directory: removed, kept (-k), reused (-t), and --direct.
import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { after, describe, test } from "node:test";
import { vethName } from "../lib/net/dens.ts";
import {
  MINC,
  REPO,
  allLeftovers,
  cages,
  cannotBoot,
  cleanEnv,
  ended,
  hasTool,
  minc,
  rootfs,
  runtimeDirs,
  settled,
  waitFor,
} from "./helpers.ts";

const skip = cannotBoot();
const noFlock = hasTool("flock") ? undefined : "needs flock";
const densMissing = ["ip", "iptables", "iptables-save"].filter((t) => !hasTool(t));
const noDens = densMissing.length
  ? `needs ${densMissing.join(", ")}`
  : !existsSync("/sys/fs/cgroup/pids/cgroup.procs")
    ? "needs the cgroup v1 pids controller"
    : undefined;
if (noDens) console.log(`# skipping the -t test on a -n dens --pid-max container: ${noDens}`);

/** What a container's files say, to see that a refused minc changed none of them. */
function snapshot(dir: string): Record<string, string> {
  const files: Record<string, string> = {};
  for (const name of ["cleanup", "waiter", "pid", "hosts", "resolv.conf", "settings", "minc-core.sh"]) {
    files[name] = existsSync(`${dir}/${name}`) ? readFileSync(`${dir}/${name}`, "utf8") : "(none)";
  }
  return files;
}

/** What the host has of the container of a working directory minc made: "netns: ...", "veth: ...", "lease: ...", "rule: ...", "cage: ...". */
function hostTraces(dir: string): string[] {
  const netns = /\/(minc\d+)-/.exec(dir)![1]; // (minc's PID names the netns and dens's id)
  const sh = (cmd: string): string[] =>
    (spawnSync("sh", ["-c", cmd], { encoding: "utf8" }).stdout ?? "").split("\n").filter((l) => l);
  const id = dir.split("/").pop()!;
  const tagged = (kind: string, lines: string[]): string[] => lines.map((l) => `${kind}: ${l}`);
  return [
    ...tagged(
      "netns",
      sh("ip netns list").filter((l) => l.split(" ")[0] === netns),
    ),
    ...tagged("veth", sh(`ip -o link show ${vethName(netns)} 2>/dev/null`)),
    ...tagged(
      "lease",
      existsSync("/var/run/minc.lease")
        ? readFileSync("/var/run/minc.lease", "utf8")
            .split("\n")
            .filter((l) => l.split(" ").includes(netns))
        : [],
    ),
    ...tagged(
      "rule",
      sh("iptables-save 2>/dev/null").filter((l) => l.includes(`minc:${netns} `)),
    ),
    ...tagged(
      "cage",
      cages().filter((c) => c.endsWith(`/${id}`)),
    ),
  ];
}

/**
 * A command for a container that runs until the test lets it end: it binds
 * GATE (-b GATE), says it runs in GATE/running, and ends once GATE/go is there.
 */
function gated(gate: string): string[] {
  return ["-b", gate, "sh", "-c", `touch ${gate}/running; while [ ! -e ${gate}/go ]; do sleep 0.05; done`];
}

function listing(dir: string): string {
  return existsSync(dir) ? `${dir}: ${readdirSync(dir).join(" ")}` : `${dir} is gone`;
}

/**
 * A -B -k container runs; minc -t on its directory is refused with one
 * line and exit 2, touching none of its files; the container then ends and
 * its cleanup chain undoes everything (and, last, removes its own files).
 */
async function refusedWhileRunning(options: string[]): Promise<void> {
  const gate = mkdtempSync("/tmp/minc-test-gate-");
  let dir = "";
  try {
    const r = minc(["-B", "-k", "-r", rootfs(), ...options, ...gated(gate)]);
    assert.equal(r.status, 0, r.stderr);
    dir = /See (\S+)\/log for output/.exec(r.stdout)![1];
    // (its command runs: the boot, and what it made on the host, is done)
    await waitFor(`the container of ${dir} to run its command`, () => existsSync(`${gate}/running`), {
      saw: () =>
        `${listing(dir)}; log ${JSON.stringify(existsSync(`${dir}/log`) ? readFileSync(`${dir}/log`, "utf8") : "")}`,
    });
    const traces = hostTraces(dir);
    const before = snapshot(dir);
    const second = minc(["-r", rootfs(), "-t", dir, "echo", "second"]);
    assert.equal(second.status, 2, second.stderr);
    assert.match(second.stderr, /^minc: tempdir \S+: in use by a running container \(its waiter is PID \d+\)\n$/);
    assert.equal(second.stdout, "");
    assert.deepEqual(snapshot(dir), before, "the refused minc changed the running container's files");
    if (options.includes("dens")) {
      const kinds = new Set(traces.map((t) => t.split(":")[0]));
      assert.deepEqual(
        ["netns", "veth", "lease", "cage"].filter((k) => !kinds.has(k)),
        [],
        `missing on the host while it runs: ${traces.join("; ")}`,
      );
    }
    writeFileSync(`${gate}/go`, "");
    await ended(dir);
    assert.deepEqual(await settled(() => hostTraces(dir)), [], "left on the host");
    // (the chain's last step removes these: it ran)
    assert.deepEqual(
      ["cleanup", "pid", "waiter"].filter((f) => existsSync(`${dir}/${f}`)),
      [],
      "the cleanup chain did not run",
    );
  } finally {
    writeFileSync(`${gate}/go`, ""); // (the container ends, should the test have failed before)
    if (dir) {
      await ended(dir);
      rmSync(dir, { recursive: true, force: true });
    }
    rmSync(gate, { recursive: true, force: true });
  }
}

describe("the working directory", { skip }, () => {
  after(async () => assert.deepEqual(await settled(allLeftovers), [], "a container left something behind"));

  test("without -k or -t nothing is left in the runtime dir", () => {
    const before = runtimeDirs();
    const r = minc(["-r", rootfs(), "sh", "-c", "echo x > /root/y"]);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(runtimeDirs(), before);
  });

  test("-k keeps it and says how to reuse it; -t reuses it and sees earlier writes", () => {
    const r = minc(["-k", "-r", rootfs(), "sh", "-c", "echo remembered > /root/note"]);
    assert.equal(r.status, 0, r.stderr);
    // On stdout, naming minc as it was called, as the shell MINCS says it (its scripts read it there).
    const hint = new RegExp(`^To reuse this, run: ${MINC} -r (\\S+) -t (\\S+)$`, "m").exec(r.stdout);
    assert.ok(hint, `no reuse hint in: ${r.stdout}`);
    const tmpdir = hint[2];
    try {
      assert.equal(hint[1], rootfs());
      assert.equal(readFileSync(`${tmpdir}/storage/root/note`, "utf8"), "remembered\n");
      const again = minc(["-r", rootfs(), "-t", tmpdir, "cat", "/root/note"]);
      assert.equal(again.status, 0, again.stderr);
      assert.equal(again.stdout, "remembered\n");
      assert.ok(existsSync(tmpdir), "-t must keep the directory");
      assert.equal(existsSync(`${tmpdir}/pid`), false, "the pid file outlived the container");
    } finally {
      rmSync(tmpdir, { recursive: true });
    }
  });

  test("-t remembers the --name given before", () => {
    const tmpdir = mkdtempSync("/tmp/minc-test-t-");
    try {
      assert.equal(minc(["-r", rootfs(), "-t", tmpdir, "--name", "first", "true"]).status, 0);
      const r = minc(["-r", rootfs(), "-t", tmpdir, "hostname"]);
      assert.equal(r.stdout.trim(), "first");
    } finally {
      rmSync(tmpdir, { recursive: true });
    }
  });

  test("-t on the directory of a running container: refused, exit 2, one line; the container still cleans up after itself", async () => {
    await refusedWhileRunning([]);
  });

  test("-t on a running -n dens --pid-max container's directory: its netns, lease, rules and cage still go when it ends", {
    skip: noDens,
  }, async () => {
    await refusedWhileRunning(["-n", "dens", "--pid-max", "30"]);
  });

  test("-t on a directory whose lock another holds (a container starting or being cleaned up): refused after a grace, nothing written", {
    skip: noFlock,
  }, async () => {
    const tmpdir = mkdtempSync("/tmp/minc-test-t-");
    // (it holds the lock until its stdin closes)
    const holder = spawn("flock", ["-s", `${tmpdir}/lock`, "cat"], { stdio: ["pipe", "ignore", "ignore"] });
    try {
      await waitFor(
        `flock to hold ${tmpdir}/lock`,
        () => existsSync(`${tmpdir}/lock`) && spawnSync("flock", ["-xn", `${tmpdir}/lock`, "true"]).status === 1,
        { saw: () => listing(tmpdir) },
      );
      const started = Date.now();
      const r = minc(["-r", rootfs(), "-t", tmpdir, "true"]);
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, /^minc: tempdir \S+: in use by another container \(starting, or being cleaned up\)\n$/);
      assert.ok(Date.now() - started >= 1900, "refused before the grace for an ending container");
      assert.deepEqual(readdirSync(tmpdir), ["lock"]);
    } finally {
      holder.stdin?.end();
      rmSync(tmpdir, { recursive: true });
    }
  });

  test("-t: a stale waiter file (its PID another program's now) does not keep the directory", () => {
    const tmpdir = mkdtempSync("/tmp/minc-test-t-");
    try {
      writeFileSync(`${tmpdir}/waiter`, `${process.pid}\n`);
      const r = minc(["-r", rootfs(), "-t", tmpdir, "echo", "mine"]);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout, "mine\n");
    } finally {
      rmSync(tmpdir, { recursive: true });
    }
  });

  test("-t ID of a running container of the store: refused", async () => {
    const store = mkdtempSync("/tmp/minc-test-store-");
    const env = cleanEnv({ MINCS_DIR: store });
    const gate = mkdtempSync("/tmp/minc-test-gate-");
    let dir = "";
    try {
      const i = spawnSync(`${REPO}/bin/marten`, ["import", rootfs(), "--name", "claimed"], { encoding: "utf8", env });
      assert.equal(i.status, 0, i.stderr);
      const b = minc(["-B", "-r", "claimed", ...gated(gate)], { env });
      assert.equal(b.status, 0, b.stderr);
      const id = /^([0-9a-f]{64})$/m.exec(b.stdout)![1];
      dir = `${store}/containers/${id}`;
      await waitFor(`the container of ${dir} to run its command`, () => existsSync(`${gate}/running`), {
        saw: () => listing(dir),
      });
      const r = minc(["-t", id.slice(0, 12), "true"], { env });
      assert.equal(r.status, 2, r.stderr);
      assert.match(
        r.stderr,
        new RegExp(
          `^minc: container ${id.slice(0, 12)}: in use by a running container \\(its waiter is PID \\d+\\)\n$`,
        ),
      );
      writeFileSync(`${gate}/go`, "");
      await ended(dir);
      assert.equal(
        minc(["-t", id.slice(0, 12), "true"], { env }).status,
        0,
        "the ended container's directory is free again",
      );
    } finally {
      writeFileSync(`${gate}/go`, ""); // (the container ends, should the test have failed before)
      if (dir) await ended(dir);
      rmSync(store, { recursive: true, force: true });
      rmSync(gate, { recursive: true, force: true });
    }
  });

  test("--direct never writes into the rootdir, but the command may", () => {
    const copy = mkdtempSync("/tmp/minc-test-direct-");
    try {
      cpSync(rootfs(), copy, { recursive: true, verbatimSymlinks: true });
      const listing = (): string => execFileSync("find", [copy, "-printf", "%p %y %m %s %T@\\n"], { encoding: "utf8" });
      const before = listing();
      const r = minc(["--direct", "-r", copy, "ps", "-o", "pid,comm"]);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /^\s*1 ps$/m);
      assert.equal(listing(), before, "minc changed the rootdir in direct mode");
      const w = minc(["-D", "-r", copy, "sh", "-c", "echo mine > /root/direct-write"]);
      assert.equal(w.status, 0, w.stderr);
      assert.equal(readFileSync(`${copy}/root/direct-write`, "utf8"), "mine\n");
    } finally {
      rmSync(copy, { recursive: true });
    }
  });

  test("--direct refuses a bind target missing from the rootdir, leaving nothing", () => {
    const r = minc(["-D", "-r", rootfs(), "-b", "/etc/hostname:/no/such/place", "true"]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /does not exist in the rootdir/);
    assert.equal(existsSync(`${rootfs()}/no`), false);
  });
});
