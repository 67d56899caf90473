// The working directory's layout has one owner, lib/boot/workdir.ts: the sh of
// the waiter, its guard and watcher names the same files (through the
// variables minc-waiter-common.sh sets in one place), and no other
// TypeScript spells a name of the table onto a directory. No container, no
// root: it reads the sources.
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { WAITER_SCRIPTS } from "../lib/core/libexec.ts";
import { fixedPart, fstabOf, SH_VARIABLES, WORKDIR, workdirPaths, type WorkdirEntry } from "../lib/boot/workdir.ts";
import { REPO } from "./helpers.ts";

const ENTRIES = Object.entries(WORKDIR) as [string, WorkdirEntry][];
const COMMON = "libexec/minc-waiter-common.sh";

/** The sh files of libexec/: the waiter's parts and minc-fork.sh. */
const SH_FILES = readdirSync(`${REPO}/libexec`)
  .filter((f) => f.endsWith(".sh"))
  .sort()
  .map((f) => `libexec/${f}`);

function source(file: string): string {
  return readFileSync(`${REPO}/${file}`, "utf8");
}

/** The body of workdir_files in the common part: the one place the sh names the files. */
function workdirFilesBody(): string {
  const m = /^workdir_files\(\) \{[^\n]*\n([\s\S]*?)^\}$/m.exec(source(COMMON));
  assert.ok(m, `${COMMON} has no workdir_files() { ... }`);
  return m[1];
}

/** sh code without its comments (a # that starts a word; not ${x#...}). */
function code(text: string): string[] {
  return text
    .split("\n")
    .map((l) => l.replace(/(^|\s)#.*$/, ""))
    .filter((l) => l.trim() !== "");
}

describe("the working directory's layout (lib/boot/workdir.ts)", () => {
  test("the table: one entry a name, each says who writes it, who reads it, when it goes", () => {
    const names = ENTRIES.map(([, e]) => e.name);
    assert.deepEqual(names, [...new Set(names)], "a name twice");
    for (const [key, e] of ENTRIES) {
      assert.match(e.name, /^[A-Za-z0-9._-]+(\{N\}|\{PID\})?$/, key);
      for (const what of ["writes", "reads", "goes"] as const) assert.ok(e[what].trim(), `${key}: no ${what}`);
    }
    const paths = workdirPaths("/d");
    assert.equal(paths.pid, "/d/pid");
    assert.equal(paths.resolvConf, "/d/resolv.conf");
    assert.equal(paths.fstab(3), "/d/minc-core.fstab3");
    assert.equal(fstabOf(paths.bootScript, 3), paths.fstab(3), "the boot script's fstabs are named after it");
  });

  test("the sh names exactly the table's files, in workdir_files of minc-waiter-common.sh", () => {
    const assigned = new Map<string, string>();
    for (const line of code(workdirFilesBody())) {
      for (const word of line.trim().split(/\s+/)) {
        const m = /^([a-z_]+)=\$1\/(\S+)$/.exec(word);
        assert.ok(m, `${COMMON}: workdir_files sets only VAR=$1/NAME, not ${word}`);
        assigned.set(m[1], m[2]);
      }
    }
    const table = new Map(
      Object.entries(SH_VARIABLES).map(([key, v]) => [v, fixedPart(WORKDIR[key as keyof typeof WORKDIR].name)]),
    );
    assert.deepEqual([...assigned].sort(), [...table].sort());
  });

  test("no other line of the sh builds a path in the working directory, and each variable is used", () => {
    const body = workdirFilesBody();
    const vars: string[] = Object.values(SH_VARIABLES);
    const used = new Set<string>();
    for (const file of SH_FILES) {
      const text = file === COMMON ? source(file).replace(body, "") : source(file);
      for (const line of code(text)) {
        assert.doesNotMatch(
          line,
          /\$\{?tmpdir\}?"?\//,
          `${file}: a path built on $tmpdir, not named in workdir_files: ${line.trim()}`,
        );
        for (const v of vars) if (new RegExp(`\\$\\{?${v}\\b`).test(line)) used.add(v);
      }
    }
    assert.deepEqual(
      vars.filter((v) => !used.has(v)),
      [],
      "set by workdir_files, used nowhere",
    );
  });

  test("the waiter's parts are the minc-waiter*.sh of libexec/ (what is installed and packed)", () => {
    assert.deepEqual(
      [...WAITER_SCRIPTS].sort(),
      SH_FILES.map((f) => f.slice("libexec/".length))
        .filter((f) => f.startsWith("minc-waiter"))
        .sort(),
    );
  });

  test("no other TypeScript joins a name of the table onto a directory", () => {
    const names = ENTRIES.map(
      ([, e]) => fixedPart(e.name).replace(/[.]/g, "\\.") + (fixedPart(e.name) !== e.name ? "" : "(?![\\w.-])"),
    ).join("|");
    const join = new RegExp(`\\$\\{([^{}]*)\\}/(${names})`, "g");
    // An image's layer directory in the store (lib/store/farm.ts's layout) has a
    // root, a storage and a baseid too: not a working directory.
    const layerDirs: Record<string, string[]> = {
      "lib/store/archive.ts": ["dir", "b.dir", "blob.dir"],
      "lib/store/farm.ts": [
        "this.imageDir(id)",
        "this.imageDir(cur)",
        "this.imageDir(l)",
        "this.imageDir(i)",
        "l.dir",
        "target",
      ],
      "libexec/minc-farm.ts": ["store.imageDir(id)", "stage"],
      "libexec/minc-smuggler.ts": ["dir"],
    };
    const found: string[] = [];
    for (const top of ["bin", "lib", "libexec", "docs"]) {
      for (const f of readdirSync(`${REPO}/${top}`).filter((f) => f.endsWith(".ts"))) {
        const file = `${top}/${f}`;
        if (file === "lib/boot/workdir.ts") continue;
        source(file)
          .split("\n")
          .forEach((line, i) => {
            for (const m of line.matchAll(join)) {
              const [, expr, name] = m;
              if (["root", "storage", "baseid"].includes(name) && layerDirs[file]?.includes(expr.trim())) continue;
              found.push(`${file}:${i + 1}: ${m[0]}`);
            }
          });
      }
    }
    assert.deepEqual(found, [], "use workdirPaths(dir) of lib/boot/workdir.ts");
  });
});
