// marten and image archives: docker save (old and current formats), OCI
// image layouts (tar and directory, gzip and zstd layers, multi-platform
// indexes), whiteouts seen through a real overlay mount, refused and corrupt
// archives, names, and pull through a stand-in minc-smuggler.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { dirname } from "node:path";
import { after, before, describe, test } from "node:test";
import { gzipSync, zstdCompressSync } from "node:zlib";
import { inOverlayOf, REPO, waitFor } from "./helpers.ts";
import { makeTar, T0, type E } from "./tar.ts";

const MARTEN = `${REPO}/bin/marten`;
const FARM = `${REPO}/libexec/minc-farm`;
const skip = process.getuid?.() !== 0 ? "needs root (overlay mounts, owners, device nodes)" : undefined;
if (skip) console.log(`# marten tests skipped: ${skip}`);

// ---- fixtures: layers, configs and archives built here ----

const sha = (b: Buffer | string): string => createHash("sha256").update(b).digest("hex");
const chain = (diffs: string[]): string[] => {
  const out: string[] = [];
  for (const d of diffs) out.push(out.length ? sha(`sha256:${out[out.length - 1]} sha256:${d}`) : d);
  return out;
};

type Files = Map<string, Buffer | { symlink: string }>;

const tarOf = makeTar;

/** An archive (or image directory) of the files. */
async function archiveOf(files: Files): Promise<Buffer> {
  const entries: E[] = [];
  const dirs = new Set<string>();
  for (const name of [...files.keys()].sort()) {
    for (let d = dirname(name); d !== "."; d = dirname(d)) dirs.add(d);
  }
  for (const d of [...dirs].sort()) entries.push({ name: `${d}/`, type: "directory" });
  for (const [name, v] of [...files.entries()].sort()) {
    if (Buffer.isBuffer(v)) entries.push({ name, data: v });
    else entries.push({ name, type: "symlink", linkname: v.symlink });
  }
  return makeTar(entries);
}

function writeDir(files: Files, dir: string): void {
  for (const [name, v] of files) {
    mkdirSync(dirname(`${dir}/${name}`), { recursive: true });
    if (Buffer.isBuffer(v)) writeFileSync(`${dir}/${name}`, v);
    else symlinkSync(v.symlink, `${dir}/${name}`);
  }
}

function configOf(diffIds: string[], extra: Record<string, unknown> = {}, arch = "amd64"): Buffer {
  return Buffer.from(
    JSON.stringify({
      architecture: arch,
      os: "linux",
      config: { Env: ["PATH=/bin", "FROM_IMAGE=yes"], Cmd: ["/bin/sh"], WorkingDir: "/" },
      rootfs: { type: "layers", diff_ids: diffIds.map((d) => `sha256:${d}`) },
      ...extra,
    }),
  );
}

/** docker save's current format: manifest.json, <config>.json, <dir>/layer.tar. */
function dockerSave(layers: Buffer[], config: Buffer, repoTag?: string): Files {
  const files: Files = new Map();
  const cfg = `${sha(config)}.json`;
  files.set(cfg, config);
  const names = layers.map((l, i) => `${sha(`${i}${sha(l)}`)}/layer.tar`);
  for (const [i, l] of layers.entries()) files.set(names[i], l);
  files.set(
    "manifest.json",
    Buffer.from(JSON.stringify([{ Config: cfg, RepoTags: repoTag ? [repoTag] : null, Layers: names }])),
  );
  return files;
}

/** docker save's old format: repositories, <id>/json (with parent), <id>/layer.tar. */
function dockerSaveOld(layers: Buffer[], repo: string, tag: string): Files {
  const files: Files = new Map();
  let parent: string | undefined;
  for (const l of layers) {
    const id = sha(`v1 ${parent ?? ""} ${sha(l)}`);
    files.set(
      `${id}/json`,
      Buffer.from(
        JSON.stringify({
          id,
          parent,
          created: T0.toISOString(),
          os: "linux",
          architecture: "amd64",
          config: { Env: ["OLD=1"], Cmd: ["/bin/true"] },
        }),
      ),
    );
    files.set(`${id}/layer.tar`, l);
    files.set(`${id}/VERSION`, Buffer.from("1.0"));
    parent = id;
  }
  files.set("repositories", Buffer.from(JSON.stringify({ [repo]: { [tag]: parent } })));
  return files;
}

interface OciImage {
  blobs: Buffer[];
  mediaTypes: string[];
  config: Buffer;
  platform?: { os: string; architecture: string; variant?: string };
}

const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
const TAR = "application/vnd.oci.image.layer.v1.tar";
const GZ = "application/vnd.oci.image.layer.v1.tar+gzip";
const ZST = "application/vnd.oci.image.layer.v1.tar+zstd";

/**
 * An OCI image layout: one image, or (nested=true) an index of several platforms, as skopeo --all writes.
 * ref is the full reference that minc-smuggler writes as io.mincs.ref.
 */
function ociLayout(
  images: OciImage[],
  opts: { refName?: string; ref?: string; nested?: boolean; attestation?: boolean } = {},
): Files {
  const files: Files = new Map();
  const blob = (b: Buffer): { digest: string; size: number } => {
    files.set(`blobs/sha256/${sha(b)}`, b);
    return { digest: `sha256:${sha(b)}`, size: b.length };
  };
  const descs = images.map((img) => {
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        config: { mediaType: "application/vnd.oci.image.config.v1+json", ...blob(img.config) },
        layers: img.blobs.map((b, i) => ({ mediaType: img.mediaTypes[i], ...blob(b) })),
      }),
    );
    return { mediaType: OCI_MANIFEST, ...blob(manifest), ...(img.platform ? { platform: img.platform } : {}) };
  });
  const named = {
    ...(opts.refName ? { "org.opencontainers.image.ref.name": opts.refName } : {}),
    ...(opts.ref ? { "io.mincs.ref": opts.ref } : {}),
  };
  const annotations = Object.keys(named).length ? named : undefined;
  let top: unknown[] = descs;
  if (opts.attestation) {
    const att = Buffer.from(
      JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: blob(Buffer.from("{}")), layers: [] }),
    );
    top = [
      ...descs,
      {
        mediaType: OCI_MANIFEST,
        ...blob(att),
        platform: { os: "unknown", architecture: "unknown" },
        annotations: { "vnd.docker.reference.type": "attestation-manifest" },
      },
    ];
  }
  if (opts.nested) {
    const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: top }));
    top = [{ mediaType: OCI_INDEX, ...blob(index), annotations }];
  } else if (annotations) {
    top = top.map((d) => ({ ...(d as object), annotations }));
  }
  files.set("oci-layout", Buffer.from(JSON.stringify({ imageLayoutVersion: "1.0.0" })));
  files.set("index.json", Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: top })));
  return files;
}

// ---- running marten and minc-farm on a store of the test's own ----

interface Result {
  status: number | null;
  stdout: string;
  stderr: string;
}

let tmp = "";
let store = "";
let n = 0;

function env(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env, MINCS_DIR: store, ...extra };
  delete e.MINC_DEBUG;
  delete e.MINC_ARCH;
  return e;
}

function marten(args: string[], extra: NodeJS.ProcessEnv = {}, bin = MARTEN): Result {
  const r = spawnSync(bin, args, { encoding: "utf8", env: env(extra), timeout: 60_000 });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function farm(args: string[], extra: NodeJS.ProcessEnv = {}): string {
  const r = spawnSync(FARM, args, { encoding: "utf8", env: env(extra) });
  assert.equal(r.status, 0, `minc-farm ${args.join(" ")}: ${r.stderr}`);
  return r.stdout.trim();
}

function ok(r: Result): string {
  assert.equal(r.status, 0, `exit ${r.status}: ${r.stderr}`);
  return r.stdout.trim();
}

/** A failure: the status, and one line on stderr. */
function fails(r: Result, status: number, message: RegExp): void {
  assert.equal(r.status, status, `exit ${r.status}: ${r.stdout}${r.stderr}`);
  assert.match(r.stderr, message);
  assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
}

function file(name: string, data: Buffer): string {
  const path = `${tmp}/${n++}-${name}`;
  writeFileSync(path, data);
  return path;
}

function images(): string[] {
  return readdirSync(`${store}/images`).sort();
}

/** The store, as a listing of every path in it (but the lock). */
function snapshot(): string {
  return spawnSync("find", [store, "-not", "-name", ".lock", "-printf", "%P %y %s\\n"], { encoding: "utf8" })
    .stdout.split("\n")
    .sort()
    .join("\n");
}

/** Run a shell script inside an overlay mount of the image's layers (in a private mount namespace). */
function inOverlay(ref: string, script: string): string {
  return inOverlayOf(farm(["imagestack", ref]), script, tmp);
}

// ---- the layers most tests use ----

let base: Buffer;
let upper: Buffer;
let diffs: string[];

const SYSTEM_STORE = "/var/lib/mincs";

describe("marten", { skip }, () => {
  const systemStore = existsSync(SYSTEM_STORE);
  before(async () => {
    tmp = mkdtempSync("/tmp/minc-test-marten-");
    store = `${tmp}/store`;
    farm(["li"]); // makes the store
    base = await tarOf([
      { name: "etc/", type: "directory" },
      { name: "etc/keep", data: "kept\n" },
      { name: "gone", data: "to be deleted\n" },
      { name: "dir/", type: "directory" },
      { name: "dir/old1", data: "old\n" },
      { name: "dir/sub/", type: "directory" },
      { name: "dir/sub/old2", data: "old\n" },
    ]);
    upper = await tarOf([
      { name: ".wh.gone", data: "" },
      { name: "dir/", type: "directory" },
      { name: "dir/.wh..wh..opq", data: "" },
      { name: "dir/new", data: "new\n" },
      { name: "added", data: "added\n" },
    ]);
    diffs = [sha(base), sha(upper)];
  });
  after(() => {
    rmSync(tmp, { recursive: true, force: true });
    assert.equal(existsSync(SYSTEM_STORE), systemStore, "a test touched /var/lib/mincs");
  });

  const checkWhiteouts = (ref: string): void => {
    const seen = inOverlay(ref, "ls -A; ls -A dir; cat etc/keep added dir/new; test ! -e gone && echo gone-is-gone");
    assert.equal(seen, "added\ndir\netc\nnew\nkept\nadded\nnew\ngone-is-gone\n");
  };

  test("docker save (current format): layers by ChainID, name from RepoTags, config on the top layer, whiteouts work", async () => {
    const config = configOf(diffs);
    const path = file(
      "demo.tar",
      await archiveOf(dockerSave([base, upper], config, "registry.example:5000/team/demo:1.0")),
    );
    const [l1, l2] = chain(diffs);
    assert.equal(ok(marten(["import", path])), l2);
    assert.equal(readFileSync(`${store}/images/${l2}/baseid`, "utf8"), `${l1}\n`);
    assert.equal(existsSync(`${store}/images/${l1}/baseid`), false);
    assert.equal(readFileSync(`${store}/images/${l2}/name`, "utf8"), "demo:1.0\n");
    assert.deepEqual(readFileSync(`${store}/images/${l2}/config.json`), config);
    assert.equal(farm(["imagestack", "demo:1.0"]), `${store}/images/${l2}/root:${store}/images/${l1}/root`);
    assert.equal(farm(["config", "demo:1.0"]), config.toString());
    checkWhiteouts("demo:1.0");
    const list = ok(marten(["images"]));
    assert.match(list, new RegExp(`^${l2.slice(0, 12)}\\t\\S+\\tdemo:1\\.0$`, "m"));
    assert.match(list, new RegExp(`^${l1.slice(0, 12)}\\t\\S+\\t\\(noname\\)$`, "m"));
  });

  test("the same image again, gzipped: nothing new is stored; --name renames it", async () => {
    const before = images();
    const path = file("demo.tar.gz", gzipSync(await archiveOf(dockerSave([base, upper], configOf(diffs), "demo:1.0"))));
    assert.equal(ok(marten(["import", path, "--name", "again"])), chain(diffs)[1]);
    assert.deepEqual(images(), before);
    assert.equal(farm(["pull", "again"]), chain(diffs)[1]);
    fails(marten(["rmi", "demo:1.0"]), 1, /no such image: demo:1\.0/);
  });

  test("docker save (old format): repositories and <id>/json parents; DiffIDs computed, config kept", async () => {
    const only = await tarOf([{ name: "old-layer", data: "old format\n" }]);
    const path = file("old.tar", await archiveOf(dockerSaveOld([base, only], "someone/oldie", "latest")));
    const [, top] = chain([sha(base), sha(only)]);
    assert.equal(ok(marten(["import", path])), top);
    assert.equal(farm(["pull", "oldie"]), top);
    assert.equal(farm(["pull", "oldie:latest"]), top, "NAME:latest finds NAME");
    const config = JSON.parse(farm(["config", "oldie"]));
    assert.deepEqual(config.config.Env, ["OLD=1"]);
    assert.deepEqual(config.rootfs.diff_ids, [`sha256:${sha(base)}`, `sha256:${sha(only)}`]);
    assert.equal(inOverlay("oldie", "cat old-layer etc/keep"), "old format\nkept\n");
  });

  test("OCI layout, as a directory and as a tar: gzip and zstd layers, digests verified, ref.name annotation", async () => {
    const layers = [
      await tarOf([{ name: "a", data: "A\n" }]),
      await tarOf([{ name: "b", data: "B\n" }]),
      await tarOf([{ name: "c", data: "C\n" }]),
    ];
    const d = layers.map(sha);
    const img: OciImage = {
      blobs: [gzipSync(layers[0]), zstdCompressSync(layers[1]), layers[2]],
      mediaTypes: [GZ, ZST, TAR],
      config: configOf(d),
    };
    const files = ociLayout([img], { refName: "docker.io/library/ocitest:2" });
    const dir = `${tmp}/oci-dir`;
    writeDir(files, dir);
    const top = chain(d)[2];
    assert.equal(ok(marten(["import", dir])), top);
    assert.equal(farm(["pull", "ocitest:2"]), top);
    assert.equal(inOverlay("ocitest:2", "cat a b c"), "A\nB\nC\n");
    // The same as a tar: the layers are there already; the name moves to it again.
    const before = images();
    assert.equal(ok(marten(["import", file("oci.tar", await archiveOf(files)), "--name", "ocitar"])), top);
    assert.deepEqual(images(), before);
    assert.equal(farm(["pull", "ocitar"]), top);
    // A ref.name that is only a tag names nothing.
    const bare = await tarOf([{ name: "bare", data: "" }]);
    const bareId = ok(
      marten([
        "import",
        file(
          "bare.tar",
          await archiveOf(
            ociLayout([{ blobs: [bare], mediaTypes: [TAR], config: configOf([sha(bare)]) }], { refName: "1.0" }),
          ),
        ),
      ]),
    );
    assert.equal(existsSync(`${store}/images/${bareId}/name`), false);
  });

  test("unpacked/ trees in a layout are taken only from marten pull's own (MINC_IMPORT_UNPACKED)", async () => {
    const layer = await tarOf([{ name: "real", data: "R\n" }]);
    const d = sha(layer);
    const files = ociLayout([{ blobs: [layer], mediaTypes: [TAR], config: configOf([d]) }], {
      refName: "docker.io/library/forged:1",
    });
    const dir = `${tmp}/oci-forged`;
    writeDir(files, dir);
    // A tree claiming to be that blob unpacked, with other content.
    mkdirSync(`${dir}/unpacked/${d}/root`, { recursive: true });
    writeFileSync(`${dir}/unpacked/${d}/root/forged`, "F\n");
    writeFileSync(
      `${dir}/unpacked/${d}/result.json`,
      JSON.stringify({
        diffId: `sha256:${d}`,
        digest: `sha256:${d}`,
        size: layer.length,
        compression: "none",
        entries: 1,
        whiteouts: 0,
        opaques: 0,
      }),
    );
    const id = ok(marten(["import", dir]));
    assert.equal(
      inOverlay("forged:1", "cat real; if [ -e forged ]; then echo FORGED; else echo clean; fi"),
      "R\nclean\n",
    );
    assert.equal(existsSync(`${dir}/unpacked/${d}/root/forged`), true, "the tree was not taken");
    ok(marten(["rmi", id]));
  });

  test("OCI tar with new layers, zstd-compressed as a whole", async () => {
    const layer = await tarOf([{ name: "z", data: "zstd archive\n" }]);
    const files = ociLayout([{ blobs: [gzipSync(layer)], mediaTypes: [GZ], config: configOf([sha(layer)]) }], {
      refName: "zarch:latest",
    });
    const path = file("oci.tar.zst", zstdCompressSync(await archiveOf(files)));
    assert.equal(ok(marten(["import", path])), sha(layer));
    assert.equal(inOverlay("zarch", "cat z"), "zstd archive\n");
  });

  test("a multi-platform index: the host's platform is taken, --arch picks another; attestations are skipped", async () => {
    const amd = await tarOf([{ name: "arch", data: "amd64\n" }]);
    const arm = await tarOf([{ name: "arch", data: "arm64\n" }]);
    const files = ociLayout(
      [
        {
          blobs: [gzipSync(amd)],
          mediaTypes: [GZ],
          config: configOf([sha(amd)]),
          platform: { os: "linux", architecture: "amd64" },
        },
        {
          blobs: [gzipSync(arm)],
          mediaTypes: [GZ],
          config: configOf([sha(arm)], {}, "arm64"),
          platform: { os: "linux", architecture: "arm64", variant: "v8" },
        },
      ],
      { refName: "example.org/multi:latest", nested: true, attestation: true },
    );
    const path = file("multi.tar", await archiveOf(files));
    if (process.arch === "x64") {
      assert.equal(ok(marten(["import", path])), sha(amd));
      assert.equal(inOverlay("multi", "cat arch"), "amd64\n");
    }
    assert.equal(ok(marten(["import", path, "--arch", "arm64", "--name", "multi-arm"])), sha(arm));
    assert.equal(inOverlay("multi-arm", "cat arch"), "arm64\n");
    fails(
      marten(["import", path, "--arch", "s390x"]),
      1,
      /no image for linux\/s390x; there are: linux\/amd64, linux\/arm64\/v8/,
    );
    // One image of another platform: taken with a warning, unless --arch asked for another.
    const only = file(
      "only-arm.tar",
      await archiveOf(
        ociLayout([
          {
            blobs: [gzipSync(arm)],
            mediaTypes: [GZ],
            config: configOf([sha(arm)], {}, "arm64"),
            platform: { os: "linux", architecture: "arm64" },
          },
        ]),
      ),
    );
    if (process.arch === "x64") {
      const r = marten(["import", only]);
      assert.equal(ok(r), sha(arm));
      assert.match(r.stderr, /warning: .* is for linux\/arm64, not for this host \(linux\/amd64\)/);
    }
    fails(marten(["import", only, "--arch", "riscv64"]), 1, /no image for linux\/riscv64; there are: linux\/arm64/);
  });

  describe("refused and corrupt archives leave the store unchanged", () => {
    const refused: [string, () => Promise<Buffer>, RegExp][] = [
      ["a layer with ../escape", () => tarOf([{ name: "../escape", data: "pwned" }]), /"\.\." component/],
      ["a layer with an absolute path", () => tarOf([{ name: `${tmp}/escape`, data: "pwned" }]), /absolute path/],
      [
        "a layer with a symlink escape",
        () =>
          tarOf([
            { name: "evil", type: "symlink", linkname: tmp },
            { name: "evil/escape", data: "pwned" },
          ]),
        /symbolic link evil/,
      ],
    ];
    for (const [what, layer, message] of refused) {
      test(what, async () => {
        const before = snapshot();
        const bad = await layer();
        const path = file(
          "bad.tar",
          await archiveOf(dockerSave([base, bad], configOf([sha(base), sha(bad)]), "bad:1")),
        );
        fails(marten(["import", path]), 1, message);
        assert.equal(existsSync(`${tmp}/escape`), false, "written outside");
        assert.equal(snapshot(), before);
      });
    }

    test("a wrong diff_id in the config", async () => {
      const before = snapshot();
      const other = await tarOf([{ name: "x", data: "not what the config says" }]);
      const path = file("wrongdiff.tar", await archiveOf(dockerSave([other], configOf([sha(base)]), "wrong:1")));
      fails(marten(["import", path]), 1, /diff_id/);
      assert.equal(snapshot(), before);
    });

    test("an OCI blob whose content does not match its digest", async () => {
      const before = snapshot();
      const layer = await tarOf([{ name: "x", data: "genuine" }]);
      const files = ociLayout([{ blobs: [gzipSync(layer)], mediaTypes: [GZ], config: configOf([sha(layer)]) }], {
        refName: "tampered",
      });
      const evil = gzipSync(await tarOf([{ name: "x", data: "tampered" }]));
      files.set(`blobs/sha256/${sha(gzipSync(layer))}`, evil);
      fails(marten(["import", file("tampered.tar", await archiveOf(files))]), 1, /digest|diff_id/);
      assert.equal(snapshot(), before);
    });

    describe("malformed JSON: one clear line naming where, nothing stored", () => {
      const json = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));
      const edit = (files: Files, name: string, change: (v: any) => unknown): Files => {
        files.set(name, json(change(JSON.parse(String(files.get(name))))));
        return files;
      };
      const docker = (config = configOf([sha(base)])): Files => dockerSave([base], config, "malformed:1");
      const oci = (config = configOf([sha(base)])): Files => ociLayout([{ blobs: [base], mediaTypes: [TAR], config }]);
      const cases: [string, () => Files, RegExp][] = [
        [
          "manifest.json: an image that is null",
          () => edit(docker(), "manifest.json", () => [null]),
          /manifest\.json: \[0\] is null, not an object/,
        ],
        [
          "manifest.json: a layer that is a number",
          () => edit(docker(), "manifest.json", ([m]) => [{ ...m, Layers: [1] }]),
          /manifest\.json: \[0\]\.Layers\[0\] is a number, not a string/,
        ],
        [
          "manifest.json: no Layers",
          () => edit(docker(), "manifest.json", ([m]) => [{ Config: m.Config }]),
          /manifest\.json: \[0\] has no Layers/,
        ],
        [
          "manifest.json: a tag that is a number",
          () => edit(docker(), "manifest.json", ([m]) => [{ ...m, RepoTags: [5] }]),
          /manifest\.json: \[0\]\.RepoTags\[0\] is a number, not a string/,
        ],
        [
          "manifest.json: RepoTags that is a string (not read as a list of letters)",
          () => edit(docker(), "manifest.json", ([m]) => [{ ...m, RepoTags: "abc" }]),
          /manifest\.json: \[0\]\.RepoTags is a string, not a list/,
        ],
        ["a docker config that is null", () => docker(json(null)), /image 1: config is null, not an object/],
        ["index.json that is null", () => edit(oci(), "index.json", () => null), /index\.json is null, not an object/],
        [
          "an OCI manifest that is null",
          () => {
            const files = oci();
            files.set(`blobs/sha256/${sha("null")}`, json(null));
            return edit(files, "index.json", (i) => ({
              ...i,
              manifests: [{ mediaType: OCI_MANIFEST, digest: `sha256:${sha("null")}`, size: 4 }],
            }));
          },
          /manifest sha256:[0-9a-f]{64} is null, not an object/,
        ],
        ["an OCI config that is null", () => oci(json(null)), /config is null, not an object/],
        [
          "an annotation that is a number",
          () =>
            edit(oci(), "index.json", (i) => ({
              ...i,
              manifests: [{ ...i.manifests[0], annotations: { "io.containerd.image.name": 5 } }],
            })),
          /index\.json: manifests\[0\]\.annotations\["io\.containerd\.image\.name"\] is a number, not a string/,
        ],
        [
          "an old-format <id>/json that is null",
          () => {
            const files = dockerSaveOld([base], "old", "1");
            files.set([...files.keys()].find((k) => k.endsWith("/json"))!, json(null));
            return files;
          },
          /[0-9a-f]{64}\/json is null, not an object/,
        ],
      ];
      for (const [what, files, message] of cases) {
        test(what, async () => {
          const before = snapshot();
          const r = marten(["import", file("malformed.tar", await archiveOf(files()))]);
          fails(r, 1, message);
          assert.doesNotMatch(r.stderr, /internal error/);
          assert.equal(snapshot(), before);
        });
      }
    });

    test("a truncated archive, and one that is no archive", async () => {
      const before = snapshot();
      const whole = gzipSync(await archiveOf(dockerSave([base, upper], configOf(diffs), "cut:1")));
      fails(marten(["import", file("cut.tar.gz", whole.subarray(0, whole.length - 100))]), 1, /decompress|tar/);
      fails(marten(["import", file("junk.tar", Buffer.alloc(5000, 0x42))]), 1, /not a valid tar/);
      const notImage = file("plain.tar", await tarOf([{ name: "hello", data: "hi" }]));
      fails(marten(["import", notImage]), 2, /not an image archive/);
      assert.equal(snapshot(), before);
    });
  });

  test("two imports at once, of the same and of different archives sharing a base, store each layer once", async () => {
    const mk = async (tag: string): Promise<[string, string]> => {
      const top = await tarOf([{ name: "which", data: `${tag}\n` }]);
      const path = file(
        `${tag}.tar`,
        await archiveOf(dockerSave([base, top], configOf([sha(base), sha(top)]), `conc:${tag}`)),
      );
      return [path, chain([sha(base), sha(top)])[1]];
    };
    const [a, idA] = await mk("a");
    const [b, idB] = await mk("b");
    const run = (path: string): Promise<Result> =>
      new Promise((resolve) => {
        const child = spawn(MARTEN, ["import", path], { env: env() });
        let stdout = "";
        let stderr = "";
        child.stdout.on("data", (c: Buffer) => {
          stdout += c;
        });
        child.stderr.on("data", (c: Buffer) => {
          stderr += c;
        });
        child.on("close", (status) => resolve({ status, stdout, stderr }));
      });
    for (let round = 0; round < 3; round++) {
      const rs = await Promise.all([run(a), run(a), run(b), run(b)]);
      assert.deepEqual(rs.map(ok), [idA, idA, idB, idB]);
    }
    assert.equal(farm(["imagestack", "conc:a"]).split(":").length, 2);
    assert.equal(farm(["baseid", farm(["fork", "conc:b"])]), idB);
    assert.equal(inOverlay("conc:a", "cat which"), "a\n");
    assert.equal(inOverlay("conc:b", "cat which"), "b\n");
    assert.deepEqual(readdirSync(`${store}/.staging`), []);
  });

  test("an interrupted import leaves no image; the next run removes its staging directory", async () => {
    const big = await tarOf([
      { name: "big", data: "x".repeat(128 << 20) },
      { name: "after", data: "y" },
    ]);
    const path = file(
      "big.tar.gz",
      gzipSync(await archiveOf(dockerSave([big], configOf([sha(big)]), "big:1")), { level: 1 }),
    );
    const before = images();
    // Its own process group, killed as a whole (as ^C or a crash of the machine would end it).
    const child = spawn(MARTEN, ["import", path], { env: env(), stdio: "ignore", detached: true });
    const closed = new Promise((r) => child.on("close", r));
    const staging = `${store}/.staging`;
    await waitFor("the import's staging directory", () => readdirSync(staging).some((s) => s.includes("import")), {
      saw: () => `${staging}: ${readdirSync(staging).join(" ")}`,
    });
    process.kill(-child.pid!, "SIGKILL");
    await closed;
    // minc-farm, its child, goes too: wait until no process of the group is left.
    const group = (): boolean => {
      try {
        process.kill(-child.pid!, 0);
        return true;
      } catch {
        return false;
      }
    };
    await waitFor(`the processes of group ${child.pid} to be gone`, () => !group(), {
      saw: () => spawnSync("ps", ["-o", "pid,stat,args", "--sid", String(child.pid)], { encoding: "utf8" }).stdout,
    });
    assert.deepEqual(images(), before, "an interrupted import left an image");
    assert.ok(readdirSync(staging).length > 0, "the import was not caught in the middle");
    ok(marten(["import", file("small.tar", await archiveOf(dockerSave([base], configOf([sha(base)]), "small:1")))]));
    assert.deepEqual(readdirSync(staging), []);
  });

  test("rename, renamei, tag, rm, rmi, and their refusals", () => {
    const [l1, l2] = chain(diffs);
    ok(marten(["tag", "again", "tagged"]));
    assert.equal(farm(["pull", "tagged"]), l2);
    ok(marten(["renamei", l2.slice(0, 10), "renamed"]));
    assert.equal(farm(["pull", "renamed"]), l2);
    fails(marten(["tag", "renamed", "ocitar"]), 2, /ocitar is already used by image/);
    fails(marten(["tag", "renamed", "../x"]), 2, /not valid/);
    fails(marten(["tag", "renamed", "-x"]), 2, /Not enough non-option arguments/);
    fails(marten(["renamei", "renamed", "-x"], {}, FARM), 2, /name "-x" is not valid/);
    fails(marten(["renamei", "renamed", ".hidden"], {}, FARM), 2, /name ".hidden" is not valid/);
    fails(marten(["tag", "no-such-image", "y"]), 1, /no such image: no-such-image/);

    const c1 = farm(["fork", "renamed"]);
    const c2 = farm(["fork", "renamed"]);
    ok(marten(["rename", c1, "box1"]));
    assert.equal(farm(["dir", "box1"]), `${store}/containers/${c1}`);
    fails(marten(["rename", c2, "box1"]), 2, /box1 is already used by container/);
    assert.match(ok(marten(["lc"])), new RegExp(`^${c1.slice(0, 12)}\\t\\tbox1$`, "m"));
    assert.match(ok(marten(["lc", "--long"])), new RegExp(`^${c2}\\t\\t<noname>$`, "m"));

    fails(marten(["rmi", "renamed"]), 1, new RegExp(`used by the containers .*${c1}`));
    fails(marten(["rmi", l1]), 1, /is the base of the images/);
    writeFileSync(`${store}/containers/${c1}/pid`, `${process.pid}\n`);
    fails(marten(["rm", "box1"]), 1, /is running/);
    writeFileSync(`${store}/containers/${c1}/pid`, "999999999\n");
    ok(marten(["rm", "box1"]));
    ok(marten(["rm", c2]));
    assert.equal(existsSync(`${store}/containers/${c1}`), false);
    ok(marten(["rmi", "renamed"]));
    assert.equal(existsSync(`${store}/images/${l2}`), false);
    assert.equal(existsSync(`${store}/images/${l1}`), true);
  });

  test("a name never takes an id's place: tag to an id or id start is refused, rmi ID removes that very image", async () => {
    const dir = `${tmp}/keepme`;
    mkdirSync(dir);
    writeFileSync(`${dir}/kept`, "kept\n");
    const a = ok(marten(["import", dir, "--name", "keepme"]));
    const layer = await tarOf([{ name: "b", data: "B\n" }]);
    const b = ok(marten(["import", file("b.tar", await archiveOf(dockerSave([layer], configOf([sha(layer)]))))]));
    fails(marten(["tag", "keepme", b]), 2, /name "[0-9a-f]{64}" is not valid: 64 hex digits are an id/);
    fails(
      marten(["tag", "keepme", b.slice(0, 12)]),
      2,
      new RegExp(`name "${b.slice(0, 12)}" is the start of the id of image ${b}`),
    );
    fails(marten(["rename", "keepme", b]), 2, /64 hex digits are an id/);
    const before = snapshot();
    fails(
      marten([
        "import",
        file("b2.tar", await archiveOf(dockerSave([layer], configOf([sha(layer)])))),
        "--name",
        a.slice(0, 8),
      ]),
      2,
      /is the start of the id of image/,
    );
    assert.equal(snapshot(), before, "a refused --name imports nothing");
    ok(marten(["rmi", b]));
    assert.equal(existsSync(`${store}/images/${b}`), false);
    assert.equal(farm(["pull", "keepme"]), a);
  });

  test("an archive whose tag is another image's id or short id: imported unnamed, with a warning; the id still finds its own image", async () => {
    const dir = `${tmp}/victim`;
    mkdirSync(dir);
    writeFileSync(`${dir}/victim`, "victim\n");
    const victim = ok(marten(["import", dir, "--name", "victim"]));
    const short = victim.slice(0, 12);
    const archives: [string, Files][] = [];
    for (const tag of [`${short}:latest`, short, `${victim}:latest`]) {
      const layer = await tarOf([{ name: "evil", data: `${tag}\n` }]);
      archives.push([tag, dockerSave([layer], configOf([sha(layer)]), tag)]);
    }
    const oci = await tarOf([{ name: "evil", data: "oci\n" }]);
    archives.push([
      short,
      ociLayout([{ blobs: [oci], mediaTypes: [TAR], config: configOf([sha(oci)]) }], {
        ref: `evil.example/x/${short}`,
      }),
    ]);
    for (const [tag, files] of archives) {
      const r = marten(["import", file("evil.tar", await archiveOf(files))]);
      assert.equal(r.status, 0, r.stderr);
      const evil = r.stdout.trim();
      assert.notEqual(evil, victim);
      const name = JSON.stringify(tag.replace(/:latest$/, ""));
      assert.match(
        r.stderr,
        new RegExp(
          `^minc-farm: warning: name ${name} (is the start of the id of image ${victim}|is not valid: 64 hex digits are an id).*; image ${evil.slice(0, 12)} is stored without it\n$`,
        ),
      );
      assert.equal(existsSync(`${store}/images/${evil}/name`), false, tag);
      assert.equal(farm(["idir", short]), `${store}/images/${victim}`);
      assert.equal(farm(["pull", victim]), victim);
      ok(marten(["rmi", evil]));
    }
    assert.equal(readFileSync(`${store}/images/${victim}/name`, "utf8"), "victim\n");
  });

  test("names with / that the shell MINCS stored (library/bbx) are found by rmi, tag and the rest; no path-like reference is", async () => {
    const layer = await tarOf([{ name: "bbx", data: "bbx\n" }]);
    const id = ok(marten(["import", file("bbx.tar", await archiveOf(dockerSave([layer], configOf([sha(layer)]))))]));
    const nameFile = `${store}/images/${id}/name`;
    writeFileSync(nameFile, "library/bbx\n"); // as the shell marten's import of a docker save named it
    assert.match(ok(marten(["li"])), new RegExp(`^${id.slice(0, 12)}\\t\\S+\\tlibrary/bbx$`, "m"));
    assert.equal(farm(["pull", "library/bbx"]), id);
    assert.equal(farm(["imagestack", "library/bbx:latest"]), `${store}/images/${id}/root`);
    for (const bad of ["/library/bbx", "./library/bbx", "library/../bbx", "library//bbx", "../images"]) {
      fails(marten(["rmi", bad]), 2, /is not a valid name or id/);
    }
    fails(marten(["tag", "library/bbx", "library/other"]), 2, /name "library\/other" is not valid/);
    ok(marten(["tag", "library/bbx", "bbx"]));
    assert.equal(readFileSync(nameFile, "utf8"), "bbx\n");
    writeFileSync(nameFile, "library/bbx\n");
    ok(marten(["rmi", "library/bbx"]));
    assert.equal(existsSync(`${store}/images/${id}`), false);
  });

  test("bad input: one line, exit 2", () => {
    fails(marten([]), 2, /needs a command/);
    fails(marten(["bogus"]), 2, /Unknown argument|Unknown command/);
    fails(marten(["rm"]), 2, /Not enough non-option arguments/);
    fails(marten(["import", `${tmp}/no-such-file`]), 2, /no such file or directory/);
    fails(marten(["import", `${tmp}/oci-dir`, "--name", "a/b"]), 2, /--name .* is not valid/);
    fails(marten(["pull", "UPPER/case"]), 2, /invalid reference "UPPER\/case": repository name must be lowercase/);
    fails(marten(["pull", "alpine:bad tag"]), 2, /bad tag/);
    fails(marten(["pull", "alpine@sha256:1234"]), 2, /digest/);
    fails(marten(["pull", "alpine", "--user", "nopassword"]), 2, /USER:PASSWORD/);
    fails(marten(["pull", "0123456789abcdef".repeat(4)]), 2, /64 hex digits are an image id/);
    fails(
      marten(["pull", `org/${"0123456789abcdef".repeat(4)}`]),
      2,
      /gives no name for the store .*64 hex digits are an id.*give --name/,
    );
    fails(marten(["rmi", "../../etc"]), 2, /not a valid name or id/);
    const help = marten(["--help"]);
    assert.equal(help.status, 0);
    for (const c of ["lc", "li", "rm", "rmi", "import", "pull", "commit", "rename", "renamei", "tag"])
      assert.match(help.stdout, new RegExp(`marten ${c}`));
  });

  test("--debug shows minc-farm's steps and commands", () => {
    const r = marten(["--debug", "li"]);
    ok(r);
    assert.match(r.stderr, /^\+ .*libexec\/minc-farm li$/m);
  });

  describe("pull", () => {
    let prefix = "";
    before(() => {
      // marten finds minc-smuggler beside minc-farm in ../libexec: a copy of both with a stand-in.
      prefix = `${tmp}/prefix`;
      mkdirSync(`${prefix}/bin`, { recursive: true });
      mkdirSync(`${prefix}/libexec`);
      copyFileSync(MARTEN, `${prefix}/bin/marten`);
      copyFileSync(FARM, `${prefix}/libexec/minc-farm`);
      spawnSync("chmod", ["755", `${prefix}/bin/marten`, `${prefix}/libexec/minc-farm`]);
    });

    test("without minc-smuggler: a clear error", () => {
      fails(marten(["pull", "alpine"], {}, `${prefix}/bin/marten`), 1, /needs .*minc-smuggler.*not installed/);
    });

    test("minc-smuggler REF DIR fills DIR with an OCI layout, which is imported and named after REF", async () => {
      const layer = await tarOf([{ name: "pulled", data: "from the registry\n" }]);
      const files = ociLayout([{ blobs: [gzipSync(layer)], mediaTypes: [GZ], config: configOf([sha(layer)]) }], {
        refName: "2.0",
        ref: "registry.example:5000/team/app:2.0",
      });
      const source = `${tmp}/registry-layout`;
      writeDir(files, source);
      const log = `${tmp}/smuggler.log`;
      writeFileSync(
        `${prefix}/libexec/minc-smuggler`,
        [
          "#!/bin/sh",
          `echo "$# $1 arch=$MINC_ARCH insecure=$MINC_PULL_INSECURE user=$MINC_PULL_USER" > ${log}`,
          '[ -d "$2" ] && [ -z "$(ls -A "$2")" ] || exit 9',
          `cp -a ${source}/. "$2"/`,
          "",
        ].join("\n"),
        { mode: 0o755 },
      );
      const id = ok(
        marten(
          ["pull", "registry.example:5000/team/app:2.0", "--arch", "amd64", "--insecure", "--user", "me:secret"],
          {},
          `${prefix}/bin/marten`,
        ),
      );
      assert.equal(id, sha(layer));
      assert.equal(
        readFileSync(log, "utf8").replace(/\S*\/\.staging\/\S*/, "DIR"),
        "2 registry.example:5000/team/app:2.0 arch=amd64 insecure=1 user=me:secret\n",
      );
      assert.equal(farm(["pull", "app:2.0"]), id);
      assert.equal(inOverlay("app:2.0", "cat pulled"), "from the registry\n");
      assert.deepEqual(readdirSync(`${store}/.staging`), []);
      // The password is not in the trace.
      const traced = marten(["--debug", "pull", "other/app"], {}, `${prefix}/bin/marten`);
      assert.doesNotMatch(traced.stderr, /secret/);
      // A --name the store cannot take is refused before the download.
      rmSync(log);
      fails(
        marten(["pull", "other/app", "--name", id.slice(0, 8)], {}, `${prefix}/bin/marten`),
        2,
        new RegExp(`is the start of the id of image ${id}`),
      );
      assert.equal(existsSync(log), false, "minc-smuggler ran");
    });

    test("a failed download imports nothing and leaves no staging directory", () => {
      writeFileSync(
        `${prefix}/libexec/minc-smuggler`,
        "#!/bin/sh\necho 'minc-smuggler: blob sha256:abc: digest mismatch' >&2\nexit 1\n",
        { mode: 0o755 },
      );
      const before = snapshot();
      fails(marten(["pull", "alpine"], {}, `${prefix}/bin/marten`), 1, /digest mismatch/);
      assert.equal(snapshot(), before);
    });
  });
});
