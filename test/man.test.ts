// The man pages come from the same definitions as --help.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { test } from "node:test";
import { mincManPage } from "../docs/man.ts";
import { MINC_OPTIONS } from "../lib/boot/minc-options.ts";
import { REPO, hasTool } from "./helpers.ts";

const hasMan = hasTool("man");

test("minc.1 lists every option of the table, with its argument and help", () => {
  const page = mincManPage();
  for (const o of MINC_OPTIONS) {
    const long = `\\fB\\-\\-${o.long.replace(/-/g, "\\-")}\\fR`;
    assert.ok(page.includes(long), `minc.1 lacks --${o.long}`);
    if (o.short) assert.ok(page.includes(`\\fB\\-${o.short}\\fR, ${long}`), `minc.1 lacks -${o.short}`);
    if (o.arg)
      assert.ok(page.includes(`${long} ${o.optionalArg ? "[" : ""}\\fI`), `minc.1 lacks --${o.long}'s argument`);
  }
});

test("gen-man writes the four pages; minc.1 is mincManPage()", () => {
  const dir = mkdtempSync(`${tmpdir()}/man-`);
  try {
    const r = spawnSync("node", [`${REPO}/docs/gen-man.ts`, dir], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(readFileSync(`${dir}/minc.1`, "utf8"), mincManPage());
    const marten = readFileSync(`${dir}/marten.1`, "utf8");
    for (const c of ["lc", "li", "rm", "rmi", "import", "pull", "commit", "rename", "renamei", "tag"]) {
      assert.match(marten, new RegExp(`^\\\\fBmarten\\\\fR \\\\fB${c}\\\\fR`, "m"), `marten.1 lacks ${c}`);
    }
    assert.match(marten, /\\-\\-insecure/);
    assert.match(readFileSync(`${dir}/polecat.1`, "utf8"), /\\-\\-ignore\\-state/);
    assert.match(readFileSync(`${dir}/ermine-breeder.1`, "utf8"), /\\-\\-rebuild/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("man -l renders them", { skip: hasMan ? false : "man is not installed" }, () => {
  for (const page of ["minc", "marten", "polecat", "ermine-breeder"]) {
    const r = spawnSync("man", ["-l", `${REPO}/docs/${page}.1`], {
      encoding: "utf8",
      env: { ...process.env, MANWIDTH: "80", MANPAGER: "cat", PAGER: "cat" },
    });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^${page.toUpperCase()}\\(1\\)`, "m"));
    assert.doesNotMatch(r.stderr, /warning/i, r.stderr);
    if (page === "minc")
      for (const o of MINC_OPTIONS) assert.ok(r.stdout.includes(`--${o.long}`), `rendered minc.1 lacks --${o.long}`);
  }
});
