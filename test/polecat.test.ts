// polecat for real: commands traced in containers, packed, and run from the
// packed file as root would run it on another host.
import assert from "node:assert/strict";
import { spawn, spawnSync, type SpawnSyncReturns } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { constants } from "node:os";
import { after, before, describe, test } from "node:test";
import { readElf } from "../lib/polecat/elf.ts";
import { tracedPaths } from "../lib/polecat/strace.ts";
import {
  PATIENCE,
  REPO,
  bounded,
  cannotBoot,
  cleanEnv,
  freePort,
  hasTool,
  leftovers,
  rootfs,
  settled,
  sleep,
  waitFor,
} from "./helpers.ts";

const POLECAT = `${REPO}/bin/polecat`;
const CACHE = `${REPO}/test/.cache`;

function missingTool(): string | undefined {
  for (const [tool, pkg] of [
    ["strace", "strace"],
    ["mksquashfs", "squashfs-tools"],
    ["unsquashfs", "squashfs-tools"],
  ]) {
    if (!hasTool(tool)) return `needs ${tool} (apt-get install ${pkg}; make deps installs it)`;
  }
  return undefined;
}

const skip = cannotBoot() ?? missingTool();
if (skip) console.log(`# skipping the polecat tests: ${skip}`);

let work = "";
/** polecat's TMPDIR, where it makes its working directories: this file's own, so that what is left there is this file's. */
let tmp = "";
/** A mktemp first in PATH, which writes down what it makes: the packed files' run directories (/tmp/polecat-run-*). */
let shims = "";

/** The environment of polecat and the packed files here: this file's RUNDIR, TMPDIR and mktemp. */
function env(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return cleanEnv({ TMPDIR: tmp, PATH: `${shims}:${process.env.PATH}`, ...extra });
}

/** Put the mktemp that writes down what it makes first in PATH (the packed file's header makes its run directory with mktemp). */
function makeShims(): void {
  const real = spawnSync("sh", ["-c", "command -v mktemp"], { encoding: "utf8" }).stdout.trim();
  assert.ok(real, "no mktemp");
  shims = `${work}/.shims`;
  mkdirSync(shims);
  writeFileSync(
    `${shims}/mktemp`,
    `#!/bin/sh\nmade=$(${real} "$@") || exit\necho "$made" >> ${shims}/made\necho "$made"\n`,
    { mode: 0o755 },
  );
}

/** The run directories the packed files run here made (each, whether it is still there or not). */
function runDirs(): string[] {
  return existsSync(`${shims}/made`)
    ? readFileSync(`${shims}/made`, "utf8")
        .split("\n")
        .filter((l) => l !== "")
    : [];
}

function polecat(args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): SpawnSyncReturns<string> {
  return spawnSync(POLECAT, args, {
    encoding: "utf8",
    input: "",
    env: env(opts.env),
    cwd: opts.cwd ?? work,
    timeout: 120_000,
  });
}

function ok(r: SpawnSyncReturns<string>): SpawnSyncReturns<string> {
  assert.equal(r.status, 0, `exit ${r.status}: ${r.stderr}`);
  return r;
}

/** Run a packed file as a user would, from another directory. */
function runPacked(file: string, args: string[] = []): SpawnSyncReturns<string> {
  return spawnSync(file, args, { encoding: "utf8", input: "", env: env(), cwd: "/", timeout: 60_000 });
}

/** The image inside a packed sh file: the header says how many bytes at the end it is. */
function packedList(file: string): string[] {
  const size = Number(/^size=(\d+)$/m.exec(readFileSync(file, "latin1").slice(0, 4096))?.[1]);
  const offset = statSync(file).size - size;
  const r = ok(spawnSync("unsquashfs", ["-o", String(offset), "-l", "-d", "", file], { encoding: "utf8" }));
  return normalise(r.stdout.split("\n"));
}

function sfsList(file: string): string[] {
  return normalise(ok(spawnSync("unsquashfs", ["-l", "-d", "", file], { encoding: "utf8" })).stdout.split("\n"));
}

function tgzList(file: string): string[] {
  return normalise(ok(spawnSync("tar", ["tzf", file], { encoding: "utf8" })).stdout.split("\n"));
}

/** Paths as "/a/b", from unsquashfs ("/a/b" with -d "") or tar ("./a/b/"). */
function normalise(lines: string[]): string[] {
  return lines
    .map((l) => l.trim().replace(/^\.\//, "/").replace(/\/$/, ""))
    .filter((l) => l.startsWith("/"))
    .sort();
}

function duBytes(path: string): number {
  return Number(spawnSync("du", ["-sb", path], { encoding: "utf8" }).stdout.split(/\s/)[0]);
}

/** The dynamically linked fixture: coreutils and dash from Debian packages (samples/scripts/debian-packages-rootfs.sh). */
function debianPackages(): string {
  const r = spawnSync(`${REPO}/samples/scripts/debian-packages-rootfs.sh`, [`${CACHE}/debian-packages`], {
    encoding: "utf8",
    timeout: 300_000,
  });
  assert.equal(r.status, 0, `fixture failed: ${r.stderr}`);
  return r.stdout.trim();
}

function loopDevices(): string[] {
  return spawnSync("losetup", ["-a"], { encoding: "utf8" })
    .stdout.split("\n")
    .filter((l) => l.includes(work) && work !== "");
}

/**
 * What polecat or a packed file run here left: polecat's working dirs (in
 * its TMPDIR), the packed files' run dirs, loop devices of the packed files,
 * mounts under any of these, and the containers of the packed files (in
 * this file's RUNDIR). Nothing of other programs on the machine.
 */
function ourLeftovers(): string[] {
  const runs = runDirs().filter((d) => existsSync(d));
  const places = [tmp, work, ...runDirs()].filter((d) => d !== "").map((d) => `${d}/`);
  const mounts = readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .filter((l) => places.some((d) => l.includes(d)));
  const working = tmp && existsSync(tmp) ? readdirSync(tmp).map((n) => `${tmp}/${n}`) : [];
  return [...working, ...runs, ...loopDevices(), ...mounts, ...leftovers()];
}

async function fetchText(url: string, deadline = Date.now() + PATIENCE): Promise<string> {
  for (;;) {
    try {
      const r = await fetch(url);
      return await r.text();
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await sleep(100);
    }
  }
}

/** Start a program in its own process group; Ctrl-C it (SIGINT to the group) later, or signal it alone. */
function startGroup(file: string, args: string[], extra: NodeJS.ProcessEnv) {
  const child = spawn(file, args, { detached: true, env: env(extra), cwd: work, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.on("data", (d) => {
    out += d;
  });
  child.stderr.on("data", (d) => {
    out += d;
  });
  const done = new Promise<number | null>((res) => child.on("close", (code) => res(code)));
  const ended = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) =>
    child.on("close", (code, signal) => res({ code, signal })),
  );
  return {
    interrupt: () => process.kill(-child.pid!, "SIGINT"),
    signal: (sig: NodeJS.Signals) => child.kill(sig),
    done,
    ended,
    output: () => out,
  };
}

/** Wait until the output shows this line (a command that says it has started). */
async function untilPrinted(output: () => string, line: RegExp): Promise<void> {
  await waitFor(`the output to show ${line}`, () => line.test(output()), { saw: output });
}

/** The partial files polecat writes its output as, in a directory. */
function partials(dir: string): string[] {
  return readdirSync(dir).filter((n) => n.endsWith(".partial"));
}

describe("polecat", { skip }, () => {
  before(() => {
    work = mkdtempSync("/tmp/minc-test-polecat-");
    tmp = mkdtempSync("/tmp/minc-test-polecat-tmp-");
    makeShims();
  });
  after(async () => {
    const left = await settled(ourLeftovers);
    rmSync(work, { recursive: true, force: true });
    if (left.length === 0) rmSync(tmp, { recursive: true, force: true }); // (else what is left stays to be seen)
    assert.deepEqual(left, [], "polecat or a packed file left something behind");
  });

  test("ps from the busybox rootfs: run from another directory, PID 1 is ps, and the file holds only what ps used", (t) => {
    const t0 = Date.now();
    ok(polecat(["-o", "out.sh", rootfs(), "ps"]));
    const built = Date.now() - t0;
    const t1 = Date.now();
    const r = runPacked(`${work}/out.sh`);
    const ran = Date.now() - t1;
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^\s*1\s.*\bps$/m, r.stdout);
    const size = statSync(`${work}/out.sh`).size;
    const rootfsSize = duBytes(rootfs());
    t.diagnostic(
      `out.sh: ${size} bytes; the busybox rootfs: ${rootfsSize} bytes; polecat took ${built} ms, ./out.sh ${ran} ms`,
    );
    assert.ok(size < rootfsSize, "out.sh is not smaller than the rootfs");
    const files = packedList(`${work}/out.sh`);
    assert.ok(files.includes("/bin/busybox") && files.includes("/bin/ps"), files.join(" "));
    assert.ok(
      files.includes("/opt/mincs/bin/minc") && files.includes("/opt/mincs/libexec/minc-core"),
      "the runtime is packed",
    );
    assert.ok(!files.includes("/home/user") && !files.includes("/bin/vi"), "files ps never used are in the image");
    assert.equal(ourLeftovers().length, 0, ourLeftovers().join("\n"));
  });

  test("the file's exit status is the command's; arguments to the file are appended to the command", () => {
    ok(polecat(["--ignore-state", "-o", "status.sh", rootfs(), "sh", "-c", 'exit "$0"']));
    assert.equal(runPacked(`${work}/status.sh`, ["7"]).status, 7);
    assert.equal(runPacked(`${work}/status.sh`, ["0"]).status, 0);
  });

  test("a dynamically linked ls from Debian packages: the packed file runs it with its libraries and loader", () => {
    const root = debianPackages();
    ok(polecat(["-o", "ls.sh", root, "ls", "-ln", "/"]));
    const r = runPacked(`${work}/ls.sh`);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, / bin$/m);
    const files = packedList(`${work}/ls.sh`);
    for (const f of [
      "/bin/ls",
      "/lib/x86_64-linux-gnu/libc.so.6",
      "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
      "/lib64/ld-linux-x86-64.so.2",
    ]) {
      assert.ok(files.includes(f), `${f} is not in the image: ${files.join(" ")}`);
    }
  });

  test("libraries come from the DT_NEEDED closure: wc reads /bin/ls, whose libraries it never loads, and they are in the image", () => {
    const root = debianPackages();
    const wc = readElf(`${root}/usr/bin/wc`);
    assert.ok(wc && !wc.needed.includes("libselinux.so.1"), "wc itself needs libselinux: the test proves nothing");
    ok(polecat(["-f", "tgz", "-o", "wc.tgz", root, "wc", "-c", "/bin/ls"]));
    const files = tgzList(`${work}/wc.tgz`);
    assert.ok(files.includes("/bin/ls"), files.join(" "));
    assert.ok(files.includes("/lib/x86_64-linux-gnu/libselinux.so.1"), "DT_NEEDED of ls");
    assert.ok(
      files.some((f) => f.startsWith("/usr/lib/x86_64-linux-gnu/libpcre2-8.so.0")),
      "DT_NEEDED of libselinux",
    );
  });

  test("-f tgz and -f sfs list the same files (just the image, no runtime)", () => {
    ok(polecat(["-f", "tgz", "-o", "ps.tgz", rootfs(), "ps"]));
    ok(polecat(["-f", "sfs", "-o", "ps.sfs", rootfs(), "ps"]));
    const tgz = tgzList(`${work}/ps.tgz`);
    assert.deepEqual(sfsList(`${work}/ps.sfs`), tgz);
    assert.ok(tgz.includes("/bin/busybox") && !tgz.some((f) => f.startsWith("/opt/mincs")), tgz.join(" "));
  });

  test("what the traced run deletes leaves no whiteout (a 0/0 device node) in the image", () => {
    ok(polecat(["-f", "tgz", "-o", "rm.tgz", rootfs(), "sh", "-c", "rm /etc/group; ls /etc"]));
    const long = ok(spawnSync("tar", ["tvzf", `${work}/rm.tgz`], { encoding: "utf8" })).stdout;
    assert.doesNotMatch(long, /^c/m, long);
    assert.ok(tgzList(`${work}/rm.tgz`).includes("/bin/busybox"));
  });

  test("-s: install_command makes a file the command needs; MKDIRS and RMDIRS shape the image", () => {
    const script = `${work}/greet`;
    writeFileSync(
      script,
      [
        'COMMAND="cat /app/greeting"',
        'MKDIRS="/var/spool/made"',
        'RMDIRS="/app/junk"',
        "install_command() {",
        "  mkdir -p /app/junk",
        "  echo 'hello from install_command' > /app/greeting",
        "}",
        "",
      ].join("\n"),
    );
    ok(polecat(["-s", script, "-o", "greet.sh", rootfs()]));
    const r = runPacked(`${work}/greet.sh`);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, "hello from install_command\n");
    const files = packedList(`${work}/greet.sh`);
    assert.ok(files.includes("/app/greeting") && files.includes("/var/spool/made"), files.join(" "));
    assert.ok(!files.includes("/app/junk") && !files.some((f) => f.startsWith("/.polecat")), files.join(" "));
  });

  test("samples/polecat/httpd: the server is traced until Ctrl-C, and the packed file serves the site (Ctrl-C stops it, nothing left)", async () => {
    const port = await freePort();
    const build = startGroup(POLECAT, ["-s", `${REPO}/samples/polecat/httpd`, "-o", "httpd.sh", rootfs()], {
      HTTPD_PORT: String(port),
    });
    try {
      const page = await fetchText(`http://127.0.0.1:${port}/`);
      assert.match(page, /Served from a polecat file/);
      assert.match(await fetchText(`http://127.0.0.1:${port}/cgi-bin/uptime`), /load average/);
    } finally {
      build.interrupt();
    }
    assert.equal(await build.done, 0, build.output());
    const run = startGroup(`${work}/httpd.sh`, [], {});
    try {
      assert.match(await fetchText(`http://127.0.0.1:${port}/cgi-bin/uptime`), /load average/);
    } finally {
      run.interrupt();
    }
    assert.equal(await run.done, 130, run.output());
    // (a Ctrl-C reaches minc and its waiter at once: the cleanup may end a moment after minc)
    assert.deepEqual(await settled(ourLeftovers), []);
  });

  test("IMAGE: an image of the store (imported with marten) is packed like a rootdir", () => {
    const store = mkdtempSync("/tmp/minc-test-polecat-store-");
    try {
      const env = { MINCS_DIR: store };
      const imp = spawnSync(`${REPO}/bin/marten`, ["import", rootfs(), "--name", "polebox"], {
        encoding: "utf8",
        env: cleanEnv(env),
      });
      assert.equal(imp.status, 0, imp.stderr);
      ok(polecat(["-o", "image.sh", "polebox", "ps"], { env }));
      const r = runPacked(`${work}/image.sh`);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /^\s*1\s.*\bps$/m);
      const missing = polecat(["-o", "none.sh", "nosuchimage", "ps"], { env });
      assert.equal(missing.status, 2);
      assert.match(missing.stderr, /^polecat: .*nosuchimage/);
    } finally {
      rmSync(store, { recursive: true, force: true });
    }
  });

  test("bad input: one clear line, exit 2 for usage errors, no output file, nothing left behind", () => {
    const cases: [string[], number, RegExp][] = [
      [["-o", "bad.sh", `${work}/no-such-dir`, "ps"], 2, /rootdir .*no-such-dir: no such directory/],
      [["-f", "zip", "-o", "bad.sh", rootfs(), "ps"], 2, /Invalid values:[\s\S]*zip/],
      [["-o", "bad.sh", rootfs()], 2, /no COMMAND given/],
      [["-s", `${work}/no-such-script`, "-o", "bad.sh", rootfs()], 2, /--script .*no such file/],
      [["--bogus", rootfs(), "ps"], 2, /Unknown argument: bogus/],
      [["-o", "bad.sh", rootfs(), "false"], 1, /failed while traced \(exit 1\).*--ignore-state/],
      [["-o", "bad.sh", rootfs(), "no-such-command"], 1, /failed while traced \(exit 127\)/],
    ];
    for (const [args, status, message] of cases) {
      const r = polecat(args);
      assert.equal(r.status, status, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, message);
      const errors = r.stderr.split("\n").filter((l) => /^(polecat|minc-[a-z]+): /.test(l));
      assert.equal(errors.length, 1, r.stderr);
      assert.equal(existsSync(`${work}/bad.sh`), false);
      assert.deepEqual(ourLeftovers(), [], args.join(" "));
    }
  });

  test("--output that cannot be written (a directory, /proc, under a regular file): exit 2 before any container starts", () => {
    writeFileSync(`${work}/plain-file`, "");
    mkdirSync(`${work}/a-dir`, { recursive: true });
    const cases: [string, RegExp][] = [
      ["a-dir", /--output .*a-dir: is a directory/],
      ["/proc/x.sh", /--output \/proc\/x\.sh: cannot write a file in \/proc/],
      ["plain-file/x.sh", /--output .*plain-file\/x\.sh: .*plain-file is not a directory/],
    ];
    for (const [output, message] of cases) {
      const r = polecat(["--debug", "-o", output, rootfs(), "sleep", "30"]);
      assert.equal(r.status, 2, `${output}: ${r.stderr}`);
      assert.match(r.stderr, message);
      assert.equal(r.stderr.split("\n").filter((l) => /^polecat: /.test(l)).length, 1, r.stderr);
      assert.doesNotMatch(r.stderr, /minc-trapper|minc-exec|internal error/, `${output}: something ran:\n${r.stderr}`);
    }
    assert.deepEqual(partials(work), []);
    assert.deepEqual(ourLeftovers(), []);
  });

  test("--debug: the settings' export, the environment minc-exec gets, copies from the root the command saw, a replayable header write", () => {
    const r = ok(polecat(["--debug", "-o", "dbg.sh", rootfs(), "/bin/echo", "hi"]));
    const lines = r.stderr.trim().split("\n");
    assert.ok(
      lines.every((l) => l.startsWith("# ") || l.startsWith("+ ")),
      `not a trace line:\n${lines.filter((l) => !/^[#+] /.test(l)).join("\n")}`,
    );
    const tmp = /^\+ export MINC_BASEDIR=\S+ MINC_TMPDIR=(\S+) MINC_IGNORE_STATE=0 MINC_PIVOT=0 MINC_DEBUG=1$/m.exec(
      r.stderr,
    )?.[1];
    assert.ok(tmp, `no export of the settings:\n${r.stderr}`);
    assert.match(
      r.stderr,
      new RegExp(
        `^\\+ MINC_TMPDIR=${tmp} MINC_BASEDIR=${rootfs()} MINC_DEBUG_PREFIX='\\S*strace [^']* -o ${tmp}/trace' \\S+/libexec/minc-exec /bin/echo hi$`,
        "m",
      ),
    );
    const copies = lines.filter((l) => l.startsWith("+ cp -a ") && !l.includes("/dev/null"));
    assert.ok(copies.length > 0 && copies.some((l) => l.endsWith("/storage/bin/busybox")), copies.join("\n"));
    for (const line of copies) assert.match(line, new RegExp(`^\\+ cp -a ${tmp}/root(/\\S+) ${tmp}/storage\\1$`));
    assert.match(r.stderr, new RegExp(`^\\+ chmod 1777 ${tmp}/storage/tmp$`, "m"));

    const partial = /^\+ \(set -C; : > (\S+\.partial)\)$/m.exec(r.stderr)?.[1];
    assert.ok(partial?.startsWith(`${work}/.dbg.sh.`), `no partial file made:\n${r.stderr}`);
    const write = lines.find((l) => l.startsWith("+ printf ") && l.endsWith(` > ${partial}`));
    assert.ok(write, "the header's write is not shown");
    const at = (l: string | undefined) => lines.indexOf(l!);
    assert.ok(
      at(write) < at(lines.find((l) => l === `+ cat ${tmp}/image.sfs >> ${partial}`)),
      "the image is appended before the header is written",
    );
    assert.ok(lines.includes(`+ mv ${partial} ${work}/dbg.sh`));
    // Pasted, the write makes the header the file has.
    const replayed = `${work}/replayed-header`;
    const sh = spawnSync("/bin/sh", ["-c", write!.slice(2, -partial!.length) + replayed], { encoding: "utf8" });
    assert.equal(sh.status, 0, sh.stderr);
    const header = readFileSync(replayed);
    assert.ok(
      header.length > 500 && readFileSync(`${work}/dbg.sh`).subarray(0, header.length).equals(header),
      "the shown write does not make the file's header",
    );
    assert.equal(runPacked(`${work}/dbg.sh`).stdout, "hi\n");
  });

  test("the packed file runs with stdin closed (the command reads /dev/null) and piped", () => {
    ok(polecat(["-o", "cat.sh", rootfs(), "cat"]));
    const closed = spawnSync("/bin/sh", ["-c", 'exec 0<&-; exec "$0"', `${work}/cat.sh`], {
      encoding: "utf8",
      env: env(),
      cwd: "/",
      timeout: 60_000,
    });
    assert.equal(closed.status, 0, closed.stderr);
    assert.equal(closed.stdout, "");
    const piped = spawnSync(`${work}/cat.sh`, [], {
      encoding: "utf8",
      input: "piped\n",
      env: env(),
      cwd: "/",
      timeout: 60_000,
    });
    assert.equal(piped.stdout, "piped\n", piped.stderr);
    assert.deepEqual(ourLeftovers(), []);
  });

  test("the packed file: Node's warnings (from NODE_OPTIONS) do not break it; a failing header leaves no /tmp/polecat-run-*", () => {
    ok(polecat(["-o", "hello.sh", rootfs(), "echo", "hello"]));
    const options = { NODE_OPTIONS: "--experimental-loader=data:text/javascript," };
    const warns = spawnSync("node", ["-e", ""], { encoding: "utf8", env: cleanEnv(options) });
    assert.match(warns.stderr, /Warning/, "this NODE_OPTIONS makes Node print nothing: the test proves nothing");
    const r = spawnSync(`${work}/hello.sh`, ["there"], {
      encoding: "utf8",
      input: "",
      env: env(options),
      cwd: "/",
      timeout: 60_000,
    });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, "hello there\n");
    assert.deepEqual(ourLeftovers(), []);

    // Cut short: the header itself fails, and says why in one line.
    writeFileSync(`${work}/cut.sh`, readFileSync(`${work}/hello.sh`).subarray(0, 4000), { mode: 0o755 });
    const made = runDirs().length;
    const cut = spawnSync(`${work}/cut.sh`, [], {
      encoding: "utf8",
      input: "",
      env: env(options),
      cwd: "/",
      timeout: 60_000,
    });
    assert.equal(
      runDirs().length,
      made + 1,
      "the header made no run directory with mktemp: that none is left proves nothing",
    );
    assert.equal(cut.status, 2, cut.stderr);
    assert.match(cut.stderr, /^cut\.sh: .*cut\.sh is cut short: its image is missing$/m);
    assert.doesNotMatch(cut.stderr, /Warning/);
    assert.deepEqual(ourLeftovers(), []);
  });

  test("two builds to one output at once: each writes its own partial file, the output is one whole image", async () => {
    writeFileSync(`${work}/.same.sh.partial`, "another program's"); // (the name polecat used to share)
    const builds = ["A", "B"].map((word) =>
      startGroup(POLECAT, ["-o", "same.sh", rootfs(), "sh", "-c", `sleep 1; echo ${word}`], {}),
    );
    const ends = await Promise.all(builds.map((b) => b.ended));
    for (const [i, end] of ends.entries()) {
      const out = builds[i].output();
      assert.ok(
        end.code === 0 || (end.code === 1 && !/internal error/.test(out)),
        `build ${i}: ${JSON.stringify(end)}\n${out}`,
      );
    }
    assert.ok(
      ends.some((e) => e.code === 0),
      "no build made the output",
    );
    const r = runPacked(`${work}/same.sh`);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^[AB]\n$/);
    assert.ok(packedList(`${work}/same.sh`).includes("/bin/busybox"));
    assert.deepEqual(partials(work), [".same.sh.partial"], "a partial file was left, or another's removed");
    rmSync(`${work}/.same.sh.partial`);
  });

  for (const [sig, alone] of [
    ["SIGTERM", "polecat"],
    ["SIGHUP", "polecat"],
    ["SIGINT", "polecat alone (not a Ctrl-C of the group)"],
  ] as const) {
    test(`${sig} to ${alone} during the traced run: the container stops, no output, nothing left, polecat ends by ${sig}`, async () => {
      // The command never ends by itself (within the wait's bound): polecat ends only if it stops the container.
      const build = startGroup(
        POLECAT,
        ["-o", "stopped.sh", rootfs(), "sh", "-c", 'echo "st""arted"; exec sleep 3600'],
        {},
      );
      try {
        await untilPrinted(build.output, /^started$/m);
      } catch (e) {
        build.interrupt();
        throw e;
      }
      build.signal(sig);
      const end = await bounded(
        build.ended,
        PATIENCE,
        () => `polecat to end by ${sig}: it waits for the command to end by itself (${build.output()})`,
      ).catch((e) => {
        build.interrupt();
        throw e;
      });
      assert.ok(
        end.signal === sig || end.code === 128 + constants.signals[sig],
        `${JSON.stringify(end)}\n${build.output()}`,
      );
      assert.match(build.output(), new RegExp(`^polecat: interrupted by ${sig}; nothing kept$`, "m"));
      assert.doesNotMatch(build.output(), /^done:/m);
      assert.equal(existsSync(`${work}/stopped.sh`), false);
      assert.deepEqual(partials(work), []);
      assert.deepEqual(await settled(ourLeftovers), []);
    });
  }

  test("-t DIR: the working directory is used and kept, its storage/ is the image", () => {
    const dir = `${work}/keep`;
    mkdirSync(dir);
    ok(polecat(["-t", dir, "-f", "tgz", "-o", "kept.tgz", rootfs(), "ps"]));
    assert.ok(existsSync(`${dir}/storage/bin/busybox`));
    assert.ok(tgzList(`${work}/kept.tgz`).includes("/bin/busybox"));
  });
});

describe("the trace and the ELF reader (no container)", () => {
  test("paths after the chroot only, relative ones from the inherited working directory, escapes undone", () => {
    const trace = [
      '10 execve("/usr/sbin/capsh", ["capsh"], 0x1 /* 3 vars */) = 0',
      '10 openat(AT_FDCWD, "/lib/x86_64-linux-gnu/libcap.so.2", O_RDONLY|O_CLOEXEC) = 3',
      '10 chroot("/tmp/polecat-x/root") = 0',
      '10 execve("/bin/sh", ["sh", "-c", "cd /app && ./run"], 0x2 /* 3 vars */) = 0',
      '10 chdir("/app") = 0',
      "10 vfork( <unfinished ...>",
      '11 execve("./run", ["./run"], 0x3 /* 3 vars */ <unfinished ...>',
      "10 <... vfork resumed>) = 11",
      '11 openat(AT_FDCWD, "data/a\\303\\251\\"b", O_RDONLY) = 3',
      '11 openat(3, "rel", O_RDONLY) = -1 ENOENT (No such file or directory)',
      '11 newfstatat(3, "", {st_mode=S_IFREG|0644, ...}, AT_EMPTY_PATH) = 0',
      '11 openat(AT_FDCWD, "/proc/self/stat", O_RDONLY) = 3',
      '11 symlink("target", "/app/link") = 0',
      '11 readlink("/bin/ps", "/bin/busybox", 4095) = 12',
      "11 +++ exited with 0 +++",
    ].join("\n");
    assert.deepEqual(tracedPaths(trace), ["/bin/sh", "/app", "/app/run", '/app/data/a\u00e9"b', "/bin/ps"]);
    assert.equal(tracedPaths('10 openat(AT_FDCWD, "/etc/passwd", O_RDONLY) = 3'), undefined);
  });

  test("with strace -y: a path relative to a directory fd is placed by the directory printed beside it", () => {
    const trace = [
      '10 chroot("/tmp/polecat-x/root") = 0',
      '10 openat(AT_FDCWD</tmp/polecat-x/root>, "/usr/lib", O_RDONLY|O_DIRECTORY) = 3</tmp/polecat-x/root/usr/lib>',
      '10 openat(3</tmp/polecat-x/root/usr/lib>, "libfoo.so.1", O_RDONLY|O_CLOEXEC) = 4</tmp/polecat-x/root/usr/lib/libfoo.so.1>',
      '10 openat(AT_FDCWD</tmp/polecat-x/root/app>, "data/x", O_RDONLY) = 5</tmp/polecat-x/root/app/data/x>',
      '10 newfstatat(6</elsewhere/on/the/host>, "secret", {st_mode=S_IFREG|0644, ...}, 0) = 0',
      '10 openat(AT_FDCWD</tmp/polecat-x/root>, "etc/hostname", O_RDONLY) = 6</tmp/polecat-x/root/etc/hostname>',
    ].join("\n");
    assert.deepEqual(tracedPaths(trace), ["/usr/lib", "/usr/lib/libfoo.so.1", "/app/data/x", "/etc/hostname"]);
  });

  test("readElf: the interpreter and DT_NEEDED of a dynamic program, none of a text file", () => {
    const sh = readElf(realpathSync("/bin/sh"));
    assert.ok(sh?.interpreter?.includes("ld-linux") && sh.needed.includes("libc.so.6"), JSON.stringify(sh));
    assert.equal(readElf("/etc/passwd"), undefined);
  });
});
