// docs/boot.md's trace excerpts are what the code prints now: the same
// generation as `make docs`, into memory, compared with the document (less
// what other containers on the host put in the traces: their leases).
import assert from "node:assert/strict";
import childProcess from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { syncBuiltinESMExports } from "node:module";
import { after, describe, test } from "node:test";
import { bootRootfs, excerptDiff, fill, normalise, rawTrace, runsOf, select, type BootEnv } from "../docs/boot-doc.ts";
import { cages, cannotBoot, freePort, MINC, netLeftovers, REPO, settled } from "./helpers.ts";

/**
 * body's value; the PIDs of the minc processes it ran go into pids. The
 * document's boots run as make docs runs them, in /var/run (and /tmp for
 * --nopriv), not in this test file's runtime dir: their working dirs, named
 * after these PIDs, tell them from other containers there.
 */
function recordingMincs<T>(pids: number[], body: () => T): T {
  const spawnSync = childProcess.spawnSync;
  childProcess.spawnSync = ((command: string, ...rest: unknown[]) => {
    const r = (spawnSync as (...a: unknown[]) => childProcess.SpawnSyncReturns<string>)(command, ...rest);
    if (command === MINC && r.pid) pids.push(r.pid);
    return r;
  }) as typeof spawnSync;
  syncBuiltinESMExports(); // (docs/boot-doc.ts imports spawnSync by name)
  try {
    return body();
  } finally {
    childProcess.spawnSync = spawnSync;
    syncBuiltinESMExports();
  }
}

/**
 * A raw trace whose writes of the lease file show only this boot's own
 * leases: the other containers' (a user's, another test's) are the host's
 * state, not what the code prints, and would make the excerpts differ.
 */
function ownLeases(raw: string): string {
  const netns = /^\+ export MINC_TMPDIR=\S*\/(minc\d+)-/m.exec(raw)?.[1];
  if (!netns) return raw;
  return raw.replace(
    /^\+ printf '%s\\n' ((?:'[^']*' ?)+) > (\S*minc\.lease\.new)$/gm,
    (_line, entries: string, file: string) => {
      const own = [...entries.matchAll(/'([^']*)'/g)].map((m) => m[1]).filter((l) => l.split(" ").includes(netns));
      return own.length ? `+ printf '%s\\n' ${own.map((l) => `'${l}'`).join(" ")} > ${file}` : `+ : > ${file}`;
    },
  );
}

/** regenerate() of docs/boot-doc.ts (what make docs writes), the traces less other containers' leases. */
function regenerateOwn(doc: string, port: number): string {
  const e: BootEnv = { repo: REPO, rootfs: bootRootfs(REPO) };
  const traces: Record<string, string> = {};
  // (a free host port for the dens run's -p: the walkthrough's 8080 may be a user's)
  for (const run of runsOf(doc)) traces[run] = normalise(ownLeases(rawTrace(run, e, port)), e);
  return fill(doc, traces);
}

/** What the containers of these minc PIDs left on the host: working dirs, mounts, cages, and what they had of the network. */
function leftoversOf(pids: number[]): string[] {
  const prefixes = pids.map((pid) => `minc${pid}-`);
  const ours = (name: string): boolean => prefixes.some((p) => name.startsWith(p));
  return [
    ...["/var/run", "/tmp"].flatMap((dir) =>
      readdirSync(dir)
        .filter(ours)
        .map((n) => `${dir}/${n}`),
    ),
    ...readFileSync("/proc/self/mountinfo", "utf8")
      .split("\n")
      .filter((l) => prefixes.some((p) => l.includes(`/${p}`))),
    ...cages().filter((c) => ours(c.split("/").pop()!)),
    ...netLeftovers(pids.map((pid) => `minc${pid}`)),
  ];
}

describe("the boot walkthrough's excerpt machinery", () => {
  const trace = [
    "# ==== minc: phase 1/5: set up the working area ====",
    "# Make a working directory",
    "+ mktemp -d /var/run/minc123-XXXXXX",
    "+ export MINC_TMPDIR=/var/run/minc123-AbC9eF",
    "# ==== minc-core: phase 4/5: prepare the new root ====",
    "+ export MINC_PID=4567",
    "+ echo 4567 > /var/run/minc123-AbC9eF/pid",
    "# Give it its own /etc/hosts",
    "# (/etc/hosts does not exist: skipped)",
    "# Mount /proc",
    "+ mount -t proc proc /repo/x/root/proc",
  ].join("\n");

  test("normalises names, PIDs and paths", () => {
    const n = normalise(trace, { repo: "/repo", rootfs: "/repo/x" });
    assert.match(n, /^\+ mktemp -d \/var\/run\/minc<pid>-XXXXXX$/m);
    assert.match(n, /^\+ export MINC_TMPDIR=\/var\/run\/minc<pid>-<random>$/m);
    assert.match(n, /^\+ echo <pid> > \/var\/run\/minc<pid>-<random>\/pid$/m);
    assert.match(n, /MINC_PID=<pid>/);
    assert.match(n, /proc <rootfs>\/root\/proc/);
  });

  test("selects phases, programs and steps", () => {
    assert.equal(select(trace, "phase-1").split("\n").length, 4);
    assert.match(select(trace, "program-minc-core"), /^# ==== minc-core/);
    assert.equal(
      select(trace, "steps=own /etc/hosts"),
      "# Give it its own /etc/hosts\n# (/etc/hosts does not exist: skipped)",
    );
    assert.throws(() => select(trace, "nonsense"));
  });

  test("keeps only the boot's own leases, as on a host with no other container", () => {
    const raw = [
      "+ export MINC_TMPDIR=/var/run/minc42-AbC9eF",
      "+ printf '%s\\n' '192.168.139.2 t18a t18a' '192.168.139.3 minc42 minc42' > /var/run/minc.lease.new",
      "+ printf '%s\\n' '192.168.139.2 t18a t18a' > /var/run/minc.lease.new",
      "+ printf '%s\\n' 'rm -rf x' >> /var/run/minc42-AbC9eF/cleanup",
    ].join("\n");
    assert.deepEqual(ownLeases(raw).split("\n").slice(1), [
      "+ printf '%s\\n' '192.168.139.3 minc42 minc42' > /var/run/minc.lease.new",
      "+ : > /var/run/minc.lease.new",
      "+ printf '%s\\n' 'rm -rf x' >> /var/run/minc42-AbC9eF/cleanup",
    ]);
  });

  test("fills blocks and keeps the prose", () => {
    const doc = "Prose.\n<!-- trace:x:phase-1 -->\nold\n<!-- /trace -->\nMore prose.\n";
    assert.deepEqual(runsOf(doc), ["x"]);
    const filled = fill(doc, { x: trace });
    assert.match(filled, /^Prose\.\n<!-- trace:x:phase-1 -->\n```\n# ==== minc: phase 1\/5/);
    assert.match(filled, /```\n<!-- \/trace -->\nMore prose\.\n$/);
    assert.match(excerptDiff(doc, filled), /^trace:x:phase-1 differs:\n- old\n\+ ```/);
    assert.equal(excerptDiff(filled, filled), "");
  });
});

describe("docs/boot.md", { skip: cannotBoot() }, () => {
  const pids: number[] = [];
  after(async () => assert.deepEqual(await settled(() => leftoversOf(pids)), [], "a container left something behind"));

  test("its trace excerpts are what minc --debug prints now (make docs regenerates them)", async () => {
    const doc = readFileSync(`${REPO}/docs/boot.md`, "utf8");
    const runs = runsOf(doc);
    assert.deepEqual(runs.sort(), ["dens", "direct", "ferret", "mem", "nopriv", "pivot", "plain"]);
    const port = await freePort();
    const now = recordingMincs(pids, () => regenerateOwn(doc, port));
    // (a boot per run of minc, and dens's warm-up: none unseen, or the check of what they left proves nothing;
    // ferret's run is not minc's, and its test is test/ferret.test.ts)
    assert.equal(
      pids.length,
      runs.length - 1 + 1,
      `the document's boots were not all seen: minc PIDs ${pids.join(" ")}`,
    );
    const diff = excerptDiff(doc, now);
    assert.ok(diff === "" && now === doc, `docs/boot.md is out of date (run make docs):\n${diff}`);
  });
});
