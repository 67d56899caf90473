// Resource limits with cgroups (minc-cage): real limits on real containers.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmdirSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { after, describe, test } from "node:test";
import {
  containerId,
  limitsOf,
  parseSize,
  sharesToWeight,
  swapOnly,
  v1Settings,
  v2Settings,
} from "../lib/cgroups/cage.ts";
import {
  MINC,
  REPO,
  RUNDIR,
  allLeftovers,
  cages,
  cannotBoot,
  cleanEnv,
  madeNames,
  minc,
  rootfs,
  runtimeDirs,
  settled,
  start,
  waitFor,
} from "./helpers.ts";

const V1 = "/sys/fs/cgroup";
const v1Missing = ["memory", "cpu", "pids"].filter((c) => !existsSync(`${V1}/${c}/cgroup.procs`));
const skip =
  cannotBoot() ??
  (v1Missing.length ? `needs cgroup v1 ${v1Missing.join(", ")} (tested on v2 in the UML test)` : undefined);

/** The cage names of the -t directories this file used (its other containers' are named after their working directories). */
const tCages = new Set<string>();
/** The cages of this file's containers that are there: of its working directories, and of its -t directories. */
const ourCages = async (): Promise<string[]> => cages([...(await madeNames()), ...tCages]);

/** The pids cage of a container whose working directory is DIR (as minc names it: by its real path). */
const pidsCage = (dir: string): string => {
  const id = containerId({ MINC_TMPDIR: realpathSync(dir) });
  tCages.add(id);
  return `${V1}/pids/mincs/${id}`;
};
const SHOW_CAGE = "sed -n 's/^[0-9]*:pids://p' /proc/self/cgroup";

describe("cgroup v1 limits", { skip }, () => {
  after(async () => {
    assert.deepEqual(await settled(ourCages), [], "a cage was left behind");
    assert.deepEqual(await settled(allLeftovers), [], "a container left something behind");
  });

  test("--mem-limit 64M: a 200 MB hog is OOM-killed, minc returns 137; without it, it completes", async () => {
    const hog = ["dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1"];
    const limited = minc(["--mem-limit", "64M", "-r", rootfs(), ...hog]);
    assert.equal(limited.status, 137, limited.stderr);
    const free = minc(["-r", rootfs(), ...hog]);
    assert.equal(free.status, 0, free.stderr);
    assert.deepEqual(await ourCages(), []);
  });

  test("--pid-max 5: fork fails inside", () => {
    const r = minc([
      "--pid-max",
      "5",
      "-r",
      rootfs(),
      "sh",
      "-c",
      // (children that live until told: they are all there at once, however slow the forks)
      'pids=; for i in 1 2 3 4 5 6 7; do sleep 600 & pids="$pids $!"; done; kill $pids; wait; echo survived',
    ]);
    assert.match(r.stderr, /can't fork|Resource temporarily unavailable/);
    const ok = minc(["-r", rootfs(), "sh", "-c", "for i in 1 2 3 4 5 6 7; do sleep 0 & done; wait; echo fine"]);
    assert.equal(ok.stdout, "fine\n");
  });

  test("--cpu-quota, --cpu-shares, --mem-swap are written in the container's cgroups while it runs", async () => {
    const before = new Set(runtimeDirs());
    const run = start(
      MINC,
      [
        "--cpu-quota",
        "50000",
        "--cpu-shares",
        "512",
        "--mem-limit",
        "32M",
        "--mem-swap",
        "48M",
        "-r",
        rootfs(),
        "sh",
        "-c",
        "echo ready; exec sleep 600",
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    try {
      await run.printed("ready");
      const id = runtimeDirs()
        .find((d) => !before.has(d))!
        .split("/")
        .pop()!;
      const read = (c: string, f: string): string => readFileSync(`${V1}/${c}/mincs/${id}/${f}`, "utf8").trim();
      assert.equal(read("cpu", "cpu.cfs_quota_us"), "50000");
      assert.equal(read("cpu", "cpu.shares"), "512");
      assert.equal(read("memory", "memory.limit_in_bytes"), String(32 * 1024 * 1024));
      if (existsSync(`${V1}/memory/mincs/${id}/memory.memsw.limit_in_bytes`)) {
        assert.equal(read("memory", "memory.memsw.limit_in_bytes"), String(48 * 1024 * 1024));
      }
      const init = readFileSync(`${RUNDIR}/${id}/pid`, "utf8").trim();
      assert.ok(read("cpu", "cgroup.procs").split("\n").includes(init), "the container's PID 1 is not in its cage");
    } finally {
      run.child.kill("SIGTERM");
      await run.exit();
    }
    assert.deepEqual(await settled(ourCages), []);
  });

  test("two -t directories of the same name get cages of their own, each with its own limit", async () => {
    const base = mkdtempSync("/tmp/minc-test-cage-");
    const [a, b] = [`${base}/x/ct`, `${base}/y/ct`];
    for (const d of [a, b]) mkdirSync(d, { recursive: true });
    const first = start(MINC, ["--pid-max", "100", "-r", rootfs(), "-t", a, "sh", "-c", "echo ready; exec sleep 600"], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    try {
      assert.notEqual(pidsCage(a), pidsCage(b));
      await first.printed("ready");
      assert.equal(readFileSync(`${pidsCage(a)}/pids.max`, "utf8").trim(), "100");
      const second = minc([
        "--pid-max",
        "5",
        "-r",
        rootfs(),
        "-t",
        b,
        "sh",
        "-c",
        `${SHOW_CAGE}; pids=; for i in 1 2 3 4 5 6 7; do sleep 600 & pids="$pids $!"; done; kill $pids; wait`,
      ]);
      assert.equal(second.stdout.split("\n")[0], pidsCage(b).slice(`${V1}/pids`.length));
      assert.match(second.stderr, /can't fork|Resource temporarily unavailable/, "the second container's own limit");
      // A cage shared with the running container could not be removed: the second one's is gone, the first one's stays.
      assert.deepEqual(await settled(() => cages([pidsCage(b)])), [], "the second container's cage is left");
      assert.deepEqual(
        cages([pidsCage(a)]).filter((c) => c.includes("/pids/")),
        [pidsCage(a)],
        "the first container's cage went with the second",
      );
      assert.equal(
        readFileSync(`${pidsCage(a)}/pids.max`, "utf8").trim(),
        "100",
        "the first container's limit was overwritten",
      );
      assert.ok(
        readFileSync(`${pidsCage(a)}/cgroup.procs`, "utf8")
          .split("\n")
          .includes(readFileSync(`${a}/pid`, "utf8").trim()),
      );
    } finally {
      first.child.kill("SIGTERM");
      await first.exit();
      rmSync(base, { recursive: true });
    }
    assert.deepEqual(await settled(ourCages), [], "cages left");
  });

  test("a -t directory of any name (_ct, 'my ct') can have limits: its cage gets a safe name", async () => {
    const base = mkdtempSync("/tmp/minc-test-cage-");
    try {
      for (const [name, id] of [
        ["_ct", /^ct-[0-9a-f]{8}$/],
        ["my ct", /^my_ct-[0-9a-f]{8}$/],
      ] as const) {
        const dir = `${base}/${name}`;
        mkdirSync(dir);
        const r = minc(["--pid-max", "10", "-r", rootfs(), "-t", dir, "sh", "-c", SHOW_CAGE]);
        assert.equal(r.status, 0, r.stderr);
        assert.equal(r.stdout, `${pidsCage(dir).slice(`${V1}/pids`.length)}\n`);
        assert.match(pidsCage(dir).split("/").pop()!, id);
      }
    } finally {
      rmSync(base, { recursive: true });
    }
    assert.deepEqual(await ourCages(), []);
  });

  test("a cage with another container's processes in it is refused (exit 2, one line), its limit left as it is", async () => {
    const dir = mkdtempSync("/tmp/minc-test-cage-");
    const cage = pidsCage(dir);
    mkdirSync(cage, { recursive: true });
    writeFileSync(`${cage}/pids.max`, "77");
    const squatter = spawn("sleep", ["30"], { stdio: "ignore" });
    const gone = new Promise<void>((res) => squatter.on("exit", () => res()));
    try {
      writeFileSync(`${cage}/cgroup.procs`, String(squatter.pid));
      const r = minc(["--pid-max", "5", "-r", rootfs(), "-t", dir, "true"]);
      assert.equal(r.status, 2, r.stderr);
      assert.match(
        r.stderr,
        /^minc: the cgroup \S+ has another container's processes in it: its limits are left as they are\n$/,
      );
      assert.equal(readFileSync(`${cage}/pids.max`, "utf8").trim(), "77");
      assert.deepEqual(
        readdirSync(dir).filter((f) => f !== "lock"),
        [],
        "the refused minc wrote into the directory",
      );
    } finally {
      squatter.kill();
      await gone;
      // (the cage empties once the squatter is reaped)
      await waitFor(
        `${cage} to be removed`,
        () => {
          try {
            rmdirSync(cage);
            return true;
          } catch {
            return false;
          }
        },
        { saw: () => `in it: ${readFileSync(`${cage}/cgroup.procs`, "utf8").trim()}` },
      );
      rmSync(dir, { recursive: true });
    }
  });

  test("bad limits: one line, exit 2, nothing made", async () => {
    for (const [args, msg] of [
      [["--mem-limit", "64X"], /not a size/],
      [["--mem-limit", "0"], /out of range/],
      [["--mem-swap", "64M"], /needs --mem-limit/],
      [["--mem-limit", "64M", "--mem-swap", "32M"], /cannot be less/],
      [["--cpu-shares", "1"], /from 2 to 262144/],
      [["--cpu-quota", "ten"], /whole number/],
      [["--pid-max", "-1"], /unknown option|whole number/],
    ] as const) {
      const r = minc([...args, "-r", rootfs(), "true"]);
      assert.equal(r.status, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, msg);
      assert.equal(r.stderr.trim().split("\n").length, 1);
    }
    assert.deepEqual(await ourCages(), []);
  });

  test("minc-cage makes no cage for a caller that is gone (minc SIGKILLed before setpriv tied the two)", async () => {
    const tmp = mkdtempSync("/tmp/minc-test-cage-");
    try {
      const r = spawnSync(`${REPO}/libexec/minc-cage`, ["--prepare", "1"], {
        encoding: "utf8",
        env: { ...cleanEnv(), MINC_MEM_LIMIT: "64M", MINC_TMPDIR: tmp },
      });
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, /caller \(PID 1\) is not our parent any more: no cage made/);
      assert.ok(!existsSync(`${tmp}/cleanup`), "nothing registered");
      assert.deepEqual(cages([containerId({ MINC_TMPDIR: tmp })]), [], "a cage was made");
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});

describe("limit values for cgroup v1 and v2", () => {
  test("sizes take bytes, K, M and G", () => {
    assert.equal(parseSize("--mem-limit", "4096"), 4096);
    assert.equal(parseSize("--mem-limit", "10k"), 10240);
    assert.equal(parseSize("--mem-limit", "64M"), 64 * 1024 ** 2);
    assert.equal(parseSize("--mem-limit", "2G"), 2 * 1024 ** 3);
    assert.throws(() => parseSize("--mem-limit", "1.5G"), /not a size/);
  });
  test("cage ids: the names minc and marten make are kept; a -t directory's is made safe, and unique by its path", () => {
    assert.equal(containerId({ MINC_TMPDIR: "/var/run/minc123-AbC9eF" }), "minc123-AbC9eF");
    assert.equal(containerId({ MINC_TMPDIR: `/var/lib/mincs/containers/${"0f".repeat(32)}` }), "0f".repeat(32));
    const [a, b] = [containerId({ MINC_TMPDIR: "/a/ct" }), containerId({ MINC_TMPDIR: "/b/ct" })];
    assert.match(a, /^ct-[0-9a-f]{8}$/);
    assert.notEqual(a, b);
    assert.equal(
      containerId({ MINC_TMPDIR: "/a/ct" }),
      a,
      "the same directory, the same cage (minc-cage and minc-leash agree)",
    );
    assert.match(containerId({ MINC_TMPDIR: "/x/_ct" }), /^ct-[0-9a-f]{8}$/);
    assert.match(containerId({ MINC_TMPDIR: "/x/my ct" }), /^my_ct-[0-9a-f]{8}$/);
    assert.match(containerId({ MINC_TMPDIR: "/x/...." }), /^tempdir-[0-9a-f]{8}$/);
    assert.throws(() => containerId({}), /MINC_TMPDIR is not set/);
  });
  test("cpu.shares maps to cpu.weight like the OCI runtimes", () => {
    assert.equal(sharesToWeight(2), 1);
    assert.equal(sharesToWeight(1024), 39);
    assert.equal(sharesToWeight(262144), 10000);
  });
  test("v2 limits swap alone: memsw - mem", () => {
    assert.equal(swapOnly(96, 64), 32);
    const l = limitsOf({
      MINC_MEM_LIMIT: "64M",
      MINC_MEM_SWAP: "96M",
      MINC_CPU_QUOTA: "50000",
      MINC_CPU_SHARES: "1024",
      MINC_PID_MAX: "5",
    });
    assert.deepEqual(
      v2Settings(l).map((s) => `${s.file}=${s.value}`),
      [
        `memory.max=${64 * 1024 ** 2}`,
        `memory.swap.max=${32 * 1024 ** 2}`,
        "cpu.weight=39",
        "cpu.max=50000 100000",
        "pids.max=5",
      ],
    );
    assert.deepEqual(
      v1Settings(l).map((s) => `${s.file}=${s.value}`),
      [
        `memory.limit_in_bytes=${64 * 1024 ** 2}`,
        `memory.memsw.limit_in_bytes=${96 * 1024 ** 2}`,
        "cpu.shares=1024",
        "cpu.cfs_quota_us=50000",
        "pids.max=5",
      ],
    );
  });
});
