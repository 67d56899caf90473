// -B: minc returns at once; the container runs on and cleans up after itself.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { after, describe, test } from "node:test";
import { cannotBoot, leftovers, minc, rootfs, sleep } from "./helpers.ts";

const skip = cannotBoot();

async function gone(path: string, ms: number): Promise<boolean> {
  for (let t = 0; t < ms; t += 50) {
    if (!existsSync(path)) return true;
    await sleep(50);
  }
  return false;
}

describe("background mode", { skip }, () => {
  after(() => assert.deepEqual(leftovers(), [], "a container left something behind"));

  test("-B returns at once, logs the output, and cleans the working dir at the end", async () => {
    const root = rootfs(); // built before the clock starts (the first test of a fresh clone builds it)
    const started = Date.now();
    const r = minc(["-B", "-r", root, "sh", "-c", "echo from-the-background; ps -o pid,comm; sleep 2"]);
    const took = Date.now() - started;
    assert.equal(r.status, 0, r.stderr);
    assert.ok(took < 1000, `minc -B waited ${took} ms for the container`);
    const dir = /See (\S+)\/log for output/.exec(r.stdout)?.[1];
    assert.ok(dir, r.stdout);
    await sleep(500);
    assert.ok(existsSync(`${dir}/pid`), "the container is not running");
    const log = `${dir}/log`;
    let seen = "";
    for (let t = 0; t < 5000 && !seen.includes("from-the-background"); t += 50) {
      try { seen = readFileSync(log, "utf8"); } catch { break; }
      await sleep(50);
    }
    assert.match(seen, /from-the-background/);
    assert.match(seen, /^\s*1 sh$/m);
    assert.ok(await gone(dir, 5000), `${dir} was not removed`);
  });

  test("-B: a waiter SIGKILLed while its container runs is cleaned up after by its watcher", async () => {
    const r = minc(["-B", "-r", rootfs(), "sleep", "58.7"]);
    assert.equal(r.status, 0, r.stderr);
    const dir = /See (\S+)\/log for output/.exec(r.stdout)?.[1];
    assert.ok(dir, r.stdout);
    for (let t = 0; t < 5000 && !existsSync(`${dir}/pid`); t += 20) await sleep(20);
    const waiter = Number(readFileSync(`${dir}/waiter`, "utf8"));
    process.kill(waiter, "SIGKILL");
    assert.ok(await gone(dir, 5000), `${dir} was not removed`);
    await sleep(200);
    assert.equal(spawnSync("pgrep", ["-f", "sleep 58.7"]).status, 1, "the container runs on");
    assert.equal(spawnSync("pgrep", ["-f", `minc-waiter.sh --watch ${dir}`]).status, 1, "the watcher stays");
  });

  test("-B -k keeps the log", async () => {
    const r = minc(["-B", "-k", "-r", rootfs(), "echo", "kept"]);
    const dir = /See (\S+)\/log for output/.exec(r.stdout)?.[1];
    assert.ok(dir, r.stdout);
    const done = (): boolean => existsSync(`${dir}/log`) && readFileSync(`${dir}/log`, "utf8") === "kept\n" && !existsSync(`${dir}/pid`);
    for (let t = 0; t < 5000 && !done(); t += 50) await sleep(50);
    await sleep(100); // the waiter's last step after removing the pid file
    try {
      assert.equal(readFileSync(`${dir}/log`, "utf8"), "kept\n");
    } finally {
      rmSync(dir, { recursive: true });
    }
  });
});
