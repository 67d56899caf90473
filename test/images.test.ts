// Images end to end: marten pull from a registry on 127.0.0.1 and marten
// import, then minc -r IMAGE and minc -t CONTAINER on the image store.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { REPO, cannotBoot, cleanEnv, leftovers, rootfs, start, waitFor, type Run } from "./helpers.ts";
import {
  buildImage,
  cannotRunRegistry,
  push,
  scratch,
  startFront,
  startRegistry,
  stopAll,
  type FileEntry,
  type Registry,
} from "./registry-fixture.ts";

const skip = cannotBoot() ?? cannotRunRegistry();
if (skip) console.log(`# skipping the image tests: ${skip}`);

let store = "";
let registry: Registry | undefined;
const env = (): NodeJS.ProcessEnv => cleanEnv({ MINCS_DIR: store });

function run(program: string, args: string[]): Run {
  const r = spawnSync(`${REPO}/bin/${program}`, args, { encoding: "utf8", env: env(), input: "", timeout: 60_000 });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/**
 * minc -r IMAGE's stdout, as the shell MINCS writes it for scripts
 * (ID=$(minc -r IMAGE ...)): the new container's id first, then the
 * command's output, then how to reuse the container.
 */
function inNew(r: Run): { id: string; out: string } {
  assert.equal(r.status, 0, r.stderr);
  const m = /^([0-9a-f]{64})\n([\s\S]*)To reuse this, run: \S*\/minc -t ([0-9a-f]{12})\n$/.exec(r.stdout);
  assert.ok(m, `not the id, the output, the reuse line: ${JSON.stringify(r.stdout)}`);
  assert.equal(m[3], m[1].slice(0, 12));
  return { id: m[1], out: m[2] };
}

/** The files under the store's staging directories (where a pull downloads to), as paths. */
function stagedFiles(): string[] {
  const staging = `${store}/.staging`;
  try {
    return (readdirSync(staging, { recursive: true }) as string[]).map((f) => `${staging}/${f}`);
  } catch {
    return []; // (not made yet, or a directory went while it was read)
  }
}

/** A busybox userland as one layer: the static binary and the applets the tests use. */
function busyboxLayer(): Record<string, FileEntry> {
  const layer: Record<string, FileEntry> = {
    "bin/busybox": { content: readFileSync(`${rootfs()}/bin/busybox`), mode: 0o755 },
  };
  for (const applet of ["sh", "cat", "ls", "echo", "pwd", "env", "id", "test"])
    layer[`bin/${applet}`] = { symlink: "busybox" };
  return layer;
}

describe("images", { skip }, () => {
  before(async () => {
    store = mkdtempSync("/tmp/minc-test-store-");
    registry = await startRegistry();
    const layout = scratch("minc-test-layout-");
    buildImage(layout, "1", {
      layers: [
        { ...busyboxLayer(), "etc/old": "from the lower layer\n", "data/a": "lower\n" },
        { "etc/.wh.old": "", "data/.wh..wh..opq": "", "data/b": "upper\n", "app/hello.txt": "hi\n" },
      ],
      config: {
        Entrypoint: ["/bin/sh", "-c"],
        Cmd: ["echo entry:$GREETING; pwd"],
        Env: ["GREETING=hello", "PATH=/bin"],
        WorkingDir: "/app",
      },
    });
    await push(layout, "1", `${registry.host}/library/app:1`);
  });
  after(async () => {
    await stopAll();
    rmSync(store, { recursive: true, force: true });
    assert.deepEqual(leftovers(), []);
  });

  test("marten pull, then minc -r IMAGE runs its entrypoint with its environment and working directory", () => {
    const p = run("marten", ["pull", `${registry!.host}/library/app:1`]);
    assert.equal(p.status, 0, p.stderr);
    const li = run("marten", ["li"]);
    assert.match(li.stdout, /app:1/, li.stdout);
    const r = inNew(run("minc", ["-r", "app:1"]));
    assert.equal(r.out, "entry:hello\n/app\n");
    assert.ok(existsSync(`${store}/containers/${r.id}`), "the id printed is not the new container's");
  });

  test("a second pull downloads no layer the store has; a Docker schema2 image pulls and runs too", async () => {
    const again = spawnSync(`${REPO}/bin/marten`, ["--debug", "pull", `${registry!.host}/library/app:1`], {
      encoding: "utf8",
      env: env(),
      input: "",
    });
    assert.equal(again.status, 0, again.stderr);
    assert.match(again.stderr, /2 of the layers are in the image store already/);
    assert.doesNotMatch(again.stderr, /Download the layers/);
    const layout = scratch("minc-test-layout-");
    buildImage(layout, "2", { layers: [busyboxLayer()], config: { Cmd: ["echo", "schema2"], Env: ["PATH=/bin"] } });
    await push(layout, "2", `${registry!.host}/library/old:2`, { format: "v2s2" });
    assert.equal(run("marten", ["pull", `${registry!.host}/library/old:2`]).status, 0);
    assert.equal(inNew(run("minc", ["-r", "old:2"])).out, "schema2\n");
  });

  test("marten commit of a container that wrote a file: a new container of the committed image sees it", () => {
    const { id } = inNew(run("minc", ["-r", "app:1", "--name", "committer", "sh", "-c", "echo committed > /app/made"]));
    const c = run("marten", ["commit", id.slice(0, 12)]);
    assert.equal(c.status, 0, c.stderr);
    const image = c.stdout.trim().split("\n").pop()!;
    assert.equal(inNew(run("minc", ["-r", image.slice(0, 16), "cat", "/app/made"])).out, "committed\n");
  });

  test("a whiteout deletes a lower file, an opaque directory hides the lower one", () => {
    const r = inNew(
      run("minc", ["-r", "app:1", "sh", "-c", "test -e /etc/old && echo old-is-back; ls /data; cat /app/hello.txt"]),
    );
    assert.equal(r.out, "b\nhi\n");
  });

  test("minc -t CONTAINER reuses the container and sees its writes", () => {
    const { id } = inNew(run("minc", ["-r", "app:1", "sh", "-c", "echo kept > /app/state"]));
    const again = run("minc", ["-t", id.slice(0, 12), "cat", "/app/state"]);
    assert.equal(again.status, 0, again.stderr);
    assert.equal(again.stdout, "kept\n");
    assert.match(run("marten", ["lc"]).stdout, new RegExp(id.slice(0, 12)));
  });

  test("marten import DIR, then minc -r NAME", () => {
    const dir = mkdtempSync("/tmp/minc-test-import-");
    try {
      cpSync(rootfs(), dir, { recursive: true, verbatimSymlinks: true });
      writeFileSync(`${dir}/marker`, "imported\n");
      const i = run("marten", ["import", dir, "--name", "localimg"]);
      assert.equal(i.status, 0, i.stderr);
      assert.equal(inNew(run("minc", ["-r", "localimg", "cat", "/marker"])).out, "imported\n");
    } finally {
      rmSync(dir, { recursive: true });
    }
  });

  test("minc -r library/bbx: an image that the shell MINCS named after its repository runs", () => {
    const i = run("marten", ["import", rootfs()]);
    assert.equal(i.status, 0, i.stderr);
    const id = i.stdout.trim();
    writeFileSync(`${store}/images/${id}/name`, "library/bbx\n"); // as the shell marten's import of a docker save named it
    assert.equal(inNew(run("minc", ["-r", "library/bbx", "sh", "-c", "echo ran"])).out, "ran\n");
    const before = run("marten", ["lc"]).stdout;
    const missing = run("minc", ["-r", "library/none", "true"]);
    assert.equal(missing.status, 2, missing.stderr);
    assert.match(missing.stderr, /no such image: library\/none/);
    assert.equal(run("marten", ["lc"]).stdout, before);
  });

  test("marten pull interrupted mid-download (TERM to marten alone): minc-smuggler ends, no staging directory, no image", async () => {
    const layout = scratch("minc-test-layout-");
    const image = buildImage(layout, "3", {
      layers: [busyboxLayer(), { "data/big": randomBytes(4 << 20) }],
      config: { Cmd: ["true"] },
    });
    await push(layout, "3", `${registry!.host}/library/stalled:3`);
    const front = await startFront(registry!, { stallBlob: image.layers[1].digest });
    try {
      const inStore = (dir: string): string[] =>
        existsSync(`${store}/${dir}`) ? readdirSync(`${store}/${dir}`).sort() : [];
      const images = inStore("images");
      const pull = start(`${REPO}/bin/marten`, ["pull", `${front.host}/library/stalled:3`], { env: env() });
      // The front sends half of the blob, then nothing: once that half is in
      // minc-smuggler's partial file in the staging directory, the pull is mid-download.
      const stalled = image.layers[1];
      const half = stalled.size >> 1;
      const partial = (): string[] => stagedFiles().filter((f) => f.includes(`/${stalled.digest.slice(7)}.partial-`));
      const size = (f: string): number => statSync(f, { throwIfNoEntry: false })?.size ?? 0;
      await waitFor(
        `half of ${stalled.digest} (${half} bytes) written to its partial file in ${store}/.staging`,
        () => {
          if (pull.child.exitCode !== null || pull.child.signalCode !== null)
            assert.fail(`marten pull ended first: ${pull.stderr()}`);
          return partial().some((f) => size(f) >= half);
        },
        {
          saw: () =>
            `${stagedFiles()
              .map((f) => `${f} (${size(f)} bytes)`)
              .join(", ")}; stderr ${JSON.stringify(pull.stderr())}`,
        },
      );
      pull.child.kill("SIGTERM");
      await pull.exit();
      const stderr = pull.stderr();
      assert.equal(pull.child.signalCode, "SIGTERM", `exit ${pull.child.exitCode}: ${stderr}`);
      assert.match(stderr, /marten: interrupted by SIGTERM; nothing kept/);
      assert.deepEqual(inStore(".staging"), []);
      assert.deepEqual(inStore("images"), images);
      assert.equal(
        spawnSync("pgrep", ["-f", `minc-smuggler ${front.host}`], { encoding: "utf8" }).stdout,
        "",
        "minc-smuggler still runs",
      );
    } finally {
      await front.stop();
    }
  });

  test("an image that is not in the store: exit 2, no container made", () => {
    const before = run("marten", ["lc"]).stdout;
    const r = run("minc", ["-r", "no-such-image", "true"]);
    assert.equal(r.status, 2, r.stderr);
    assert.equal(run("marten", ["lc"]).stdout, before);
  });
});
