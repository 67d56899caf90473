// minc-smuggler against real registries on 127.0.0.1 (Debian's
// docker-registry, images built here and pushed with skopeo), and the pure
// parts (references, platforms, challenges, credentials) without one.
// Nothing here talks to any host but 127.0.0.1.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { gunzipSync, zstdDecompressSync } from "node:zlib";
import { formatReference, parseReference } from "../lib/store/reference.ts";
import {
  Progress,
  dockerConfigCredentials,
  parseArch,
  parseChallenges,
  parseManifest,
  pickPlatform,
  schemesFor,
  type Descriptor,
} from "../lib/store/registry.ts";
import { REPO, hasTool, waitFor } from "./helpers.ts";
import {
  DOCKER_LIST,
  DOCKER_MANIFEST,
  OCI_MANIFEST,
  buildImage,
  buildIndex,
  cannotRunRegistry,
  freePort,
  push,
  scratch,
  sha256,
  startFront,
  startRegistry,
  stopAll,
  type BuiltImage,
  type BuiltIndex,
  type FileEntry,
  type LayerSpec,
  type Registry,
} from "./registry-fixture.ts";

const SMUGGLER = `${REPO}/libexec/minc-smuggler`;

// ---- the pure parts ----

describe("references", () => {
  const cases: [string, string, string, string][] = [
    ["alpine", "docker.io/library/alpine:latest", "registry-1.docker.io", "library/alpine"],
    ["alpine:3.19", "docker.io/library/alpine:3.19", "registry-1.docker.io", "library/alpine"],
    ["user/x", "docker.io/user/x:latest", "registry-1.docker.io", "user/x"],
    ["docker.io/alpine", "docker.io/library/alpine:latest", "registry-1.docker.io", "library/alpine"],
    ["index.docker.io/library/alpine", "docker.io/library/alpine:latest", "registry-1.docker.io", "library/alpine"],
    ["127.0.0.1:5000/x", "127.0.0.1:5000/x:latest", "127.0.0.1:5000", "x"],
    ["localhost/a/b:v1", "localhost/a/b:v1", "localhost", "a/b"],
    ["ghcr.io/org/x", "ghcr.io/org/x:latest", "ghcr.io", "org/x"],
    ["[::1]:5000/x:t", "[::1]:5000/x:t", "[::1]:5000", "x"],
    ["a.b-c/d__e/f.g-h:T_1.x-y", "a.b-c/d__e/f.g-h:T_1.x-y", "a.b-c", "d__e/f.g-h"],
    [`x@sha256:${"a".repeat(64)}`, `docker.io/library/x@sha256:${"a".repeat(64)}`, "registry-1.docker.io", "library/x"],
    [
      `x:t@sha256:${"a".repeat(64)}`,
      `docker.io/library/x:t@sha256:${"a".repeat(64)}`,
      "registry-1.docker.io",
      "library/x",
    ],
  ];
  for (const [input, full, endpoint, repository] of cases) {
    test(`${input} is ${full}`, () => {
      const r = parseReference(input);
      assert.equal(formatReference(r), full);
      assert.equal(r.endpoint, endpoint);
      assert.equal(r.repository, repository);
    });
  }
  const bad: [string, RegExp][] = [
    ["", /empty/],
    ["Alpine", /lowercase/],
    ["org/Name", /lowercase/],
    ["a b", /white space/],
    ["x:", /tag/],
    [`x:${"t".repeat(129)}`, /tag/],
    ["x:-t", /tag/],
    ["x@sha256:abc", /digest/],
    [`x@sha512:${"a".repeat(128)}`, /only sha256/],
    [`x@sha256:${"A".repeat(64)}`, /digest/],
    ["a//b", /empty name component/],
    ["x/", /empty name component/],
    ["a--/b", /name component/],
    ["_x", /name component/],
    ["bad_host:5000/x", /registry/],
    [`a/${"b".repeat(260)}`, /longer than 255/],
    ["0123456789abcdef".repeat(4), /64 hex digits are an image id/],
  ];
  test("plain HTTP only on the loopback, or with MINC_PULL_INSECURE", () => {
    for (const local of ["127.0.0.1:5000", "localhost", "localhost:80", "[::1]:5000"])
      assert.deepEqual(schemesFor(local, false), ["https", "http"], local);
    for (const remote of ["registry-1.docker.io", "ghcr.io", "127.0.0.2:5000", "localhost.example:5000"])
      assert.deepEqual(schemesFor(remote, false), ["https"], remote);
    assert.deepEqual(schemesFor("ghcr.io", true), ["https", "http"]);
  });
  for (const [input, message] of bad) {
    test(`refused: ${JSON.stringify(input).slice(0, 40)}`, () => {
      assert.throws(
        () => parseReference(input),
        (e: Error & { status?: number }) => message.test(e.message) && e.status === 2,
      );
    });
  }
});

describe("platforms", () => {
  test("MINC_ARCH names are normalized to OCI's", () => {
    for (const [name, arch, variant] of [
      ["amd64", "amd64"],
      ["x86_64", "amd64"],
      ["arm64", "arm64"],
      ["aarch64", "arm64"],
      ["arm", "arm", "v7"],
      ["armv7l", "arm", "v7"],
      ["armel", "arm", "v7"],
      ["arm/v6", "arm", "v6"],
      ["ppc64le", "ppc64le"],
      ["riscv64", "riscv64"],
      ["s390x", "s390x"],
      ["386", "386"],
      ["i386", "386"],
      ["linux/arm64/v8", "arm64", "v8"],
    ]) {
      assert.deepEqual(parseArch(name!), { os: "linux", architecture: arch, ...(variant ? { variant } : {}) }, name);
    }
    assert.throws(() => parseArch("sparc"), /unknown architecture/);
    assert.throws(() => parseArch("arm/x"), /unknown architecture/);
  });

  const d = (architecture: string, variant?: string, extra: Partial<Descriptor> = {}): Descriptor => ({
    mediaType: OCI_MANIFEST,
    digest: `sha256:${sha256(`${architecture}${variant}${JSON.stringify(extra)}`)}`,
    size: 1,
    platform: { os: "linux", architecture, ...(variant ? { variant } : {}) },
    ...extra,
  });
  const index = [
    d("amd64"),
    d("arm64", "v8"),
    d("arm", "v6"),
    d("unknown", undefined, {
      platform: { os: "unknown", architecture: "unknown" },
      annotations: { "vnd.docker.reference.type": "attestation-manifest" },
    }),
  ];
  test("an index entry is picked by os, architecture and variant (defaults filled in)", () => {
    assert.equal(pickPlatform(index, parseArch("amd64"), "x"), index[0]);
    assert.equal(pickPlatform(index, parseArch("arm64"), "x"), index[1]);
    assert.equal(pickPlatform(index, parseArch("arm/v6"), "x"), index[2]);
    // arm without a variant is v7; v6 runs there, but not when v7 was asked for by name
    assert.equal(pickPlatform(index, parseArch("arm"), "x", false), index[2]);
    assert.throws(() => pickPlatform(index, parseArch("arm/v7"), "x", true), /no image for linux\/arm\/v7/);
  });
  test("a missing platform lists the ones there are, attestations left out", () => {
    assert.throws(
      () => pickPlatform(index, parseArch("s390x"), "img"),
      (e: Error) =>
        /img has no image for linux\/s390x; it has: linux\/amd64, linux\/arm64\/v8, linux\/arm\/v6/.test(e.message) &&
        !/unknown/.test(e.message),
    );
  });
});

describe("manifests", () => {
  test("schema 1 is refused, clearly", () => {
    const m = Buffer.from(JSON.stringify({ schemaVersion: 1, name: "x", tag: "latest", fsLayers: [] }));
    assert.throws(() => parseManifest(m, "application/vnd.docker.distribution.manifest.v1+prettyjws", "x"), /schema 1/);
  });
  test("a descriptor with a digest that is not a file name is refused", () => {
    const m = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: "sha256:../../etc/passwd", size: 1 },
        layers: [],
      }),
    );
    assert.throws(() => parseManifest(m, null, "x"), /not sha256/);
  });
});

describe("WWW-Authenticate", () => {
  test("bearer with quoted parameters, basic, several challenges", () => {
    assert.deepEqual(
      parseChallenges(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"',
      ),
      [
        {
          scheme: "bearer",
          params: {
            realm: "https://auth.docker.io/token",
            service: "registry.docker.io",
            scope: "repository:library/alpine:pull",
          },
        },
      ],
    );
    assert.deepEqual(parseChallenges('Basic realm="minc test"'), [{ scheme: "basic", params: { realm: "minc test" } }]);
    assert.deepEqual(parseChallenges('Basic realm="a, b", Bearer realm="http://x/t",error=insufficient_scope'), [
      { scheme: "basic", params: { realm: "a, b" } },
      { scheme: "bearer", params: { realm: "http://x/t", error: "insufficient_scope" } },
    ]);
  });
});

describe("credentials from docker's config.json", () => {
  let home = "";
  before(() => {
    home = scratch("minc-home-");
  });
  after(() => stopAll());
  test("auth (base64 user:pass) or username/password, by registry host; docker.io under its old names", () => {
    mkdirSync(join(home, ".docker"), { recursive: true });
    writeFileSync(
      join(home, ".docker", "config.json"),
      JSON.stringify({
        auths: {
          "127.0.0.1:5000": { auth: Buffer.from("alice:pa:ss").toString("base64") },
          "https://registry.example:8443/v2/": { username: "bob", password: "pw" },
          "https://index.docker.io/v1/": { auth: Buffer.from("hub:tok").toString("base64") },
        },
      }),
    );
    const env = { HOME: home };
    assert.deepEqual(dockerConfigCredentials("127.0.0.1:5000", env), {
      user: "alice",
      password: "pa:ss",
      source: join(home, ".docker", "config.json"),
    });
    assert.equal(dockerConfigCredentials("registry.example:8443", env)?.user, "bob");
    assert.equal(dockerConfigCredentials("docker.io", env)?.password, "tok");
    assert.equal(dockerConfigCredentials("127.0.0.1:5001", env), undefined);
    assert.equal(dockerConfigCredentials("docker.io", { HOME: "/nonexistent" }), undefined);
  });
});

describe("progress", () => {
  test("plain lines when not a terminal: start and end of each blob", () => {
    let out = "";
    let now = 0;
    const p = new Progress({
      write: (s) => {
        out += s;
      },
      tty: false,
      now: () => now,
    });
    const a = p.add("layer 1/1 sha256:abc", 2 << 20);
    p.start(a);
    p.bytes(a, 1 << 20);
    now = 2000;
    p.done(a);
    p.finish();
    assert.equal(
      out,
      "layer 1/1 sha256:abc: downloading 2.0 MiB\nlayer 1/1 sha256:abc: done, 2.0 MiB in 2.0 s (1.0 MiB/s)\n",
    );
  });
  test("on a terminal: one line per blob with bytes, total and speed, redrawn in place", () => {
    let out = "";
    let now = 0;
    const p = new Progress({
      write: (s) => {
        out += s;
      },
      tty: true,
      now: () => now,
      columns: () => 100,
    });
    const a = p.add("layer 1/2 sha256:aaa", 4 << 20);
    const b = p.add("layer 2/2 sha256:bbb", 1 << 20);
    p.start(a);
    p.start(b);
    p.bytes(a, 1 << 20);
    now = 1000;
    p.done(b);
    p.finish();
    assert.match(out, /\x1b\[2A/, "moves the cursor back up to redraw");
    assert.match(out, /layer 1\/2 sha256:aaa: \[=====> +\] 1\.0 MiB \/ 4\.0 MiB {2}1\.0 MiB\/s/);
    assert.match(out, /layer 2\/2 sha256:bbb: done, 1\.0 MiB in 1\.0 s/);
  });
});

// ---- against real registries ----

interface Result {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** The environment for minc-smuggler: no MINC_* of the caller's, an empty HOME (no real docker config). */
let emptyHome = "";
function smugglerEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("MINC_") && k !== "DOCKER_CONFIG") env[k] = v;
  env.HOME = emptyHome;
  return { ...env, ...extra };
}

/** Run minc-smuggler asynchronously: the token server and the front servers live in this process. */
function smuggle(
  args: string[],
  extra: NodeJS.ProcessEnv = {},
  onStderr?: (text: string, kill: (s: NodeJS.Signals) => void) => void,
): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = spawn(SMUGGLER, args, { env: smugglerEnv(extra), stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.stdout.on("data", (d) => {
      stdout += d;
    });
    child.stderr.on("data", (d) => {
      stderr += d;
      onStderr?.(stderr, (s) => child.kill(s));
    });
    child.on("error", reject);
    child.on("close", (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout, stderr });
    });
  });
}

/**
 * Pull (ARGS) from a front that stalls this blob, and send the signal once
 * the half of it that the front sends is in its partial file in DEST: the
 * pull is then mid-download, on a machine of any speed.
 */
async function interruptedMidBlob(
  args: string[],
  dest: string,
  stalled: { digest: string; size: number },
  signal: NodeJS.Signals,
): Promise<Result> {
  let kill: ((s: NodeJS.Signals) => void) | undefined;
  let stderr = "";
  let result: Result | undefined;
  const pulled = smuggle(args, {}, (text, k) => {
    stderr = text;
    kill = k;
  }).then((r) => (result = r));
  const dir = join(dest, "blobs", "sha256");
  const half = stalled.size >> 1;
  const partials = (): string[] =>
    existsSync(dir) ? readdirSync(dir).filter((f) => f.startsWith(`${stalled.digest.slice(7)}.partial-`)) : [];
  const size = (f: string): number => statSync(join(dir, f), { throwIfNoEntry: false })?.size ?? 0;
  await waitFor(
    `half of ${stalled.digest} (${half} bytes) written to its partial file in ${dir}`,
    () => {
      if (result)
        assert.fail(`minc-smuggler ended first (status ${result.status}, signal ${result.signal}): ${result.stderr}`);
      return kill !== undefined && partials().some((f) => size(f) >= half);
    },
    {
      saw: () =>
        `${
          partials()
            .map((f) => `${f} (${size(f)} bytes)`)
            .join(", ") || "no partial file"
        }; stderr ${JSON.stringify(stderr)}`,
    },
  );
  kill!(signal);
  return pulled;
}

function readJson(path: string): any {
  return JSON.parse(readFileSync(path, "utf8"));
}

function blob(dest: string, digest: string): Buffer {
  return readFileSync(join(dest, "blobs", "sha256", digest.slice(7)));
}

/** What a pull must leave: a complete, consistent OCI layout whose blobs all match their names. */
function checkLayout(
  dest: string,
  r: Result,
  expect: { digest: string; tag?: string; ref: string; mediaType: string },
): any {
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, `${expect.digest}\n`);
  assert.deepEqual(readJson(join(dest, "oci-layout")), { imageLayoutVersion: "1.0.0" });
  const index = readJson(join(dest, "index.json"));
  assert.equal(index.schemaVersion, 2);
  assert.equal(index.manifests.length, 1);
  const [m] = index.manifests;
  assert.equal(m.digest, expect.digest);
  assert.equal(m.mediaType, expect.mediaType);
  assert.equal(m.annotations["org.opencontainers.image.ref.name"], expect.tag);
  assert.equal(m.annotations["io.mincs.ref"], expect.ref);
  const files = readdirSync(join(dest, "blobs", "sha256"));
  for (const f of files) assert.equal(sha256(blob(dest, `sha256:${f}`)), f, `blob ${f} does not match its name`);
  const manifestBytes = blob(dest, expect.digest);
  assert.equal(manifestBytes.length, m.size);
  const manifest = JSON.parse(manifestBytes.toString());
  const config = JSON.parse(blob(dest, manifest.config.digest).toString());
  assert.equal(config.rootfs.diff_ids.length, manifest.layers.length);
  manifest.layers.forEach((l: Descriptor, i: number) => {
    const data = blob(dest, l.digest);
    assert.equal(data.length, l.size);
    const tar = /zstd/.test(l.mediaType)
      ? zstdDecompressSync(data)
      : /gzip/.test(l.mediaType)
        ? gunzipSync(data)
        : data;
    assert.equal(`sha256:${sha256(tar)}`, config.rootfs.diff_ids[i], "a layer does not match its diff_id");
  });
  assert.deepEqual(
    files.sort(),
    [...new Set([expect.digest, manifest.config.digest, ...manifest.layers.map((l: Descriptor) => l.digest)])]
      .map((d) => d.slice(7))
      .sort(),
  );
  return { index, manifest, config };
}

function skopeoInspect(dest: string): any {
  const r = spawnSync("skopeo", ["inspect", `oci:${dest}`], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

/** Nothing of a failed pull stays: the directory is as it was (absent, or empty). */
function assertUntouched(dest: string, existed: boolean): void {
  if (!existed)
    assert.equal(
      existsSync(dest),
      false,
      `${dest} was left behind: ${existsSync(dest) ? readdirSync(dest, { recursive: true }).join(" ") : ""}`,
    );
  else assert.deepEqual(readdirSync(dest), [], "the pull left files in DESTDIR");
}

const skip = cannotRunRegistry() ?? (existsSync(SMUGGLER) ? undefined : `${SMUGGLER} is not built (run make)`);
if (skip) process.stderr.write(`# smuggler registry tests skipped: ${skip}\n`);

const CONFIG = {
  Env: ["PATH=/usr/bin:/bin", "GREETING=hello"],
  Cmd: ["/bin/sh", "-c", "cat /etc/motd"],
  Entrypoint: ["/bin/entry"],
  WorkingDir: "/srv",
};
const LAYERS: LayerSpec[] = [
  { "etc/motd": "first layer\n", "bin/": { dir: true }, "etc/gone": "deleted in layer 2\n" },
  { "etc/motd": "second layer\n", "etc/.wh.gone": "", "srv/data": Buffer.alloc(200_000, 7) },
];

describe("pulling from a registry on 127.0.0.1", { skip }, () => {
  let reg: Registry;
  let layout = "";
  let work = "";
  let oci: BuiltImage;
  let dockerDigest = "";
  let multi: BuiltIndex;
  let zstdImage: BuiltImage;
  let n = 0;
  const dest = () => join(work, `dest-${++n}`);

  before(async () => {
    emptyHome = scratch("minc-home-");
    work = scratch("minc-pull-");
    reg = await startRegistry();
    layout = scratch("minc-layout-");
    oci = buildImage(layout, "v1", { layers: LAYERS, config: CONFIG });
    assert.equal(await push(layout, "v1", `${reg.host}/library/oci:v1`), oci.manifest.digest);
    dockerDigest = await push(layout, "v1", `${reg.host}/library/docker:v1`, { format: "v2s2" });
    multi = buildIndex(
      layout,
      "multi",
      [
        { architecture: "amd64", layers: [{ "etc/arch": "amd64\n" }] },
        { architecture: "arm64", variant: "v8", layers: [{ "etc/arch": "arm64\n" }] },
      ],
      { attestation: true },
    );
    assert.equal(await push(layout, "multi", `${reg.host}/library/multi:latest`, { all: true }), multi.index.digest);
    zstdImage = buildImage(layout, "zstd", { layers: [{ "etc/z": "zstd\n" }], compression: "zstd" });
    await push(layout, "zstd", `${reg.host}/library/zstd:v1`);
  });
  after(() => stopAll());

  test("an OCI-manifest image: the manifest byte for byte, config and layers, a layout skopeo reads", async () => {
    const d = dest();
    const r = await smuggle([`${reg.host}/library/oci:v1`, d]);
    const { config } = checkLayout(d, r, {
      digest: oci.manifest.digest,
      tag: "v1",
      ref: `${reg.host}/library/oci:v1`,
      mediaType: OCI_MANIFEST,
    });
    assert.deepEqual(config.config, CONFIG);
    const inspected = skopeoInspect(d);
    assert.equal(inspected.Digest, oci.manifest.digest);
    assert.deepEqual(
      inspected.Layers,
      oci.layers.map((l) => l.digest),
    );
    const copy = join(work, "copied");
    const c = spawnSync("skopeo", ["copy", "--quiet", `oci:${d}:v1`, `dir:${copy}`], { encoding: "utf8" });
    assert.equal(c.status, 0, c.stderr);
    assert.ok(existsSync(join(copy, "manifest.json")));
  });

  test("a Docker schema2 image", async () => {
    const d = dest();
    const r = await smuggle([`${reg.host}/library/docker:v1`, d]);
    const { manifest } = checkLayout(d, r, {
      digest: dockerDigest,
      tag: "v1",
      ref: `${reg.host}/library/docker:v1`,
      mediaType: DOCKER_MANIFEST,
    });
    assert.equal(manifest.layers[0].mediaType, "application/vnd.docker.image.rootfs.diff.tar.gzip");
    assert.equal(skopeoInspect(d).Digest, dockerDigest);
  });

  test("zstd layers", async () => {
    const d = dest();
    const r = await smuggle([`${reg.host}/library/zstd:v1`, d]);
    checkLayout(d, r, {
      digest: zstdImage.manifest.digest,
      tag: "v1",
      ref: `${reg.host}/library/zstd:v1`,
      mediaType: OCI_MANIFEST,
    });
  });

  test("a multi-arch index: amd64 by default, MINC_ARCH picks another, attestations skipped", async () => {
    const [amd64, arm64] = multi.images;
    const ref = `${reg.host}/library/multi`;
    const expect = (digest: string) => ({ digest, tag: "latest", ref: `${ref}:latest`, mediaType: OCI_MANIFEST });
    if (process.arch === "x64") {
      const d = dest();
      const { index } = checkLayout(d, await smuggle([ref, d]), expect(amd64.manifest.digest));
      assert.equal(index.manifests[0].annotations["io.mincs.index"], multi.index.digest);
      assert.deepEqual(index.manifests[0].platform, { architecture: "amd64", os: "linux" });
    }
    for (const arch of ["amd64", "x86_64"]) {
      const d = dest();
      checkLayout(d, await smuggle([ref, d], { MINC_ARCH: arch }), expect(amd64.manifest.digest));
    }
    for (const arch of ["arm64", "aarch64", "arm64/v8"]) {
      const d = dest();
      checkLayout(d, await smuggle([ref, d], { MINC_ARCH: arch }), expect(arm64.manifest.digest));
      assert.equal(skopeoInspect(d).Architecture, "arm64");
    }
  });

  test("a Docker manifest list (schema2 entries)", async () => {
    const listLayout = scratch("minc-layout-");
    buildIndex(listLayout, "list", [
      { architecture: "amd64", layers: [{ "etc/arch": "amd64\n" }] },
      { architecture: "arm64", variant: "v8", layers: [{ "etc/arch": "arm64\n" }] },
    ]);
    await push(listLayout, "list", `${reg.host}/library/list:latest`, { all: true, format: "v2s2" });
    const res = await fetch(`${reg.url}/v2/library/list/manifests/latest`, { headers: { accept: DOCKER_LIST } });
    assert.equal(res.headers.get("content-type"), DOCKER_LIST);
    const list = (await res.json()) as { manifests: Descriptor[] };
    for (const arch of ["amd64", "arm64"]) {
      const d = dest();
      const entry = list.manifests.find((m) => m.platform?.architecture === arch)!;
      const ref = `${reg.host}/library/list:latest`;
      checkLayout(d, await smuggle([`${reg.host}/library/list`, d], { MINC_ARCH: arch }), {
        digest: entry.digest,
        tag: "latest",
        ref,
        mediaType: DOCKER_MANIFEST,
      });
      assert.equal(skopeoInspect(d).Architecture, arch);
    }
  });

  test("a platform the index lacks: exit 1, the platforms listed, nothing written", async () => {
    const d = dest();
    const r = await smuggle([`${reg.host}/library/multi`, d], { MINC_ARCH: "s390x" });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /no image for linux\/s390x; it has: linux\/amd64, linux\/arm64\/v8/);
    assert.doesNotMatch(r.stderr, /unknown/);
    assert.equal(r.stdout, "");
    assertUntouched(d, false);
  });

  test("by digest: the manifest is checked against it; an index digest is narrowed to the platform", async () => {
    let d = dest();
    const byDigest = `${reg.host}/library/oci@${oci.manifest.digest}`;
    const { index } = checkLayout(d, await smuggle([byDigest, d]), {
      digest: oci.manifest.digest,
      ref: byDigest,
      mediaType: OCI_MANIFEST,
    });
    assert.equal(index.manifests[0].annotations["org.opencontainers.image.ref.name"], undefined);
    assert.equal(skopeoInspect(d).Digest, oci.manifest.digest);

    d = dest();
    const tagged = `${reg.host}/library/oci:v1@${oci.manifest.digest}`;
    checkLayout(d, await smuggle([tagged, d]), {
      digest: oci.manifest.digest,
      tag: "v1",
      ref: tagged,
      mediaType: OCI_MANIFEST,
    });

    d = dest();
    const indexRef = `${reg.host}/library/multi@${multi.index.digest}`;
    checkLayout(d, await smuggle([indexRef, d], { MINC_ARCH: "arm64" }), {
      digest: multi.images[1].manifest.digest,
      ref: indexRef,
      mediaType: OCI_MANIFEST,
    });

    d = dest();
    const r = await smuggle([`${reg.host}/library/oci@sha256:${"0".repeat(64)}`, d]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /not found/);
    assertUntouched(d, false);
  });

  test("a tag or repository that is not there: exit 1, one line", async () => {
    for (const ref of [`${reg.host}/library/oci:nope`, `${reg.host}/library/nothing:v1`]) {
      const d = dest();
      const r = await smuggle([ref, d]);
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, /not found/);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
      assertUntouched(d, false);
    }
  });

  test("bad input: exit 2 and one line, before any request", async () => {
    const front = await startFront(reg);
    const file = join(work, "a-file");
    writeFileSync(file, "");
    const full = join(work, "full");
    mkdirSync(full);
    writeFileSync(join(full, "something"), "");
    const cases: [string[], NodeJS.ProcessEnv, RegExp][] = [
      [[`${front.host}/library/Oci:v1`, dest()], {}, /lowercase/],
      [[`${front.host}/library/oci:v1@sha256:1234`, dest()], {}, /digest/],
      [[`${front.host}/library/oci:v1`, file], {}, /not a directory/],
      [[`${front.host}/library/oci:v1`, full], {}, /neither empty nor an OCI image layout/],
      [[`${front.host}/library/oci:v1`, dest()], { MINC_ARCH: "vax" }, /unknown architecture/],
      [[`${front.host}/library/oci:v1`, dest()], { MINC_PULL_USER: "nocolon" }, /user:password/],
      [[`${front.host}/library/oci:v1`], {}, /usage/],
      [["--bogus", dest()], {}, /unknown option/],
    ];
    for (const [args, env, message] of cases) {
      const r = await smuggle(args, env);
      assert.equal(r.status, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, message);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    }
    assert.deepEqual(front.requests, [], "bad input went to the network");
    await front.stop();
  });

  test("a registry that cannot be reached: exit 1", async () => {
    const port = await freePort();
    const d = dest();
    const r = await smuggle([`127.0.0.1:${port}/library/x`, d]);
    assert.equal(r.status, 1);
    assert.match(r.stderr, new RegExp(`cannot reach 127.0.0.1:${port}: ECONNREFUSED`));
    assertUntouched(d, false);
  });

  test("a blob served with a wrong digest: exit 1, a clear error, DESTDIR left as it was", async () => {
    for (const target of [oci.layers[1].digest, oci.config.digest]) {
      const front = await startFront(reg, { corruptBlob: target });
      const absent = dest();
      let r = await smuggle([`${front.host}/library/oci:v1`, absent]);
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`${target}: digest mismatch`));
      assert.equal(r.stdout, "");
      assertUntouched(absent, false);
      const empty = dest();
      mkdirSync(empty);
      r = await smuggle([`${front.host}/library/oci:v1`, empty]);
      assert.equal(r.status, 1, r.stderr);
      assertUntouched(empty, true);
      await front.stop();
    }
  });

  test("a layer that fails its digest while another is being unpacked (MINC_PULL_UNPACK): its error alone, nothing left", async () => {
    // Many files: the first layer takes a while to unpack, and the corrupt one comes only once that has begun.
    const many: Record<string, FileEntry> = {};
    for (let i = 0; i < 8000; i++) many[`d${i % 50}/f${i}`] = randomBytes(256);
    const image = buildImage(layout, "race", { layers: [many, { "etc/late": "late\n" }] });
    await push(layout, "race", `${reg.host}/library/race:1`);
    const [first, late] = image.layers;
    let release = (): void => {};
    const front = await startFront(reg, {
      corruptBlob: late.digest,
      holdBlob: {
        digest: late.digest,
        until: new Promise((r) => {
          release = r;
        }),
      },
    });
    try {
      const d = dest();
      const r = await smuggle([`${front.host}/library/race:1`, d], { MINC_PULL_UNPACK: "1" }, (text) => {
        if (text.includes(`${first.digest.slice(0, 19)}: done`)) release(); // (its unpack starts as it is done)
      });
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`minc-smuggler: layer ${late.digest}: digest mismatch`));
      assert.doesNotMatch(r.stderr, /Premature close|internal error|^\s+at /m);
      assert.equal(r.stderr.split("\n").filter((l) => l.startsWith("minc-smuggler:")).length, 1, r.stderr);
      assertUntouched(d, false);
    } finally {
      release();
      await front.stop();
    }
  });

  test("a manifest that does not match its digest: exit 1, nothing written", async () => {
    const front = await startFront(reg, { corruptManifests: true });
    for (const [ref, message] of [
      [`${front.host}/library/oci:v1`, /the registry says the digest is sha256:[0-9a-f]{64}, but what it served is/],
      [`${front.host}/library/oci@${oci.manifest.digest}`, /served a manifest whose digest is/],
    ] as const) {
      const d = dest();
      const r = await smuggle([ref, d]);
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, message);
      assertUntouched(d, false);
    }
    await front.stop();
  });

  test("blobs already in DESTDIR or in MINC_PULL_CACHE are not downloaded again", async () => {
    const front = await startFront(reg);
    const cache = join(work, "cache");
    const blobGets = () => front.requests.filter((q) => q.method === "GET" && /\/blobs\//.test(q.path)).length;
    const ref = `${front.host}/library/oci:v1`;
    const expect = { digest: oci.manifest.digest, tag: "v1", ref, mediaType: OCI_MANIFEST };

    const first = dest();
    checkLayout(first, await smuggle([ref, first], { MINC_PULL_CACHE: cache }), expect);
    assert.equal(blobGets(), 3, "config and two layers");
    assert.equal(readdirSync(join(cache, "blobs", "sha256")).length, 3, "the cache got them");

    let r = await smuggle([ref, first]);
    checkLayout(first, r, expect);
    assert.equal(blobGets(), 3, "downloaded again into the same layout");
    assert.match(r.stderr, /already here/);

    const second = dest();
    r = await smuggle([ref, second], { MINC_PULL_CACHE: cache });
    checkLayout(second, r, expect);
    assert.equal(blobGets(), 3, "downloaded again though in the cache");
    assert.match(r.stderr, /from the cache/);

    // A damaged cache entry is not trusted: downloaded again, and the pull is right.
    const layer = join(cache, "blobs", "sha256", oci.layers[1].digest.slice(7));
    writeFileSync(layer, "garbage");
    const third = dest();
    checkLayout(third, await smuggle([ref, third], { MINC_PULL_CACHE: cache }), expect);
    assert.equal(blobGets(), 4);
    await front.stop();
  });

  test("progress: plain start and done lines when stderr is not a terminal", async () => {
    const d = dest();
    const r = await smuggle([`${reg.host}/library/oci:v1`, d]);
    assert.equal(r.status, 0, r.stderr);
    for (const blob of [oci.config, ...oci.layers]) {
      assert.match(r.stderr, new RegExp(`${blob.digest.slice(0, 19)}: downloading`));
      assert.match(r.stderr, new RegExp(`${blob.digest.slice(0, 19)}: done, `));
    }
    assert.doesNotMatch(r.stderr, /\x1b\[/);
  });

  test("progress: redrawn in place on a terminal", {
    skip: !hasTool("script") && "needs script (bsdutils)",
  }, async () => {
    const d = dest();
    const log = join(work, "tty.log");
    // script(1) runs the pull on a terminal of its own and keeps what it showed.
    const r = spawnSync("script", ["-qec", `${SMUGGLER} ${reg.host}/library/oci:v1 ${d}`, log], {
      encoding: "utf8",
      env: smugglerEnv(),
    });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    const seen = readFileSync(log, "utf8");
    assert.match(seen, /\x1b\[\d+A/, "no cursor movement");
    assert.match(seen, /layer 2\/2 sha256:[0-9a-f]{12}: done, /);
    assert.match(seen, new RegExp(oci.manifest.digest));
  });

  test("an interrupted pull (SIGTERM mid-download) removes what it wrote", async () => {
    const stalled = oci.layers[1];
    const front = await startFront(reg, { stallBlob: stalled.digest });
    const d = dest();
    const r = await interruptedMidBlob([`${front.host}/library/oci:v1`, d], d, stalled, "SIGTERM");
    assert.equal(r.status, 143, r.stderr);
    assert.match(r.stderr, /interrupted by SIGTERM/);
    assertUntouched(d, false);

    // SIGKILL leaves what it wrote; the next pull into the same place removes the partial file and completes.
    const k = await interruptedMidBlob([`${front.host}/library/oci:v1`, d], d, stalled, "SIGKILL");
    assert.equal(k.signal, "SIGKILL");
    assert.ok(
      readdirSync(join(d, "blobs", "sha256")).some((f) => f.includes(".partial-")),
      "no partial file to clean up",
    );
    const ref = `${reg.host}/library/oci:v1`;
    checkLayout(d, await smuggle([ref, d]), { digest: oci.manifest.digest, tag: "v1", ref, mediaType: OCI_MANIFEST });
    await front.stop();
  });
});

describe("authentication", { skip }, () => {
  let layout = "";
  let image: BuiltImage;
  let work = "";
  let n = 0;
  const dest = () => join(work, `dest-${++n}`);

  before(() => {
    emptyHome = scratch("minc-home-");
    work = scratch("minc-pull-");
    layout = scratch("minc-layout-");
    image = buildImage(layout, "v1", { layers: [{ "etc/motd": "secret image\n" }], config: { Cmd: ["/bin/sh"] } });
  });
  after(() => stopAll());

  const expect = (ref: string) => ({ digest: image.manifest.digest, tag: "v1", ref, mediaType: OCI_MANIFEST });

  /** HOME with a docker config.json for this registry. */
  function home(host: string, entry: Record<string, string>): string {
    const h = scratch("minc-home-");
    mkdirSync(join(h, ".docker"));
    writeFileSync(join(h, ".docker", "config.json"), JSON.stringify({ auths: { [host]: entry } }));
    return h;
  }

  test("bearer tokens: anonymous where the token server allows it, credentials where it does not", async () => {
    const reg = await startRegistry({ token: { users: { alice: "s3cret" }, anonymous: ["library/public"] } });
    for (const repo of ["public", "private"])
      await push(layout, "v1", `${reg.host}/library/${repo}:v1`, { creds: "alice:s3cret" });
    const tokens = reg.token!.requests;
    tokens.length = 0;

    const pub = `${reg.host}/library/public:v1`;
    let d = dest();
    checkLayout(d, await smuggle([pub, d]), expect(pub));
    assert.equal(tokens.length, 1, "one token for the whole pull");
    assert.equal(tokens[0].authorization, false, "an anonymous token, asked without credentials");
    assert.deepEqual(tokens[0].scopes, ["repository:library/public:pull"]);

    const priv = `${reg.host}/library/private:v1`;
    d = dest();
    let r = await smuggle([priv, d]);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /denies anonymous access to library\/private/);
    assert.match(r.stderr, /MINC_PULL_USER/);
    assertUntouched(d, false);

    tokens.length = 0;
    d = dest();
    checkLayout(d, await smuggle([priv, d], { MINC_PULL_USER: "alice:s3cret" }), expect(priv));
    assert.ok(
      tokens.some((t) => t.user === "alice"),
      "the token was asked for as alice",
    );

    d = dest();
    r = await smuggle([priv, d], { MINC_PULL_USER: "alice:wrong" });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`authentication failed for ${reg.host}`));
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    assertUntouched(d, false);

    d = dest();
    const h = home(reg.host, { auth: Buffer.from("alice:s3cret").toString("base64") });
    checkLayout(d, await smuggle([priv, d], { HOME: h }), expect(priv));

    // The trace: every line a comment or a command, and neither the password nor the token in it.
    d = dest();
    r = await smuggle([priv, d], { MINC_PULL_USER: "alice:s3cret", MINC_DEBUG: "1" });
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stderr.trim().split("\n");
    assert.deepEqual(
      lines.filter((l) => !/^[#+] /.test(l)),
      [],
      "not a trace line",
    );
    assert.ok(
      lines.some((l) => l.startsWith("+ TOKEN=$(curl ") && l.includes('-u "$PULL_USER:$PULL_PASSWORD"')),
      r.stderr,
    );
    assert.ok(
      lines.some((l) => /^\+ curl .*Authorization: Bearer \$TOKEN.*\/manifests\/v1$/.test(l)),
      r.stderr,
    );
    assert.doesNotMatch(r.stderr, /s3cret|eyJ/);
    await reg.stop();
  });

  test("htpasswd basic auth: the right password works, a wrong one fails clearly", async () => {
    const reg = await startRegistry({ htpasswd: { bob: "hunter2" } });
    await push(layout, "v1", `${reg.host}/library/img:v1`, { creds: "bob:hunter2" });
    const ref = `${reg.host}/library/img:v1`;

    let d = dest();
    checkLayout(d, await smuggle([ref, d], { MINC_PULL_USER: "bob:hunter2" }), expect(ref));

    d = dest();
    let r = await smuggle([ref, d], { MINC_PULL_USER: "bob:wrong" });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`authentication failed for ${reg.host}`));
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    assertUntouched(d, false);

    d = dest();
    r = await smuggle([ref, d]);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /wants a user name and password/);
    assertUntouched(d, false);

    d = dest();
    checkLayout(
      d,
      await smuggle([ref, d], { HOME: home(`http://${reg.host}`, { username: "bob", password: "hunter2" }) }),
      expect(ref),
    );
    await reg.stop();
  });

  test("credentials are not sent along a redirect to another host:port (a CDN)", async () => {
    const reg = await startRegistry();
    await push(layout, "v1", `${reg.host}/library/img:v1`);
    const front = await startFront(reg, { basicAuth: { user: "carol", password: "pw" }, redirectBlobs: true });
    const ref = `${front.host}/library/img:v1`;
    const d = dest();
    checkLayout(d, await smuggle([ref, d], { MINC_PULL_USER: "carol:pw" }), expect(ref));
    const cdn = front.cdn!.requests;
    assert.equal(cdn.length, 2, "config and layer came from the CDN");
    assert.deepEqual(
      cdn.filter((q) => q.authorization !== undefined),
      [],
      "the CDN saw credentials",
    );
    const manifests = front.requests.filter((q) => /\/manifests\//.test(q.path));
    assert.ok(
      manifests.length > 0 && manifests.every((q) => q.authorization?.startsWith("Basic ")),
      "the registry itself got them",
    );
    assert.equal(front.requests.filter((q) => /\/blobs\//.test(q.path)).length, 2);
    await front.stop();
    await reg.stop();
  });
});
