// Signals to minc reach the container, and nothing is left afterwards.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { after, describe, test } from "node:test";
import { MINC, REPO, cages, cannotBoot, cleanEnv, hasTool, leftovers, netLeftovers, rootfs, runtimeDirs, settled, signalled, sleep } from "./helpers.ts";

const skip = cannotBoot();

describe("signals", { skip }, () => {
  after(() => assert.deepEqual(leftovers(), [], "a container left something behind"));

  for (const [signal, status] of [["SIGTERM", 143], ["SIGINT", 130]] as const) {
    test(`${signal} ends a container whose PID 1 does not handle it, exit ${status}, nothing left`, async () => {
      const r = await signalled(["sh", "-c", "echo ready; exec sleep 60"], signal);
      assert.equal(r.status, status);
      assert.deepEqual(leftovers(), []);
    });
  }

  test("a PID 1 that handles SIGTERM gets it and decides the exit status", async () => {
    const r = await signalled(["sh", "-c", "trap 'echo caught; exit 7' TERM; echo ready; sleep 60 & wait"], "SIGTERM");
    assert.equal(r.status, 7);
    assert.match(r.stdout, /caught/);
    assert.deepEqual(leftovers(), []);
  });

  test("a PID 1 that handles SIGTERM by re-raising it with the default action ends by it, exit 143", async () => {
    // (the kernel drops what PID 1 sends itself: the waiter must see the handler go and give the default action)
    const r = await signalled(["sh", "-c", "trap 'trap - TERM; kill -TERM $$' TERM; echo ready; while :; do sleep 0.1; done"], "SIGTERM");
    assert.equal(r.status, 143);
    assert.deepEqual(leftovers(), []);
  });

  test("SIGTERM during the boot stops it and cleans up, whenever it comes", async () => {
    // Every 2 ms of a plain boot's first 70 (minc's Node, its guard, the exec into the waiter, the
    // written-down boot), then every 40 ms: a TERM caught by Node just before an exec was once lost.
    const delays = [...Array.from({ length: 36 }, (_, i) => 2 * i), 80, 120, 160, 200, 240, 280];
    for (const delay of delays) {
      const child = spawn(MINC, ["-r", rootfs(), "sleep", "10"], { env: cleanEnv(), stdio: "ignore" });
      await sleep(delay);
      child.kill("SIGTERM");
      const status = await new Promise<number | null>((res) => child.on("exit", (code) => res(code)));
      assert.notEqual(status, 0, `after ${delay} ms`);
      assert.deepEqual(await settled(leftovers), [], `after ${delay} ms`);
    }
  });

  test("SIGKILL of minc during the boot and after it: its guard cleans up (working dir, network namespace)", async () => {
    const netns = (): string[] => spawnSync("ip", ["netns", "list"], { encoding: "utf8" }).stdout.split("\n").filter((l) => /^minc\d+/.test(l));
    for (let delay = 0; delay <= 210; delay += 15) {
      const child = spawn(MINC, ["--net", "-r", rootfs(), "sleep", "59.3"], { env: cleanEnv(), stdio: "ignore" });
      const mine = (): string[] => [...runtimeDirs(), ...netns()].filter((x) => x.includes(`minc${child.pid}`));
      await sleep(delay);
      child.kill("SIGKILL");
      await new Promise((res) => child.on("exit", res));
      assert.deepEqual(await settled(mine), [], `after ${delay} ms`);
      assert.equal(spawnSync("pgrep", ["-f", "sleep 59.3"]).status, 1, `after ${delay} ms: the container runs on`);
    }
  });

  test("minc-fork.sh does not start a container whose waiter is gone (SIGKILLed before setpriv tied the two)", () => {
    const fork = `${REPO}/libexec/minc-fork.sh`;
    const orphaned = spawnSync("sh", [fork, "echo", "started"], { encoding: "utf8", env: { ...cleanEnv(), MINC_WAITER_PID: "1" } });
    assert.equal(orphaned.status, 1);
    assert.equal(orphaned.stdout, "");
    assert.match(orphaned.stderr, /waiter is gone; the container is not started/);
    // Its parent here is the sh that passes its own pid, as the waiter does; the variable goes no further.
    const tied = spawnSync("sh", ["-c", `MINC_WAITER_PID=$$ sh ${fork} sh -c 'echo started "\${MINC_WAITER_PID-unset}"'`], { encoding: "utf8", env: cleanEnv() });
    assert.equal(tied.status, 0, tied.stderr);
    assert.equal(tied.stdout, "started unset\n");
  });

  test("the guard does not keep the user's directory busy: a umount right after minc ends, or is SIGKILLed, works", async () => {
    const dir = mkdtempSync("/tmp/minc-test-cwd-");
    const umountNow = (what: string): void => {
      const u = spawnSync("umount", [dir], { encoding: "utf8" });
      assert.equal(u.status, 0, `${what}: ${u.stderr}`);
    };
    try {
      for (let i = 0; i < 5; i++) {
        assert.equal(spawnSync("mount", ["-t", "tmpfs", "tmpfs", dir]).status, 0);
        assert.equal(spawnSync(MINC, ["-r", rootfs(), "true"], { cwd: dir, env: cleanEnv(), stdio: "ignore" }).status, 0);
        umountNow(`run ${i}`);
      }
      assert.equal(spawnSync("mount", ["-t", "tmpfs", "tmpfs", dir]).status, 0);
      const child = spawn(MINC, ["-r", rootfs(), "sh", "-c", "echo ready; exec sleep 60"], { cwd: dir, env: cleanEnv(), stdio: ["ignore", "pipe", "ignore"] });
      let stdout = "";
      child.stdout.on("data", (d) => { stdout += d; });
      for (let t = 0; t < 5000 && !stdout.includes("ready"); t += 20) await sleep(20);
      child.kill("SIGKILL");
      await new Promise((res) => child.on("exit", res));
      umountNow("after SIGKILL");
      assert.deepEqual(await settled(leftovers), []);
    } finally {
      spawnSync("umount", ["-l", dir]); // (lazily: a failed test must not leave it mounted)
      rmSync(dir, { recursive: true, force: true });
    }
  });

  const netTools = ["ip", "iptables", "nsenter"].every(hasTool);
  const v1 = ["memory", "pids"].every((c) => existsSync(`/sys/fs/cgroup/${c}/cgroup.procs`));
  const why = !netTools ? "needs ip, iptables, nsenter" : !v1 ? "needs cgroup v1 memory and pids" : undefined;
  test("SIGKILL of minc while its container runs: the guard runs the cleanup chain (cage, network, port map, working dir)", { skip: why }, async () => {
    const netBefore = new Set(netLeftovers());
    const cagesBefore = new Set(cages());
    const made = (): string[] => [...leftovers(), ...netLeftovers().filter((x) => !netBefore.has(x)), ...cages().filter((c) => !cagesBefore.has(c))];
    const child = spawn(MINC, ["--mem-limit", "64M", "--pid-max", "50", "--net", "dens", "-p", "18089:80", "-r", rootfs(), "sh", "-c", "echo ready; exec sleep 58.9"],
      { env: cleanEnv(), stdio: ["ignore", "pipe", "inherit"] });
    let stdout = "";
    child.stdout.on("data", (d) => { stdout += d; });
    for (let t = 0; t < 5000 && !stdout.includes("ready"); t += 20) await sleep(20);
    assert.match(stdout, /ready/);
    const running = made();
    for (const what of [/\/var\/run\/minc\d+-/, /mincv/, /minc:minc\d+/, /\/mincs\/minc\d+/]) {
      assert.ok(running.some((x) => what.test(x)), `while it runs: ${what} in ${running.join(", ")}`);
    }
    child.kill("SIGKILL");
    await new Promise((res) => child.on("exit", res));
    assert.deepEqual(await settled(made), []);
    assert.equal(spawnSync("pgrep", ["-f", "sleep 58.9"]).status, 1, "the container's command still runs");
  });

  test("Ctrl-C (INT to the whole process group) while minc-dens works: a quiet stop, exit 130, nothing left", { skip: why }, async () => {
    const netBefore = new Set(netLeftovers());
    const made = (): string[] => [...leftovers(), ...netLeftovers().filter((x) => !netBefore.has(x))];
    // minc-dens waits for its lock, held here a moment, so the INT finds it at work, as a Ctrl-C can.
    const lock = spawn("flock", ["/var/run/minc-dens.lock", "sleep", "1.5"], { stdio: "ignore" });
    const unlocked = new Promise((res) => lock.on("exit", res));
    await sleep(200);
    // detached: a process group of its own, as a terminal's foreground job has.
    const child = spawn(MINC, ["--net", "dens", "-r", rootfs(), "sleep", "30"], { env: cleanEnv(), stdio: ["ignore", "ignore", "pipe"], detached: true });
    let stderr = "";
    child.stderr.on("data", (d) => { stderr += d; });
    const exited = new Promise<number | null>((res) => child.on("exit", (code) => res(code)));
    await sleep(700);
    process.kill(-child.pid!, "SIGINT");
    assert.equal(await exited, 130, stderr);
    assert.equal(stderr, "", "a Ctrl-C is no failure");
    await unlocked;
    assert.deepEqual(await settled(made), []);
  });
});
