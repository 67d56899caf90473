// Bash completion: source docs/mincs.bash (make completion) in a real bash, set
// COMP_WORDS/COMP_CWORD, call the completion function, read COMPREPLY.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { after, before, describe, test } from "node:test";
import { CROSS_ARCHES, MINC_OPTIONS } from "../lib/boot/minc-options.ts";
import { REPO, hasTool } from "./helpers.ts";

const FILE = `${REPO}/docs/mincs.bash`;
const hasBash = hasTool("bash");

function complete(line: string, env: NodeJS.ProcessEnv = {}): string[] {
  // line ends where TAB is pressed; a trailing space starts an empty word.
  const words = line.split(" ");
  const script = [
    `source ${FILE}`,
    `COMP_WORDS=(${words.map((w) => `'${w}'`).join(" ")})`,
    `COMP_CWORD=${words.length - 1}`,
    `COMP_LINE='${line}'; COMP_POINT=\${#COMP_LINE}`,
    `fn=$(complete -p ${words[0]} | sed -n 's/.*-F \\([^ ]*\\) .*/\\1/p')`,
    `"$fn" ${words[0]} "\${COMP_WORDS[COMP_CWORD]}" "\${COMP_WORDS[COMP_CWORD-1]}"`,
    `printf '%s\\n' "\${COMPREPLY[@]}"`,
  ].join("\n");
  const r = spawnSync("bash", ["--norc", "--noprofile", "-c", script], {
    encoding: "utf8",
    env: { ...process.env, PATH: `${REPO}/bin:${process.env.PATH}`, ...env },
  });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout
    .split("\n")
    .filter((l) => l !== "")
    .sort();
}

describe("bash completion", { skip: hasBash ? false : "bash is not installed" }, () => {
  let store = "";
  before(() => {
    // A store with one image and one container, named.
    store = mkdtempSync(`${tmpdir()}/store-`);
    const src = `${store}/src`;
    mkdirSync(`${src}/etc`, { recursive: true });
    writeFileSync(`${src}/etc/hello`, "hi\n");
    const env = { ...process.env, MINCS_DIR: `${store}/mincs` };
    let r = spawnSync(`${REPO}/bin/marten`, ["import", src, "--name", "tinyimg"], { encoding: "utf8", env });
    assert.equal(r.status, 0, r.stderr);
    r = spawnSync(`${REPO}/libexec/minc-farm`, ["fork", "tinyimg"], { encoding: "utf8", env });
    assert.equal(r.status, 0, r.stderr);
    const id = r.stdout.trim().split("\n").at(-1)!.split(/\s+/)[0];
    r = spawnSync(`${REPO}/bin/marten`, ["rename", id, "tinyctr"], { encoding: "utf8", env });
    assert.equal(r.status, 0, r.stderr);
  });
  after(() => rmSync(store, { recursive: true, force: true }));

  test("is registered for the four commands", () => {
    const r = spawnSync("bash", ["--norc", "-c", `source ${FILE}; complete -p minc marten polecat ermine-breeder`], {
      encoding: "utf8",
    });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /-F _minc minc/);
    assert.match(r.stdout, /-F _marten marten/);
    assert.match(r.stdout, /-F _polecat polecat/);
    assert.match(r.stdout, /-F _ermine_breeder ermine-breeder/);
  });

  test("minc --ro<TAB> completes to --rootdir; every option of the table is offered", () => {
    assert.deepEqual(complete("minc --ro"), ["--rootdir"]);
    const all = complete("minc -");
    for (const o of MINC_OPTIONS) {
      assert.ok(all.includes(`--${o.long}`), `--${o.long} not offered`);
      if (o.short) assert.ok(all.includes(`-${o.short}`), `-${o.short} not offered`);
    }
  });

  test("minc option arguments: arches, net modes, images of the store (MINCS_DIR)", () => {
    assert.ok(complete("minc --cross aa").includes("aarch64"));
    // Only what minc --cross takes (lib/boot/minc-options.ts CROSS_ARCHES); marten --arch takes more.
    assert.deepEqual(complete("minc --cross i"), []);
    assert.deepEqual(Object.keys(CROSS_ARCHES).sort(), complete("minc --arch "));
    assert.ok(complete("marten pull x --arch i").includes("i386"));
    assert.deepEqual(complete("minc --net d"), ["dens"]);
    assert.ok(complete("minc -r tiny", { MINCS_DIR: `${store}/mincs` }).includes("tinyimg"));
    assert.ok(!complete("minc -r tiny").includes("tinyimg"), "MINCS_DIR not respected");
  });

  test("after the command word, minc completes files, not its options", () => {
    assert.deepEqual(complete("minc -r / ls --ro"), []);
  });

  test("marten: commands, their options, image and container names", () => {
    assert.deepEqual(complete("marten re"), ["rename", "renamei"]);
    assert.deepEqual(complete("marten pull --ins"), ["--insecure"]);
    assert.ok(complete("marten rmi tiny", { MINCS_DIR: `${store}/mincs` }).includes("tinyimg"));
    const ctr = complete("marten rm tiny", { MINCS_DIR: `${store}/mincs` });
    assert.ok(!ctr.includes("tinyimg"), "rm offered an image");
    assert.ok(ctr.includes("tinyctr"), `rm did not offer the container: ${ctr.join(" ")}`);
    assert.ok(
      complete("minc -t tiny", { MINCS_DIR: `${store}/mincs` }).includes("tinyctr"),
      "minc -t did not offer the container",
    );
  });

  test("polecat options", () => {
    assert.deepEqual(complete("polecat --ig"), ["--ignore-state"]);
  });

  test("ermine-breeder: commands and arches", () => {
    assert.deepEqual(complete("ermine-breeder te"), ["testrun"]);
    assert.deepEqual(complete("ermine-breeder build --arch u"), ["um"]);
    assert.deepEqual(complete("ermine-breeder build --re"), ["--rebuild", "--rebuild-kernel", "--repack"]);
    assert.deepEqual(complete("ermine-breeder dist"), ["distclean"]);
    assert.deepEqual(complete("ermine-breeder testrun --n"), ["--net"]);
    assert.deepEqual(complete("ermine-breeder testrun --cmdline quiet --w"), ["--work"]);
    assert.deepEqual(complete("ermine-breeder build --arch a"), ["all"]);
    assert.deepEqual(complete("ermine-breeder --arch um testrun --ti"), ["--timeout"]);
    assert.ok(complete("ermine-breeder testrun --").includes("--work"));
    assert.ok(!complete("ermine-breeder build --").includes("--work"));
  });
});
