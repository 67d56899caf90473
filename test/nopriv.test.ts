// minc --nopriv DIR: an ordinary user runs a container in a user namespace.
//
// The setup makes a test user with subordinate ids, a copy of the busybox
// rootfs that the user owns (as one unpacked by hand would be), and a copy
// of minc and its backends the user can reach (the checkout may sit under
// a directory only root may enter).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { dirname } from "node:path";
import { WAITER_SCRIPTS } from "../lib/core/libexec.ts";
import { PATIENCE, REPO, cannotBoot, hasTool, rootfs, settled, start } from "./helpers.ts";

const USER = "mincs-nopriv";
const BACKENDS = ["minc-exec", "minc-core", "minc-coat", "minc-leash", "minc-cage", ...WAITER_SCRIPTS, "minc-fork.sh"];

function why(): string | undefined {
  const boot = cannotBoot();
  if (boot) return boot;
  for (const tool of ["useradd", "usermod", "runuser", "newuidmap"]) {
    if (!hasTool(tool)) return `needs ${tool} (apt-get install passwd util-linux uidmap)`;
  }
  if (Number(readFileSync("/proc/sys/user/max_user_namespaces", "utf8")) === 0) return "user namespaces are disabled";
  return undefined;
}

const skip = why();
let home = "";
let minc = "";
let dir = "";
let uid = 0;
let subuid = "";

function sh(cmd: string): string {
  const r = spawnSync("sh", ["-c", cmd], { encoding: "utf8" });
  assert.equal(r.status, 0, `${cmd}: ${r.stderr}`);
  return r.stdout;
}

/** Made by this test run (so removed by it at the end). */
let madeUser = false;

/** A test user with a range of subordinate ids. */
function makeUser(): void {
  if (spawnSync("id", [USER]).status !== 0) {
    sh(`useradd --no-create-home --shell /bin/sh ${USER}`);
    madeUser = true;
  }
  if (!new RegExp(`^${USER}:`, "m").test(readFileSync("/etc/subuid", { encoding: "utf8", flag: "a+" }))) {
    sh(`usermod --add-subuids 300000-365535 --add-subgids 300000-365535 ${USER}`);
  }
  uid = Number(sh(`id -u ${USER}`));
  subuid = new RegExp(`^${USER}:(\\d+):(\\d+)$`, "m").exec(readFileSync("/etc/subuid", "utf8"))!.slice(1).join(" ");
}

/** minc and the backends it needs, where the test user can run them. */
function installCopy(): void {
  mkdirSync(`${home}/bin`);
  mkdirSync(`${home}/libexec`);
  cpSync(`${REPO}/bin/minc`, `${home}/bin/minc`);
  for (const b of BACKENDS) cpSync(`${REPO}/libexec/${b}`, `${home}/libexec/${b}`);
  minc = `${home}/bin/minc`;
}

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** runuser's arguments to run COMMAND as the test user, with $TMPDIR=dir/tmp (and no XDG_RUNTIME_DIR) for its working dirs. */
function userArgs(...command: string[]): string[] {
  return ["-u", USER, "--", "env", "-u", "XDG_RUNTIME_DIR", `TMPDIR=${dir}/tmp`, ...command];
}

/** minc run as the test user. */
function asUser(args: string[], opts: { timeout?: number } = {}): Run {
  const r = spawnSync("runuser", userArgs(minc, ...args), {
    encoding: "utf8",
    cwd: "/",
    input: "",
    timeout: opts.timeout ?? PATIENCE,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function listing(path: string): string {
  return sh(`cd ${path} && find . -printf '%p %U:%G %m %s %T@\\n' | sort`);
}

/** Files under the test dir that the host's root owns (there must be none). */
function rootOwned(): string {
  return sh(`find ${dir} -user root -printf '%p\\n'`);
}

describe("--nopriv", { skip }, () => {
  before(() => {
    makeUser();
    home = mkdtempSync("/tmp/minc-nopriv-");
    chmodSync(home, 0o755);
    installCopy();
    dir = `${home}/user`;
    mkdirSync(dir);
    cpSync(rootfs(), `${dir}/rootfs`, { recursive: true, verbatimSymlinks: true });
    mkdirSync(`${dir}/tmp`);
    sh(`chown -R ${USER}: ${dir}`);
  });
  after(() => {
    if (home) rmSync(home, { recursive: true, force: true });
    // userdel takes its /etc/subuid and /etc/subgid ranges too.
    if (madeUser) sh(`userdel ${USER}`);
  });

  test("an ordinary user is root in the container, with /dev and /proc, the command as PID 1, and the rootfs untouched", () => {
    const before = listing(`${dir}/rootfs`);
    const r = asUser([
      "--nopriv",
      `${dir}/rootfs`,
      "sh",
      "-c",
      "id -u; echo ok > /dev/null; head -c 4 /dev/urandom | wc -c; echo new > /written; ps; exit 0",
    ]);
    assert.equal(r.status, 0, r.stderr);
    const [id, bytes, ...ps] = r.stdout.trim().split("\n");
    assert.equal(id, "0");
    assert.equal(bytes.trim(), "4");
    const first = ps.find((l) => /^\s*1\s/.test(l));
    assert.match(first ?? "", /^\s*1\s+root\s+sh -c id -u/, r.stdout);
    assert.equal(ps.length, 3, `only sh, ps and the header: ${r.stdout}`);
    assert.equal(listing(`${dir}/rootfs`), before, "the overlay kept the rootfs as it was");
    assert.deepEqual(readdirSync(`${dir}/tmp`), [], "the working dir is gone");
    assert.equal(rootOwned(), "");
  });

  test("writes land in the upper layer of a kept working dir, owned by the user", () => {
    const work = `${dir}/work`;
    sh(`runuser -u ${USER} -- mkdir ${work}`);
    const r = asUser(["--nopriv", `${dir}/rootfs`, "-t", work, "sh", "-c", "echo kept > /kept"]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(readFileSync(`${work}/storage/kept`, "utf8"), "kept\n");
    assert.equal(Number(sh(`stat -c %u ${work}/storage/kept`)), uid);
    assert.ok(!existsSync(`${dir}/rootfs/kept`));
    const again = asUser(["--nopriv", `${dir}/rootfs`, "-t", work, "cat", "/kept"]);
    assert.equal(again.stdout, "kept\n", again.stderr);
    assert.equal(rootOwned(), "");
    rmSync(work, { recursive: true });
  });

  test("the subordinate ids make --user work inside, and --name names it", () => {
    const r = asUser([
      "--nopriv",
      `${dir}/rootfs`,
      "--user",
      "1000:1000",
      "--name",
      "unpriv",
      "sh",
      "-c",
      "id -u; id -g; hostname; cat /proc/self/uid_map",
    ]);
    assert.equal(r.status, 0, r.stderr);
    const [u, g, name, ...map] = r.stdout.trim().split("\n");
    assert.deepEqual([u, g, name], ["1000", "1000", "unpriv"]);
    assert.match(map.join("\n"), new RegExp(`^\\s*0\\s+${uid}\\s+1$`, "m"));
    const [start, count] = subuid.split(" ");
    assert.match(map.join("\n"), new RegExp(`^\\s*1\\s+${start}\\s+${count}$`, "m"));
  });

  test("the user's terminal is the container's console", () => {
    const r = spawnSync(
      "runuser",
      userArgs(
        "script",
        "-qec",
        `${minc} --nopriv ${dir}/rootfs sh -c 'tty; echo to-console > /dev/console'`,
        "/dev/null",
      ),
      {
        encoding: "utf8",
        cwd: "/",
        input: "",
        timeout: PATIENCE,
      },
    );
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^\/dev\/console\r?\nto-console\r?\n/);
  });

  test("an ordinary user's PATH (no sbin, where pivot_root and capsh are) is enough", () => {
    const r = spawnSync(
      "runuser",
      userArgs(`PATH=${dirname(process.execPath)}:/usr/bin:/bin`, minc, "--nopriv", `${dir}/rootfs`, "echo", "found"),
      { encoding: "utf8", cwd: "/", input: "", timeout: PATIENCE },
    );
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, "found\n");
  });

  test("a uid with no passwd entry (docker run -u 4321) runs, without subordinate ids", () => {
    const tmp = mkdtempSync(`${home}/nobody-`);
    sh(`chown 4321 ${tmp}`);
    const r = spawnSync(
      "setpriv",
      [
        "--reuid=4321",
        "--regid=4321",
        "--clear-groups",
        "env",
        "-u",
        "XDG_RUNTIME_DIR",
        `TMPDIR=${tmp}`,
        minc,
        "--nopriv",
        `${dir}/rootfs`,
        "id",
        "-u",
      ],
      { encoding: "utf8", cwd: "/", input: "", timeout: PATIENCE },
    );
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, "0\n", "root in the container");
  });

  test("SIGTERM ends it with 143 and nothing is left", async () => {
    const run = start("runuser", userArgs(minc, "--nopriv", `${dir}/rootfs`, "sh", "-c", "echo ready; exec sleep 30"), {
      cwd: "/",
      stdio: ["ignore", "pipe", "pipe"],
    });
    await run.printed("ready");
    // The user's waiter (and its guard, which ignores TERM), as the user's own kill would reach it.
    sh(`pkill -TERM -u ${USER} -f 'minc-waiter.sh'`);
    assert.equal(await run.exit(), 143, run.stderr());
    // Its guard and watcher end once the waiter has (a zombie may wait a moment for the host's init to reap it).
    assert.deepEqual(await settled(() => readdirSync(`${dir}/tmp`)), []);
    assert.deepEqual(
      await settled(() => sh(`ps -u ${USER} -o pid=,stat=,args= | grep -v ' Z' || true`).split("\n").filter(Boolean)),
      [],
    );
  });

  test("what needs the host's root is refused, and root is needed without --nopriv", () => {
    for (const extra of [
      ["--mem-limit", "64M"],
      ["--net"],
      ["-p", "8080"],
      ["--usedev"],
      ["--ftrace", "/etc/passwd"],
    ]) {
      const r = asUser([...extra, "--nopriv", `${dir}/rootfs`, "true"]);
      assert.equal(r.status, 2, `${extra.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, /unprivileged container \(--nopriv\) cannot/);
    }
    const both = asUser(["-r", `${dir}/rootfs`, "--nopriv", `${dir}/rootfs`, "true"]);
    assert.equal(both.status, 2);
    const plain = asUser(["-r", `${dir}/rootfs`, "true"]);
    assert.equal(plain.status, 2);
    assert.match(plain.stderr, /minc needs root; as an ordinary user, run minc --nopriv DIR/);
    assert.deepEqual(readdirSync(`${dir}/tmp`), []);
  });
});
