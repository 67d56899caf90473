// docs/boot.md's trace excerpts are what the code prints now: the same
// generation as `make docs`, into memory, compared with the document.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, describe, test } from "node:test";
import { excerptDiff, fill, normalise, regenerate, runsOf, select } from "../lib/boot-doc.ts";
import { cannotBoot, leftovers, REPO } from "./helpers.ts";

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
    assert.equal(select(trace, "steps=own /etc/hosts"), "# Give it its own /etc/hosts\n# (/etc/hosts does not exist: skipped)");
    assert.throws(() => select(trace, "nonsense"));
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
  after(() => assert.deepEqual(leftovers(), [], "a container left something behind"));

  test("its trace excerpts are what minc --debug prints now (make docs regenerates them)", () => {
    const doc = readFileSync(`${REPO}/docs/boot.md`, "utf8");
    const runs = runsOf(doc);
    assert.deepEqual(runs.sort(), ["dens", "direct", "mem", "nopriv", "pivot", "plain"]);
    const now = regenerate(doc, REPO);
    const diff = excerptDiff(doc, now);
    assert.ok(diff === "" && now === doc, `docs/boot.md is out of date (run make docs):\n${diff}`);
  });
});
