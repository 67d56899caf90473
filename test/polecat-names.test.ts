// polecat as scripts written for the shell MINCS call it: the names it
// writes its output under (-o, -f, none given), the host's own root as the
// rootdir, and the shell MINCS's own polecat test run as a script runs it.
import assert from "node:assert/strict";
import { spawnSync, type SpawnSyncReturns } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { REPO, cannotBoot, cleanEnv, hasTool, leftovers, rootfs, settled } from "./helpers.ts";

const BIN = `${REPO}/bin`;

function missingTool(): string | undefined {
  for (const [tool, pkg] of [
    ["strace", "strace"],
    ["mksquashfs", "squashfs-tools"],
    ["unsquashfs", "squashfs-tools"],
    ["script", "bsdutils"],
  ]) {
    if (!hasTool(tool)) return `needs ${tool} (apt-get install ${pkg})`;
  }
  return undefined;
}

const skip = cannotBoot() ?? missingTool();
if (skip) console.log(`# skipping the polecat naming tests: ${skip}`);

/** This file's own directory: outputs are written in it, and polecat's working directories (TMPDIR) too. */
let work = "";

function tmp(): string {
  return `${work}/tmp`;
}

function env(): NodeJS.ProcessEnv {
  return cleanEnv({ TMPDIR: tmp() });
}

/** polecat run the way a script runs it: from a directory, its stdin not a terminal. */
function polecat(args: string[], cwd: string): SpawnSyncReturns<string> {
  return spawnSync(`${BIN}/polecat`, args, { encoding: "utf8", input: "", env: env(), cwd, timeout: 180_000 });
}

function ok(r: SpawnSyncReturns<string>, what = ""): SpawnSyncReturns<string> {
  assert.equal(r.status, 0, `${what} exit ${r.status}: ${r.stdout}${r.stderr}`);
  return r;
}

/** A fresh empty directory to run polecat in (what it holds afterwards is what polecat wrote). */
function emptyDir(name: string): string {
  const dir = `${work}/${name}`;
  mkdirSync(dir);
  return dir;
}

/** The directory's entries, recursively, as "a", "a/b". */
function entries(dir: string, prefix = ""): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .flatMap((e) => {
      const rel = `${prefix}${e.name}`;
      return e.isDirectory() ? [rel, ...entries(`${dir}/${e.name}`, `${rel}/`)] : [rel];
    })
    .sort();
}

/** What the file is: a packed program (a sh header), a gzipped tar, or a squashfs, by its first bytes. */
function kind(file: string): string {
  const head = readFileSync(file).subarray(0, 4);
  if (head.subarray(0, 2).toString("latin1") === "#!") return "sh";
  if (head[0] === 0x1f && head[1] === 0x8b) return "tgz";
  if (head.toString("latin1") === "hsqs") return "squashfs";
  return `unknown (${head.toString("hex")})`;
}

function polecatRunDirs(): string[] {
  return readdirSync("/tmp").filter((n) => n.startsWith("polecat-run-"));
}

const runDirsBefore = new Set<string>();

/**
 * What polecat or a packed file may leave: working directories (in this
 * file's TMPDIR), mounts and loop devices of files in this file's
 * directory, the packed files' /tmp/polecat-run-* that came meanwhile, and
 * containers' leftovers.
 */
function ourLeftovers(): string[] {
  const mounts = readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .filter((l) => l.includes(work) || /polecat-run-/.test(l));
  const loops = spawnSync("losetup", ["-a"], { encoding: "utf8" })
    .stdout.split("\n")
    .filter((l) => l.includes(work));
  return [
    ...readdirSync(tmp()).map((n) => `${tmp()}/${n}`),
    ...mounts,
    ...loops,
    ...polecatRunDirs().filter((d) => !runDirsBefore.has(d)),
    ...leftovers(),
  ];
}

describe("polecat's output names, rootdir /, and the shell MINCS's polecat test", { skip }, () => {
  before(() => {
    work = mkdtempSync("/tmp/minc-test-polecat-names-");
    mkdirSync(tmp());
    for (const d of polecatRunDirs()) runDirsBefore.add(d);
  });
  after(async () => {
    const left = await settled(ourLeftovers);
    rmSync(work, { recursive: true, force: true });
    assert.deepEqual(left, [], "polecat or a packed file left something behind");
  });

  test("no -o: the output is polecat-out (as the usage says), polecat-out.tgz, .sfs and .squashfs with -f", () => {
    const cases: [string[], string, string][] = [
      [[], "polecat-out", "sh"],
      [["-f", "sh"], "polecat-out", "sh"],
      [["-f", "tgz"], "polecat-out.tgz", "tgz"],
      [["-f", "sfs"], "polecat-out.sfs", "squashfs"],
      [["-f", "squashfs"], "polecat-out.squashfs", "squashfs"],
    ];
    for (const [i, [format, name, what]] of cases.entries()) {
      const dir = emptyDir(`default${i}`);
      const r = ok(polecat([...format, rootfs(), "ps"], dir), format.join(" "));
      assert.deepEqual(entries(dir), [name], format.join(" "));
      assert.equal(kind(`${dir}/${name}`), what, name);
      assert.match(r.stdout, new RegExp(`^done: ${dir}/${name.replace(".", "\\.")} `, "m"), r.stdout);
    }
    const ran = spawnSync(`${work}/default0/polecat-out`, [], {
      encoding: "utf8",
      input: "",
      env: cleanEnv(),
      cwd: "/",
      timeout: 60_000,
    });
    assert.equal(ran.status, 0, ran.stderr);
    assert.match(ran.stdout, /^\s*1\s.*\bps$/m, ran.stdout);
  });

  test("-o NAME: -f tgz, sfs, squashfs write NAME.tgz, NAME.sfs, NAME.squashfs (its directory made); NAME.tgz gets no second .tgz; sh writes NAME itself", () => {
    const cases: [string[], string, string][] = [
      [["-f", "tgz", "-o", "img"], "img.tgz", "tgz"],
      [["-f", "sfs", "-o", "img"], "img.sfs", "squashfs"],
      [["-f", "squashfs", "-o", "img"], "img.squashfs", "squashfs"],
      [["-f", "tgz", "-o", "sub/dir/img"], "sub/dir/img.tgz", "tgz"],
      [["-f", "tgz", "-o", "img.tgz"], "img.tgz", "tgz"],
      [["-f", "sfs", "-o", "img.sfs"], "img.sfs", "squashfs"],
      [["-f", "squashfs", "-o", "img.sfs"], "img.sfs.squashfs", "squashfs"],
      [["-o", "img"], "img", "sh"],
      [["-o", "img.tgz"], "img.tgz", "sh"],
    ];
    for (const [i, [args, name, what]] of cases.entries()) {
      const dir = emptyDir(`named${i}`);
      ok(polecat([...args, rootfs(), "ps"], dir), args.join(" "));
      const expected = name
        .split("/")
        .map((_, j, parts) => parts.slice(0, j + 1).join("/"))
        .sort();
      assert.deepEqual(entries(dir), expected, args.join(" "));
      assert.equal(kind(`${dir}/${name}`), what, `${args.join(" ")}: ${name}`);
    }
  });

  test("the host's root as the rootdir: polecat -o OUT / ps packs the host's ps, and OUT runs it as PID 1", () => {
    const dir = emptyDir("hostroot");
    const r = polecat(["-o", "OUT", "/", "ps"], dir);
    assert.equal(r.status, 0, `exit ${r.status}: ${r.stderr}`);
    assert.doesNotMatch(r.stderr, /Too many levels|overlapping/, r.stderr);
    assert.deepEqual(entries(dir), ["OUT"]);
    assert.ok(statSync(`${dir}/OUT`).mode & 0o100, "OUT is not executable");
    const ran = spawnSync(`${dir}/OUT`, [], {
      encoding: "utf8",
      input: "",
      env: cleanEnv(),
      cwd: "/",
      timeout: 60_000,
    });
    assert.equal(ran.status, 0, ran.stderr);
    assert.match(ran.stdout, /^\s*1\s.*\bps$/m, ran.stdout);
  });

  // The shell MINCS's test.d/01_rootfs/polecat.sh, in our words: run from
  // the programs' directory with set -ex (as its runtests.sh runs a test),
  // an output made beforehand by mktemp, its PID 1 grepped for.
  const script = [
    "set -ex",
    "OUT=$(mktemp /tmp/polecat-XXXXX.sh)",
    "trap 'rm -f \"$OUT\"' EXIT",
    './polecat -o "$OUT" "$ROOTFS" ps',
    "\"$OUT\" | grep '^[ \t]*1.*ps$'",
  ].join("\n");

  test("the shell MINCS's polecat test as a script runs it, stdin and stdout not a terminal: it passes", () => {
    const r = spawnSync("sh", ["-c", script], {
      encoding: "utf8",
      input: "",
      env: { ...env(), ROOTFS: rootfs() },
      cwd: BIN,
      timeout: 180_000,
    });
    assert.equal(r.status, 0, `exit ${r.status}:\n${r.stdout}${r.stderr}`);
    assert.match(r.stdout, /^\s*1\s.*ps$/m);
  });

  test("the same under a pseudo-terminal (script -qec): it passes", () => {
    const r = spawnSync("script", ["-qec", `sh -c '${script.replace(/'/g, "'\\''")}'`, "/dev/null"], {
      encoding: "utf8",
      input: "",
      env: { ...env(), ROOTFS: rootfs(), TERM: "dumb" },
      cwd: BIN,
      timeout: 180_000,
    });
    assert.equal(r.status, 0, `exit ${r.status}:\n${r.stdout}${r.stderr}`);
    assert.match(r.stdout, /^\s*1\s.*ps\r?$/m);
  });
});
