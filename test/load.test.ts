// Reliability under load: 200 containers one after another, then 200 more
// 8 at a time. Each must print what it was asked (its PID and its name)
// and, once all are done, nothing of any may be left on the host: working
// dirs, mounts, cgroups, network namespaces, veths, leases, rules. A mix of
// options makes each kind of leftover possible: every 10th container has a
// cgroup cage (--pid-max), every 10th a network namespace (--net), and every
// 25th of the parallel ones the dens network (bridge, NAT rules).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { after, describe, test } from "node:test";
import { MINC, allLeftovers, cannotBoot, cleanEnv, minc, rootfs, settled } from "./helpers.ts";

const skip = cannotBoot();
const COUNT = 200;
const PARALLEL = 8;

function optionsFor(i: number, parallel: boolean): string[] {
  if (i % 10 === 3) return ["--pid-max", "100"];
  if (i % 10 === 7) return ["--net"];
  if (parallel && i % 25 === 11) return ["--net", "dens"];
  return [];
}

function argsFor(i: number, parallel: boolean): string[] {
  return [...optionsFor(i, parallel), "--name", `load${i}`, "-r", rootfs(), "sh", "-c", "echo $$ $(hostname)"];
}

function runAsync(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(MINC, args, { env: cleanEnv(), stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => {
      stdout += d;
    });
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    child.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}

describe("under load", { skip }, () => {
  // What these containers left: only theirs (named after their working
  // directories), so that other containers may run on the host meanwhile.
  after(async () => {
    assert.deepEqual(await settled(allLeftovers), [], "containers left something behind");
  });

  test(`${COUNT} containers one after another all answer, and leave nothing`, async () => {
    const started = Date.now();
    for (let i = 0; i < COUNT; i++) {
      const r = minc(argsFor(i, false));
      assert.equal(r.status, 0, `container ${i} (${optionsFor(i, false).join(" ")}): ${r.stderr}`);
      assert.equal(r.stdout, `1 load${i}\n`, `container ${i}`);
    }
    console.log(`# ${COUNT} in a row: ${Date.now() - started} ms`);
    assert.deepEqual(await settled(allLeftovers), []);
  });

  test(`${COUNT} containers, ${PARALLEL} at a time, all answer, and leave nothing`, async () => {
    const started = Date.now();
    let next = 0;
    const failures: string[] = [];
    const worker = async (): Promise<void> => {
      while (next < COUNT) {
        const i = next++;
        const r = await runAsync(argsFor(i, true));
        if (r.status !== 0 || r.stdout !== `1 load${i}\n`)
          failures.push(
            `container ${i} (${optionsFor(i, true).join(" ")}): status ${r.status}, out ${JSON.stringify(r.stdout)}: ${r.stderr}`,
          );
      }
    };
    await Promise.all(Array.from({ length: PARALLEL }, worker));
    console.log(`# ${COUNT}, ${PARALLEL} at a time: ${Date.now() - started} ms`);
    assert.deepEqual(failures, []);
    assert.deepEqual(await settled(allLeftovers), []);
  });
});
