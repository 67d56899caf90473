// Escape attempts: root inside a container tries to reach the host, with
// test/escape-attempts.sh (busybox, and the host's perl for the system
// calls busybox has no applet for). Each attempt must escape under
// --privileged (so the attempt works and the other legs can fail), and be
// blocked by default (confined) and under --nopriv (an ordinary user's
// container, in a user namespace).
//
// The attempts never write to the host (files are opened for writing, not
// written; mounts are read-only; /sys and /proc are remounted only with
// "bind"), and each undoes what it did. At the end the host's /sys and
// /proc mounts are as they were, and what this file made on the host (a
// marker file, a memory cgroup, a loop device) is gone.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { dirname } from "node:path";
import { after, before, describe, test, type TestContext } from "node:test";
import { WAITER_SCRIPTS } from "../lib/core/libexec.ts";
import { PATIENCE, REPO, RUNDIR, cannotBoot, hasTool, leftovers, minc, rootfs, settled } from "./helpers.ts";

const SCRIPT = `${REPO}/test/escape-attempts.sh`;

// ---- the host, as the attempts need it ----

interface Mount {
  id: string;
  majorMinor: string;
  root: string;
  point: string;
  options: string;
  fstype: string;
  source: string;
  superOptions: string;
}

function mounts(): Mount[] {
  return readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .filter(Boolean)
    .map((line) => {
      const [left, right] = line.split(" - ");
      const f = left.split(" ");
      const [fstype, source, superOptions] = right.split(" ");
      return { id: f[0], majorMinor: f[2], root: f[3], point: f[4], options: f[5], fstype, source, superOptions };
    });
}

/** The host's /sys and /proc mounts (and those under them), as mountinfo shows them. */
function sysAndProc(): string[] {
  return readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .filter((l) => /^\S+ \S+ \S+ \S+ \/(sys|proc)(\/\S*)? /.test(l));
}

/** The mount of "/" (the last one, if stacked). */
const rootMount = mounts()
  .filter((m) => m.point === "/")
  .pop();

/** The memory cgroup v1 hierarchy's mount point, if there is one. */
const memoryHierarchy = mounts().find(
  (m) => m.fstype === "cgroup" && m.superOptions.split(",").includes("memory"),
)?.point;

/** MAJOR:MINOR of a dev_t as Linux encodes it (new_encode_dev). */
function majorMinor(d: number): string {
  return `${Math.floor(d / 256) & 0xfff}:${(d & 0xff) | ((Math.floor(d / 1048576) & 0xfff) << 8)}`;
}

/** The device a file is on. */
function devOf(path: string): string {
  return majorMinor(statSync(path).dev);
}

/** The device a node is for. */
function rdevOf(path: string): string {
  return majorMinor(statSync(path).rdev);
}

function sh(cmd: string): string {
  const r = spawnSync("sh", ["-c", cmd], { encoding: "utf8" });
  assert.equal(r.status, 0, `${cmd}: ${r.stderr}`);
  return r.stdout;
}

/** The session keyring serial of a process run as the test (or via runuser), as the attempt asks. */
const KEYRING_PERL = "print syscall(250,0,-3,0)";

const ROOT_FS_EXT = /^ext[234]$/;

/** Does a host path give something to read (a non-empty dir, or a file with content)? */
function hostHasContent(path: string): boolean {
  if (!existsSync(path)) return false;
  if (statSync(path).isDirectory()) return readdirSync(path).length > 0;
  return spawnSync("sh", ["-c", 'head -c 1 "$1" | wc -c | grep -qx 1', "sh", path]).status === 0;
}

const MASKED: Record<string, string> = {
  kcore: "/proc/kcore",
  keys: "/proc/keys",
  timer_list: "/proc/timer_list",
  sched_debug: "/proc/sched_debug",
  scsi: "/proc/scsi",
  acpi: "/proc/acpi",
  latency_stats: "/proc/latency_stats",
  firmware: "/sys/firmware",
};

const SYS_WRITABLE = [
  "/sys/kernel/uevent_helper",
  "/sys/kernel/profiling",
  "/sys/power/state",
  "/sys/kernel/mm/transparent_hugepage/enabled",
];

// ---- what the setup makes, and the attempts ----

const ID = `minc-escape-${process.pid}`;
let testDir = "";
let root = "";
let markerText = "";
let cgroupDir = "";
let loopDevice = "";
/** MAJOR:MINOR of the image's node: the host's root disk, or a loop device. */
let imageNode = "";
/** What the image's node begins with, when it is the loop device (the disk's first line is not text). */
let imageNodeText = "";
let hostKeyring = "";
/** Why an attempt cannot be set up here (found during the setup). */
const unavailable = new Map<string, string>();

interface Attempt {
  name: string;
  /** Why it cannot be tried on this machine (checked before anything is made). */
  cannot?: () => string | undefined;
  /** minc's options for it under --privileged (besides -r). */
  privileged?: string[];
  /** What --privileged must show, besides "escaped". */
  evidence?: () => string;
}

const ATTEMPTS: Attempt[] = [
  {
    name: "mknod-disk",
    cannot: () => {
      if (rootMount?.root !== "/") return "the host's / is not the root of a filesystem";
      if (rootMount.majorMinor.startsWith("0:")) return `the host's / (${rootMount.source}) is not on a block device`;
      return undefined;
    },
    evidence: () => markerText,
  },
  { name: "image-node", evidence: () => imageNodeText || "bytes of the host's block device" },
  {
    name: "cgroup-release-agent",
    cannot: () =>
      /\tcgroup$/m.test(readFileSync("/proc/filesystems", "utf8")) ? undefined : "the kernel has no cgroup v1",
  },
  {
    name: "cgroup-host-memory",
    cannot: () => (memoryHierarchy ? undefined : "the host has no cgroup v1 memory hierarchy"),
    evidence: () => ID,
  },
  { name: "proc-sys-remount" },
  { name: "proc-sys-umount" },
  { name: "fresh-proc" },
  {
    name: "sys-rw",
    cannot: () =>
      SYS_WRITABLE.some((f) => existsSync(f)) ? undefined : `the host has none of ${SYS_WRITABLE.join(" ")}`,
  },
  { name: "kmsg", cannot: () => (existsSync("/proc/kmsg") ? undefined : "the host has no /proc/kmsg") },
  {
    name: "shocker",
    cannot: () =>
      !rootMount || !ROOT_FS_EXT.test(rootMount.fstype) || rootMount.root !== "/"
        ? `the host's / is not the root of an ext2/3/4 filesystem (${rootMount?.fstype})`
        : devOf(RUNDIR) !== devOf("/")
          ? `the container's /etc/hosts (in ${RUNDIR}) is not on the host's root filesystem`
          : undefined,
    evidence: () => markerText,
  },
  { name: "packet-socket" },
  {
    name: "keyring",
    cannot: () => (existsSync("/proc/keys") ? undefined : "the kernel has no keys"),
    evidence: () => hostKeyring,
  },
  ...Object.entries(MASKED).map(
    ([name, path]): Attempt => ({
      name: `masked-${name}`,
      cannot: () => (hostHasContent(path) ? undefined : `the host's ${path} is missing or empty`),
    }),
  ),
  {
    // The kernel refuses a new user namespace to a chrooted process (EPERM)
    // whatever else, so --privileged dives with --pivot (no chroot) to show
    // the attempt working; confined, capsh chroots and the filter blocks
    // unshare(CLONE_NEWUSER) too (test/seccomp.test.ts shows the filter alone).
    name: "new-userns",
    privileged: ["--pivot"],
    cannot: () =>
      Number(readFileSync("/proc/sys/user/max_user_namespaces", "utf8")) > 0 ? undefined : "no user namespaces",
  },
];

const skip = cannotBoot() ?? (hasTool("perl") ? undefined : "needs perl");

/** The host's perl and the libraries ldd lists, copied into ROOTFS at their paths. */
function addPerl(rootfsDir: string): void {
  const perl = sh("command -v perl").trim();
  const libs = [...sh(`ldd ${perl}`).matchAll(/(?:=> |^\s*)(\/\S+)/gm)].map((m) => m[1]);
  for (const f of [perl, ...libs]) {
    mkdirSync(dirname(`${rootfsDir}${f}`), { recursive: true });
    copyFileSync(f, `${rootfsDir}${f}`);
    chmodSync(`${rootfsDir}${f}`, 0o755);
  }
}

/** What the attempts need from the host, into a rootfs copy (the device node and the keyring serial aside). */
function addAttempts(rootfsDir: string): void {
  addPerl(rootfsDir);
  copyFileSync(SCRIPT, `${rootfsDir}/escape-attempts.sh`);
  const [major, minor] = (rootMount?.majorMinor ?? "0:0").split(":");
  writeFileSync(
    `${rootfsDir}/escape.env`,
    [
      `DISK_MAJOR=${major}`,
      `DISK_MINOR=${minor}`,
      `DISK_FSTYPE=${rootMount?.fstype ?? "none"}`,
      `MARKER_PATH=${testDir}/marker`,
      `MARKER_TEXT=${markerText}`,
      `CGROUP_NAME=${ID}`,
      "",
    ].join("\n"),
  );
  writeFileSync(`${rootfsDir}/escape-keyring`, hostKeyring);
  if (imageNode) sh(`mknod ${rootfsDir}/escape-disk b ${imageNode.replace(":", " ")}`);
}

interface Result {
  outcome: string;
  evidence: string;
  output: string;
}

/** The one line an attempt printed: NAME escaped|blocked EVIDENCE. */
function resultOf(name: string, r: { status: number | null; stdout: string; stderr: string }): Result {
  const output = `status ${r.status}, stdout ${JSON.stringify(r.stdout)}, stderr ${JSON.stringify(r.stderr)}`;
  const lines = r.stdout.split("\n").filter((l) => l.startsWith(`${name} `));
  assert.equal(lines.length, 1, `one line for ${name}: ${output}`);
  const m = /^\S+ (\S+) ?(.*)$/.exec(lines[0])!;
  return { outcome: m[1], evidence: m[2], output };
}

type Outcome = "escaped" | "blocked";

/**
 * An attempt's test: RUN it, print its line, and expect OUTCOME (and, when
 * it escaped, its evidence); or skip it, saying why it cannot be tried here.
 */
function attemptTest(a: Attempt, expected: Outcome, run: (a: Attempt) => Parameters<typeof resultOf>[1]): void {
  const cannot = skip ? undefined : a.cannot?.();
  test(a.name, { skip: cannot }, (t: TestContext) => {
    const why = unavailable.get(a.name);
    if (why) {
      t.skip(why);
      return;
    }
    const r = resultOf(a.name, run(a));
    t.diagnostic(`${a.name} ${r.outcome} ${r.evidence}`);
    assert.equal(r.outcome, expected, r.output);
    const evidence = expected === "escaped" ? a.evidence?.() : undefined;
    if (evidence) assert.ok(r.evidence.includes(evidence), `evidence ${JSON.stringify(evidence)}: ${r.output}`);
  });
}

describe("escape attempts", { skip }, () => {
  let mountsBefore: string[] = [];

  before(() => {
    mountsBefore = sysAndProc();
    // On the host's root filesystem (the disk the attempts mount and open by handle).
    testDir = mkdtempSync(`/var/tmp/${ID}-`);
    chmodSync(testDir, 0o755);
    markerText = `host-only-${ID}-${Date.now()}`;
    writeFileSync(`${testDir}/marker`, `${markerText}\n`);
    if (devOf(testDir) !== rootMount?.majorMinor) {
      const why = `${testDir} is not on the host's root filesystem (${rootMount?.source})`;
      unavailable.set("mknod-disk", why);
      unavailable.set("shocker", why);
    }
    if (memoryHierarchy) {
      cgroupDir = `${memoryHierarchy}/${ID}`;
      mkdirSync(cgroupDir);
    }
    // The image's node: of the host's root disk; or, when the disk does not
    // open for a raw read even for the host's root (a VM may refuse it), of
    // a loop device over a host file that begins with a marker.
    if (rootMount && !rootMount.majorMinor.startsWith("0:")) {
      sh(`mknod ${testDir}/disk b ${rootMount.majorMinor.replace(":", " ")}`);
      if (spawnSync("head", ["-c", "512", `${testDir}/disk`]).stdout?.length === 512) imageNode = rootMount.majorMinor;
      rmSync(`${testDir}/disk`);
    }
    if (!imageNode) {
      imageNodeText = `image-node-${markerText}`;
      writeFileSync(`${testDir}/loop`, `${imageNodeText}\n`);
      sh(`truncate -s 64k ${testDir}/loop`);
      const loop = spawnSync("losetup", ["-f", "--show", "-r", `${testDir}/loop`], { encoding: "utf8" });
      if (loop.status === 0) {
        loopDevice = loop.stdout.trim();
        imageNode = rdevOf(loopDevice);
      } else {
        unavailable.set("image-node", `no loop device for the image's node: losetup: ${loop.stderr.trim()}`);
      }
    }
    const k = spawnSync("perl", ["-e", KEYRING_PERL], { encoding: "utf8", env: { ...process.env, LC_ALL: "C" } });
    hostKeyring = k.stdout.trim();
    if (!/^\d+$/.test(hostKeyring)) unavailable.set("keyring", `the host's session keyring: ${k.stderr.trim()}`);
    root = `${testDir}/rootfs`;
    cpSync(rootfs(), root, { recursive: true, verbatimSymlinks: true });
    addAttempts(root);
  });

  after(async () => {
    if (loopDevice) sh(`losetup -d ${loopDevice}`);
    if (cgroupDir) rmdirSync(cgroupDir);
    if (testDir) rmSync(testDir, { recursive: true, force: true });
    assert.deepEqual(leftovers(), [], "a container left something behind");
    assert.deepEqual(sysAndProc(), mountsBefore, "the host's /sys and /proc mounts are as they were");
    assert.ok(!cgroupDir || !existsSync(cgroupDir), `${cgroupDir} is gone`);
    assert.ok(!existsSync(testDir), `${testDir} is gone`);
    // The cgroup v1 hierarchy of the release_agent attempt goes once unmounted with no cgroup in it.
    assert.deepEqual(
      await settled(() =>
        readFileSync("/proc/self/cgroup", "utf8")
          .split("\n")
          .filter((l) => l.includes("name=minc-escape")),
      ),
      [],
      "the attempt's cgroup hierarchy is gone",
    );
  });

  describe("--privileged: each attempt escapes (it works, so the other legs can fail)", () => {
    for (const a of ATTEMPTS) {
      attemptTest(a, "escaped", () =>
        minc(["--privileged", ...(a.privileged ?? []), "-r", root, "sh", "/escape-attempts.sh", a.name]),
      );
    }
  });

  describe("by default (confined): each attempt is blocked", () => {
    for (const a of ATTEMPTS) {
      attemptTest(a, "blocked", () => minc(["-r", root, "sh", "/escape-attempts.sh", a.name]));
    }
  });

  describe("--nopriv (an ordinary user's container): each attempt is blocked", {
    skip: skip ?? noprivUnavailable(),
  }, () => {
    const nopriv = noprivSetup();
    for (const a of ATTEMPTS) attemptTest(a, "blocked", nopriv.run);
  });
});

// ---- --nopriv: a user, a rootfs copy they own, a copy of minc they can reach (as test/nopriv.test.ts) ----

const USER = "mincs-escape";
const SUBIDS = "400000-465535";
const BACKENDS = ["minc-exec", "minc-core", "minc-coat", "minc-leash", "minc-cage", ...WAITER_SCRIPTS, "minc-fork.sh"];

function noprivUnavailable(): string | undefined {
  for (const tool of ["useradd", "usermod", "userdel", "runuser", "newuidmap"]) {
    if (!hasTool(tool)) return `needs ${tool} (apt-get install passwd util-linux uidmap)`;
  }
  if (Number(readFileSync("/proc/sys/user/max_user_namespaces", "utf8")) === 0) return "user namespaces are disabled";
  return undefined;
}

function noprivSetup(): { run: (a: Attempt) => { status: number | null; stdout: string; stderr: string } } {
  let home = "";
  let madeUser = false;
  let dir = "";
  before(() => {
    if (spawnSync("id", [USER]).status !== 0) {
      sh(`useradd --no-create-home --shell /bin/sh ${USER}`);
      madeUser = true;
    }
    if (!new RegExp(`^${USER}:`, "m").test(readFileSync("/etc/subuid", { encoding: "utf8", flag: "a+" }))) {
      sh(`usermod --add-subuids ${SUBIDS} --add-subgids ${SUBIDS} ${USER}`);
    }
    home = mkdtempSync("/tmp/minc-escape-nopriv-");
    chmodSync(home, 0o755);
    mkdirSync(`${home}/bin`);
    mkdirSync(`${home}/libexec`);
    cpSync(`${REPO}/bin/minc`, `${home}/bin/minc`);
    for (const b of BACKENDS) cpSync(`${REPO}/libexec/${b}`, `${home}/libexec/${b}`);
    dir = `${home}/user`;
    mkdirSync(dir);
    sh(`cp -a ${root} ${dir}/rootfs`); // (with the device node, which cpSync refuses)
    mkdirSync(`${dir}/tmp`);
    sh(`chown -R ${USER}: ${dir}`);
  });
  after(() => {
    const left = dir ? readdirSync(`${dir}/tmp`) : [];
    if (home) rmSync(home, { recursive: true, force: true });
    // userdel takes its /etc/subuid and /etc/subgid ranges too.
    if (madeUser) sh(`userdel ${USER}`);
    assert.deepEqual(left, [], "the user's containers left their working dirs");
  });
  return {
    // The user's shell writes its own session keyring serial into the rootfs, then runs minc: the host process beside the container.
    run: (a) => {
      const r = spawnSync(
        "runuser",
        [
          "-u",
          USER,
          "--",
          "env",
          "-u",
          "XDG_RUNTIME_DIR",
          `TMPDIR=${dir}/tmp`,
          "LC_ALL=C",
          "sh",
          "-c",
          `perl -e '${KEYRING_PERL}' > "$0/escape-keyring" && exec "$@"`,
          `${dir}/rootfs`,
          `${home}/bin/minc`,
          "--nopriv",
          `${dir}/rootfs`,
          "sh",
          "/escape-attempts.sh",
          a.name,
        ],
        { encoding: "utf8", cwd: "/", input: "", timeout: PATIENCE },
      );
      return { status: r.status, stdout: r.stdout, stderr: r.stderr };
    },
  };
}
