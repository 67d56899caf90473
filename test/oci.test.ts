// The OCI runtime spec's own conformance suite (opencontainers/runtime-tools
// validation/, built by `make oci-suite` into test/.cache/oci) against
// ferret: every program, as its harness drives runc (create, start, state,
// kill, delete; runtimetest inside the container checks what it sees).
//
// A program may fail only where listed below, each with its cause; runc
// 1.1.5 fails the same ones here, and more (its score on this kind of
// machine: 26 programs with no failure, 3702 ok, 34-35 not ok).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { after, describe, test } from "node:test";
import { REPO, cannotBoot } from "./helpers.ts";

const SUITE = `${REPO}/test/.cache/oci/runtime-tools`;
const FERRET = `${REPO}/bin/ferret`;

/** The "not ok" lines a program may print here, and why. */
const EXPECTED_NOT_OK: Record<string, [number, string]> = {
  delete_resources: [1, "the suite's bug: it compares the pids limit as a pointer"],
  linux_cgroups_pids: [1, "the suite's bug: it compares the pids limit as a pointer"],
  linux_cgroups_relative_pids: [1, "the suite's bug: it compares the pids limit as a pointer"],
  misc_props: [1, "the suite's bug #1 (README of ../shared/oci)"],
  start: [1, "the suite's bug #7 (README of ../shared/oci)"],
  pidfile: [1, "the suite's bug (README of ../shared/oci)"],
  process_rlimits: [1, "the suite's bug #13 (README of ../shared/oci)"],
  linux_cgroups_memory: [
    6,
    "this kernel has no separate kernel memory limit (memory.kmem.*); it charges it to the limit",
  ],
  linux_cgroups_relative_memory: [1, "this kernel has no separate kernel memory limit"],
  linux_cgroups_relative_hugetlb: [2, "this host's hugetlb cgroups cannot be joined"],
  linux_cgroups_relative_blkio: [1, "ferret refuses blockIO (this host has no blkio.bfq.weight)"],
  linux_cgroups_relative_network: [1, "ferret refuses network resources (net_cls/net_prio cannot be joined here)"],
  hooks_stdin: [4, "ferret refuses hooks (not supported yet)"],
};

const skip =
  cannotBoot() ??
  (existsSync(`${SUITE}/validation/default/default.t`)
    ? undefined
    : "the conformance suite is not built (make oci-suite; its source is ../shared/oci)");

describe("the OCI conformance suite against ferret", { skip }, () => {
  // Its own TMPDIR: its bundles, and any mount a failure would leave there.
  const tmp = skip ? "" : mkdtempSync("/tmp/minc-test-oci-");
  if (tmp) chmodSync(tmp, 0o711); // (root of a container's user namespace, no one on the host, must pass through)
  const before = existsSync("/run/ferret") ? readdirSync("/run/ferret") : [];
  after(() => {
    const mounts = readFileSync("/proc/self/mountinfo", "utf8")
      .split("\n")
      .filter((l) => l.split(" ")[4]?.startsWith(`${tmp}/`));
    const states = (existsSync("/run/ferret") ? readdirSync("/run/ferret") : []).filter((id) => !before.includes(id));
    rmSync(tmp, { recursive: true, force: true });
    assert.deepEqual(mounts, [], "mounts left under the suite's TMPDIR");
    assert.deepEqual(states, [], "containers left in /run/ferret");
  });

  const programs = skip
    ? []
    : spawnSync("make", ["-s", "print-validation-tests"], { cwd: SUITE, encoding: "utf8" }).stdout.trim().split(/\s+/);
  for (const program of programs) {
    const name = program.split("/").slice(-2)[0];
    test(name, () => {
      const r = spawnSync(`./${program}`, [], {
        cwd: SUITE,
        encoding: "utf8",
        env: { ...process.env, RUNTIME: FERRET, TMPDIR: tmp },
        timeout: 120_000,
      });
      const notOk = r.stdout.split("\n").filter((l) => l.startsWith("not ok"));
      const [allowed, why] = EXPECTED_NOT_OK[name] ?? [0, ""];
      assert.ok(
        notOk.length <= allowed,
        `${notOk.length} "not ok" (${allowed} expected${why ? `: ${why}` : ""}):\n${r.stdout}\n${r.stderr}`,
      );
      assert.ok(!r.error, `${name}: ${r.error?.message}`);
    });
  }
});
