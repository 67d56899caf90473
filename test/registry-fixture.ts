// Real registries on loopback for the pull tests: Debian's docker-registry
// (Distribution 2.8) started on 127.0.0.1 with a free port and a directory of
// its own, optionally behind htpasswd basic auth or bearer-token auth (with a
// small token server here that signs RS256 JWTs); images built by hand as OCI
// layouts and pushed with skopeo; and small HTTP servers in front of a
// registry that corrupt a blob, ask for basic auth themselves, or redirect
// blob downloads to a second "CDN" server that records what it was sent.
//
// Nothing here talks to any host but 127.0.0.1. Everything started is
// stopped by its own stop()/close(), and by stopAll() (call it from an
// after() hook), even when a test failed half-way.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createHash, createPrivateKey, createSign, randomBytes, X509Certificate, type KeyObject } from "node:crypto";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import {
  createServer,
  request as httpRequest,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import { dirname, join } from "node:path";
import { gzipSync, zstdCompressSync } from "node:zlib";
import { PATIENCE, freePort, sleep } from "./helpers.ts";

// ---- media types ----

export const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
export const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
export const OCI_CONFIG = "application/vnd.oci.image.config.v1+json";
export const OCI_LAYER = "application/vnd.oci.image.layer.v1.tar";
export const DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json";
export const DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";

// ---- what the machine must have ----

const TOOLS: [string, string][] = [
  ["docker-registry", "docker-registry"],
  ["skopeo", "skopeo"],
  ["htpasswd", "apache2-utils"],
  ["openssl", "openssl"],
  ["tar", "tar"],
];

/** Why the registry tests cannot run here (a missing tool and its Debian package), or undefined. */
export function cannotRunRegistry(): string | undefined {
  const missing = TOOLS.filter(([tool]) => spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0);
  if (!missing.length) return undefined;
  return `needs ${missing.map(([t, p]) => (t === p ? t : `${t} (${p})`)).join(", ")}: apt-get install -y ${[...new Set(missing.map(([, p]) => p))].join(" ")}`;
}

// ---- bookkeeping: everything started here can be stopped at once ----

const live = new Set<{ stop(): Promise<void> }>();
const scratchDirs = new Set<string>();

/** A fresh directory under /tmp, removed by stopAll(). */
export function scratch(prefix = "minc-registry-"): string {
  const dir = mkdtempSync(join("/tmp", prefix));
  scratchDirs.add(dir);
  return dir;
}

/** Stop every registry and server started here and remove every scratch directory. */
export async function stopAll(): Promise<void> {
  const errors: unknown[] = [];
  for (const thing of [...live].reverse()) {
    try {
      await thing.stop();
    } catch (e) {
      errors.push(e);
    }
  }
  for (const dir of scratchDirs) rmSync(dir, { recursive: true, force: true });
  scratchDirs.clear();
  if (errors.length) throw errors[0];
}

function track<T extends { stop(): Promise<void> }>(thing: T): T {
  const stop = thing.stop.bind(thing);
  let stopped: Promise<void> | undefined;
  thing.stop = () => {
    live.delete(thing);
    return (stopped ??= stop());
  };
  live.add(thing);
  return thing;
}

// A registry whose test process dies without its after() hooks still goes:
// the registries run under setpriv --pdeathsig, and this kills them on exit.
const children = new Set<ChildProcess>();
process.on("exit", () => {
  for (const c of children) c.kill("SIGKILL");
});

export { freePort };

function listen(server: Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port));
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

export function sha256(data: Buffer | string): string {
  return createHash("sha256").update(data).digest("hex");
}

function sh(argv: string[], input?: Buffer): Buffer {
  const r = spawnSync(argv[0], argv.slice(1), { input, maxBuffer: 1 << 30 });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${argv.join(" ")} failed (exit ${r.status}): ${r.stderr}`);
  return r.stdout;
}

function base64url(data: Buffer | string): string {
  return Buffer.from(data).toString("base64url");
}

// ---- the token server ----

export interface TokenRequest {
  /** The user that authenticated with the right password, if any. */
  user?: string;
  /** Whether an Authorization header came at all. */
  authorization: boolean;
  scopes: string[];
  status: number;
}

export interface TokenServer {
  realm: string;
  service: string;
  issuer: string;
  /** The certificate the registry trusts (rootcertbundle). */
  certFile: string;
  requests: TokenRequest[];
  stop(): Promise<void>;
}

export interface TokenPolicy {
  /** user name -> password; a user may pull and push everything. */
  users: Record<string, string>;
  /** Repositories anyone may pull without credentials (library/x). */
  anonymous?: string[];
}

/** A bearer-token server as Distribution expects: RS256 JWTs with an x5c header and an access claim. */
export async function startTokenServer(policy: TokenPolicy, dir = scratch("minc-token-")): Promise<TokenServer> {
  const keyFile = join(dir, "token.key");
  const certFile = join(dir, "token.crt");
  sh([
    "openssl",
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    keyFile,
    "-out",
    certFile,
    "-days",
    "2",
    "-subj",
    "/CN=minc test token issuer",
  ]);
  const key: KeyObject = createPrivateKey(readFileSync(keyFile));
  const x5c = new X509Certificate(readFileSync(certFile)).raw.toString("base64");
  const service = "minc-test-registry";
  const issuer = "minc-test-issuer";
  const requests: TokenRequest[] = [];

  const sign = (sub: string, access: { type: string; name: string; actions: string[] }[]): string => {
    const now = Math.floor(Date.now() / 1000);
    const header = base64url(JSON.stringify({ typ: "JWT", alg: "RS256", x5c: [x5c] }));
    const claims = base64url(
      JSON.stringify({
        iss: issuer,
        sub,
        aud: service,
        exp: now + 600,
        nbf: now - 60,
        iat: now,
        jti: randomBytes(12).toString("hex"),
        access,
      }),
    );
    const signature = createSign("RSA-SHA256").update(`${header}.${claims}`).sign(key);
    return `${header}.${claims}.${base64url(signature)}`;
  };

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    const scopes = url.searchParams.getAll("scope");
    const auth = req.headers.authorization;
    const record: TokenRequest = { authorization: !!auth, scopes, status: 200 };
    requests.push(record);
    let user: string | undefined;
    if (auth) {
      const m = /^Basic\s+(\S+)$/i.exec(auth);
      const [name, ...rest] = m ? Buffer.from(m[1], "base64").toString().split(":") : [""];
      if (!m || policy.users[name] === undefined || policy.users[name] !== rest.join(":")) {
        record.status = 401;
        res.writeHead(401, { "content-type": "application/json", "www-authenticate": 'Basic realm="token"' });
        res.end(JSON.stringify({ details: "authentication failed" }));
        return;
      }
      user = name;
    }
    record.user = user;
    const access = [];
    for (const scope of scopes) {
      const [type, name, actions] = scope.split(":");
      if (type !== "repository" || !name || !actions) continue;
      const asked = actions.split(",");
      const granted = user ? asked : policy.anonymous?.includes(name) ? asked.filter((a) => a === "pull") : [];
      access.push({ type, name, actions: granted });
    }
    const token = sign(user ?? "", access);
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ token, access_token: token, expires_in: 600, issued_at: new Date().toISOString() }));
  });
  const port = await listen(server);
  return track({
    realm: `http://127.0.0.1:${port}/token`,
    service,
    issuer,
    certFile,
    requests,
    stop: () => closeServer(server),
  });
}

// ---- the registry ----

export interface Registry {
  /** 127.0.0.1:PORT, as a reference names it. */
  host: string;
  port: number;
  url: string;
  /** Its directory: config.yml, storage/, log. */
  dir: string;
  storage: string;
  token?: TokenServer;
  /** What the registry printed so far. */
  log(): string;
  stop(): Promise<void>;
}

export interface RegistryOptions {
  /** Basic auth: user name -> password (stored bcrypt-hashed, as Distribution requires). */
  htpasswd?: Record<string, string>;
  /** Token auth with a token server started here. */
  token?: TokenPolicy;
}

/**
 * docker-registry serve on 127.0.0.1 with a port free at run time, plain
 * HTTP, storage of its own. The port is free when picked, but another
 * program on the machine may take it before the registry listens: then the
 * registry says so and ends, and another port is tried.
 */
export async function startRegistry(opts: RegistryOptions = {}): Promise<Registry> {
  const dir = scratch("minc-registry-");
  const storage = join(dir, "storage");
  mkdirSync(storage);
  let auth = "";
  let token: TokenServer | undefined;
  if (opts.htpasswd) {
    const lines = Object.entries(opts.htpasswd).map(([u, p]) => sh(["htpasswd", "-Bbn", u, p]).toString().trim());
    writeFileSync(join(dir, "htpasswd"), `${lines.join("\n")}\n`);
    auth = `auth:\n  htpasswd:\n    realm: minc-test\n    path: ${join(dir, "htpasswd")}\n`;
  } else if (opts.token) {
    token = await startTokenServer(opts.token, dir);
    auth = `auth:\n  token:\n    realm: ${token.realm}\n    service: ${token.service}\n    issuer: ${token.issuer}\n    rootcertbundle: ${token.certFile}\n`;
  }
  for (let attempt = 1; ; attempt++) {
    try {
      return await serveRegistry(dir, storage, auth, token, await freePort());
    } catch (e) {
      if (!(e instanceof PortTaken) || attempt === 5) {
        await token?.stop();
        rmSync(dir, { recursive: true, force: true });
        scratchDirs.delete(dir);
        throw e;
      }
    }
  }
}

/** The registry could not listen on its port: another program took it after it was picked. */
class PortTaken extends Error {}

/** Start docker-registry on this port and wait until it answers (or fail, with what it printed). */
async function serveRegistry(
  dir: string,
  storage: string,
  auth: string,
  token: TokenServer | undefined,
  port: number,
): Promise<Registry> {
  writeFileSync(join(dir, "log"), "");
  const config = join(dir, "config.yml");
  writeFileSync(
    config,
    [
      "version: 0.1",
      "log:",
      "  level: warn",
      "  accesslog:",
      "    disabled: true",
      "storage:",
      "  filesystem:",
      `    rootdirectory: ${storage}`,
      "  delete:",
      "    enabled: true",
      "http:",
      `  addr: 127.0.0.1:${port}`,
      `  secret: ${randomBytes(16).toString("hex")}`,
      auth,
    ].join("\n"),
  );
  const setpriv = spawnSync("sh", ["-c", "command -v setpriv"]).status === 0;
  const argv = [...(setpriv ? ["setpriv", "--pdeathsig", "KILL"] : []), "docker-registry", "serve", config];
  const child = spawn(argv[0], argv.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  let output = "";
  child.stdout!.on("data", (d) => {
    output += d;
  });
  child.stderr!.on("data", (d) => {
    output += d;
  });
  const exited = new Promise<void>((resolve) =>
    child.on("exit", () => {
      children.delete(child);
      resolve();
    }),
  );
  const closed = new Promise<void>((resolve) => child.on("close", () => resolve()));
  const over = (): boolean => child.exitCode !== null || child.signalCode !== null;
  const kill = async (): Promise<void> => {
    if (over()) return;
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(timer);
  };

  const url = `http://127.0.0.1:${port}`;
  let last = "no answer yet";
  const deadline = Date.now() + PATIENCE;
  for (;;) {
    if (over()) {
      await closed; // (its output read to the end)
      if (/address already in use/.test(output)) throw new PortTaken(`port ${port} was taken: ${output}`);
      throw new Error(`docker-registry ended at once:\n${output}`);
    }
    try {
      const r = await fetch(`${url}/v2/`);
      await r.body?.cancel();
      if (r.status === 200 || r.status === 401) break;
      last = `HTTP ${r.status}`;
    } catch (e) {
      last = String((e as Error).cause ?? e); // (not listening yet)
    }
    if (Date.now() > deadline) {
      await kill();
      throw new Error(
        `gave up after ${PATIENCE} ms waiting for docker-registry to answer on 127.0.0.1:${port} (last: ${last}):\n${output}`,
      );
    }
    await sleep(50);
  }
  return track<Registry>({
    host: `127.0.0.1:${port}`,
    port,
    url,
    dir,
    storage,
    token,
    log: () => output,
    async stop() {
      await kill();
      await token?.stop();
      rmSync(dir, { recursive: true, force: true });
      scratchDirs.delete(dir);
    },
  });
}

// ---- images built by hand ----

/** A file in a layer: its content, or a directory, a symlink, a mode. */
export type FileEntry = string | Buffer | { content?: string | Buffer; mode?: number; dir?: true; symlink?: string };
/** A layer: files by path (parents are made), or a ready uncompressed tar. */
export type LayerSpec = Record<string, FileEntry> | Buffer;

export interface ImageSpec {
  architecture?: string;
  os?: string;
  variant?: string;
  layers: LayerSpec[];
  config?: { Env?: string[]; Cmd?: string[]; Entrypoint?: string[]; WorkingDir?: string; User?: string };
  /** How the layers are compressed (gzip by default). */
  compression?: "gzip" | "zstd" | "none";
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { architecture: string; os: string; variant?: string };
  annotations?: Record<string, string>;
}

export interface BuiltImage {
  manifest: Descriptor;
  config: Descriptor;
  layers: Descriptor[];
  /** sha256 of each uncompressed layer tar, as the config's rootfs.diff_ids. */
  diffIds: string[];
}

export interface BuiltIndex {
  index: Descriptor;
  images: BuiltImage[];
  attestation?: Descriptor;
}

/** Write a blob into an OCI layout; returns its descriptor. */
function putBlob(layout: string, mediaType: string, data: Buffer | string): Descriptor {
  const bytes = Buffer.from(data);
  const digest = `sha256:${sha256(bytes)}`;
  const dir = join(layout, "blobs", "sha256");
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, digest.slice(7)), bytes);
  return { mediaType, digest, size: bytes.length };
}

function json(value: unknown): string {
  return JSON.stringify(value);
}

/** An uncompressed tar of these files: sorted names, mtime 0, owner 0:0 by number. */
export function makeTar(files: Record<string, FileEntry>): Buffer {
  const stage = mkdtempSync("/tmp/minc-layer-");
  try {
    for (const [path, entry] of Object.entries(files)) {
      const target = join(stage, path.replace(/^\/+/, ""));
      mkdirSync(dirname(target), { recursive: true });
      if (typeof entry === "string" || Buffer.isBuffer(entry)) {
        writeFileSync(target, entry);
        chmodSync(target, 0o644);
      } else if (entry.symlink !== undefined) {
        symlinkSync(entry.symlink, target);
      } else if (entry.dir) {
        mkdirSync(target, { recursive: true });
        chmodSync(target, entry.mode ?? 0o755);
      } else {
        writeFileSync(target, entry.content ?? "");
        chmodSync(target, entry.mode ?? 0o644);
      }
    }
    const top = readdirSync(stage).sort();
    if (!top.length) return sh(["tar", "-cf", "-", "--files-from", "/dev/null"]);
    return sh([
      "tar",
      "--sort=name",
      "--mtime=@0",
      "--owner=0",
      "--group=0",
      "--numeric-owner",
      "--format=gnu",
      "-C",
      stage,
      "-cf",
      "-",
      "--",
      ...top,
    ]);
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}

function compress(tar: Buffer, how: "gzip" | "zstd" | "none"): { data: Buffer; mediaType: string } {
  if (how === "gzip") return { data: gzipSync(tar, { level: 9 }), mediaType: `${OCI_LAYER}+gzip` }; // no name, mtime 0: gzip -n
  if (how === "zstd") return { data: zstdCompressSync(tar), mediaType: `${OCI_LAYER}+zstd` };
  return { data: tar, mediaType: OCI_LAYER };
}

/** Write one image's blobs into the layout (not index.json). */
function writeImage(layout: string, spec: ImageSpec): BuiltImage {
  const layers: Descriptor[] = [];
  const diffIds: string[] = [];
  for (const layer of spec.layers) {
    const tar = Buffer.isBuffer(layer) ? layer : makeTar(layer);
    diffIds.push(`sha256:${sha256(tar)}`);
    const { data, mediaType } = compress(tar, spec.compression ?? "gzip");
    layers.push(putBlob(layout, mediaType, data));
  }
  const platform = {
    architecture: spec.architecture ?? "amd64",
    os: spec.os ?? "linux",
    ...(spec.variant ? { variant: spec.variant } : {}),
  };
  const config = putBlob(
    layout,
    OCI_CONFIG,
    json({
      created: "1970-01-01T00:00:00Z",
      ...platform,
      config: spec.config ?? {},
      rootfs: { type: "layers", diff_ids: diffIds },
      history: diffIds.map(() => ({ created: "1970-01-01T00:00:00Z", created_by: "registry-fixture" })),
    }),
  );
  const manifest = putBlob(layout, OCI_MANIFEST, json({ schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers }));
  return { manifest: { ...manifest, platform }, config, layers, diffIds };
}

function addToIndex(layout: string, tag: string, desc: Descriptor): void {
  writeFileSync(join(layout, "oci-layout"), json({ imageLayoutVersion: "1.0.0" }));
  const file = join(layout, "index.json");
  const index = existsSync(file)
    ? JSON.parse(readFileSync(file, "utf8"))
    : { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] };
  const ref = "org.opencontainers.image.ref.name";
  index.manifests = index.manifests.filter((m: Descriptor) => m.annotations?.[ref] !== tag);
  const { platform: _, ...plain } = desc;
  index.manifests.push({ ...plain, annotations: { [ref]: tag } });
  writeFileSync(file, json(index));
}

/** Build an image into the OCI layout LAYOUT under TAG (the layout may hold other tags). */
export function buildImage(layout: string, tag: string, spec: ImageSpec): BuiltImage {
  const image = writeImage(layout, spec);
  addToIndex(layout, tag, image.manifest);
  return image;
}

/**
 * Build a multi-arch image: an OCI index with one manifest per spec and,
 * with attestation, a BuildKit-style attestation manifest (platform
 * unknown/unknown) for the first one.
 */
export function buildIndex(
  layout: string,
  tag: string,
  specs: ImageSpec[],
  opts: { attestation?: boolean } = {},
): BuiltIndex {
  const images = specs.map((s) => writeImage(layout, s));
  const manifests: Descriptor[] = images.map((i) => i.manifest);
  let attestation: Descriptor | undefined;
  if (opts.attestation) {
    const statement = putBlob(
      layout,
      "application/vnd.in-toto+json",
      json({
        _type: "https://in-toto.io/Statement/v0.1",
        predicateType: "https://spdx.dev/Document",
        subject: [{ name: "x", digest: { sha256: images[0].manifest.digest.slice(7) } }],
        predicate: {},
      }),
    );
    const config = putBlob(
      layout,
      OCI_CONFIG,
      json({
        architecture: "unknown",
        os: "unknown",
        config: {},
        rootfs: { type: "layers", diff_ids: [statement.digest] },
      }),
    );
    const layers = [{ ...statement, annotations: { "in-toto.io/predicate-type": "https://spdx.dev/Document" } }];
    const m = putBlob(layout, OCI_MANIFEST, json({ schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers }));
    attestation = {
      ...m,
      platform: { architecture: "unknown", os: "unknown" },
      annotations: {
        "vnd.docker.reference.digest": images[0].manifest.digest,
        "vnd.docker.reference.type": "attestation-manifest",
      },
    };
    manifests.push(attestation);
  }
  const index = putBlob(layout, OCI_INDEX, json({ schemaVersion: 2, mediaType: OCI_INDEX, manifests }));
  addToIndex(layout, tag, index);
  return { index, images, attestation };
}

export interface PushOptions {
  /** v2s2: convert to Docker schema2 (manifest, config and layer media types); oci: keep OCI. */
  format?: "v2s2" | "oci";
  /** Copy every manifest of an index (multi-arch). */
  all?: boolean;
  /** user:password for the registry. */
  creds?: string;
}

/**
 * skopeo copy oci:LAYOUT:TAG docker://DEST; resolves to the digest of what
 * the registry got. Asynchronous: a token server in this process must go on
 * answering while skopeo runs.
 */
export async function push(layout: string, tag: string, dest: string, opts: PushOptions = {}): Promise<string> {
  const dir = scratch("minc-push-");
  try {
    const digestFile = join(dir, "digest");
    const argv = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--digestfile", digestFile];
    if (opts.format) argv.push("--format", opts.format);
    if (opts.all) argv.push("--all");
    if (opts.creds) argv.push("--dest-creds", opts.creds);
    argv.push(`oci:${layout}:${tag}`, `docker://${dest}`);
    const env = { ...process.env, REGISTRY_AUTH_FILE: join(dir, "auth.json") };
    const child = spawn(argv[0], argv.slice(1), { stdio: ["ignore", "pipe", "pipe"], env });
    children.add(child);
    let output = "";
    child.stdout!.on("data", (d) => {
      output += d;
    });
    child.stderr!.on("data", (d) => {
      output += d;
    });
    const status = await new Promise<number | null>((resolve, reject) => {
      child.on("error", reject);
      child.on("close", (code) => {
        children.delete(child);
        resolve(code);
      });
    });
    if (status !== 0) throw new Error(`${argv.join(" ")} failed (exit ${status}):\n${output}`);
    return readFileSync(digestFile, "utf8").trim();
  } finally {
    rmSync(dir, { recursive: true, force: true });
    scratchDirs.delete(dir);
  }
}

// ---- servers in front of a registry ----

export interface SeenRequest {
  method: string;
  path: string;
  /** The Authorization header, if one came. */
  authorization?: string;
  host?: string;
}

export interface Front {
  /** 127.0.0.1:PORT: pull from here instead of the registry. */
  host: string;
  port: number;
  requests: SeenRequest[];
  /** With redirectBlobs: the "CDN" server the blobs are sent to. */
  cdn?: { host: string; port: number; requests: SeenRequest[] };
  stop(): Promise<void>;
}

export interface FrontOptions {
  /** Serve this blob (sha256:... or its hex) with one byte changed, same length. */
  corruptBlob?: string;
  /** Serve every manifest with one byte changed (its Docker-Content-Digest header left as it was). */
  corruptManifests?: boolean;
  /** Ask for these credentials with HTTP basic auth (the registry behind may be open). */
  basicAuth?: { user: string; password: string };
  /** Answer blob GETs with a 307 to a second server on another port, which serves them. */
  redirectBlobs?: boolean;
  /** Send the first half of this blob, then nothing more (the connection stays open). */
  stallBlob?: string;
  /** Answer this blob's GET only once `until` has resolved (a download that ends when the test says). */
  holdBlob?: { digest: string; until: Promise<void> };
}

function forward(
  target: string,
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  alter?: (body: Buffer) => Buffer,
): void {
  const headers = { ...req.headers };
  delete headers.host;
  delete headers.authorization;
  const up = httpRequest(`${target}${path}`, { method: req.method, headers }, (upRes) => {
    const out = { ...upRes.headers };
    if (!alter || upRes.statusCode !== 200 || req.method !== "GET") {
      res.writeHead(upRes.statusCode ?? 502, out);
      upRes.pipe(res);
      return;
    }
    const chunks: Buffer[] = [];
    upRes.on("data", (c: Buffer) => chunks.push(c));
    upRes.on("end", () => {
      const body = alter(Buffer.concat(chunks));
      out["content-length"] = String(body.length);
      res.writeHead(200, out);
      res.end(body);
    });
  });
  up.on("error", (e) => {
    if (!res.headersSent) res.writeHead(502);
    res.end(String(e));
  });
  req.pipe(up);
}

const BLOB = /^\/v2\/(.+)\/blobs\/(sha256:[0-9a-f]{64})(\?.*)?$/;

/** An HTTP server on 127.0.0.1 in front of a (plain) registry, see FrontOptions. */
export async function startFront(registry: { url: string }, opts: FrontOptions = {}): Promise<Front> {
  const target = registry.url;
  const corrupt = opts.corruptBlob?.replace(/^sha256:/, "");
  const stall = opts.stallBlob?.replace(/^sha256:/, "");
  const requests: SeenRequest[] = [];
  const seen = (req: IncomingMessage, list: SeenRequest[]): void => {
    list.push({
      method: req.method ?? "",
      path: req.url ?? "",
      authorization: req.headers.authorization,
      host: req.headers.host,
    });
  };

  let cdn: Front["cdn"];
  let cdnServer: Server | undefined;
  if (opts.redirectBlobs) {
    const cdnRequests: SeenRequest[] = [];
    cdnServer = createServer((req, res) => {
      seen(req, cdnRequests);
      const m = /^\/cdn\/(.+)\/(sha256:[0-9a-f]{64})$/.exec(new URL(req.url ?? "/", "http://x").pathname);
      if (!m) {
        res.writeHead(404);
        res.end();
        return;
      }
      forward(target, req, res, `/v2/${m[1]}/blobs/${m[2]}`);
    });
    const port = await listen(cdnServer);
    cdn = { host: `127.0.0.1:${port}`, port, requests: cdnRequests };
  }

  const held = opts.holdBlob;
  const server = createServer((req, res) => {
    seen(req, requests);
    if (held && req.method === "GET" && BLOB.exec(req.url ?? "")?.[2] === held.digest)
      void held.until.then(() => answer(req, res));
    else answer(req, res);
  });
  const answer = (req: IncomingMessage, res: ServerResponse): void => {
    const path = req.url ?? "/";
    if (opts.basicAuth) {
      const expected = `Basic ${Buffer.from(`${opts.basicAuth.user}:${opts.basicAuth.password}`).toString("base64")}`;
      if (req.headers.authorization !== expected) {
        res.writeHead(401, { "www-authenticate": 'Basic realm="minc-front"', "content-type": "application/json" });
        res.end(JSON.stringify({ errors: [{ code: "UNAUTHORIZED", message: "authentication required" }] }));
        return;
      }
    }
    const blob = BLOB.exec(path);
    if (blob && cdn && req.method === "GET") {
      res.writeHead(307, { location: `http://${cdn.host}/cdn/${blob[1]}/${blob[2]}` });
      res.end();
      return;
    }
    if (blob && stall && blob[2] === `sha256:${stall}` && req.method === "GET") {
      const up = httpRequest(`${target}${path}`, { method: "GET" }, (upRes) => {
        const chunks: Buffer[] = [];
        upRes.on("data", (c: Buffer) => chunks.push(c));
        upRes.on("end", () => {
          const body = Buffer.concat(chunks);
          res.writeHead(upRes.statusCode ?? 502, {
            "content-type": "application/octet-stream",
            "content-length": String(body.length),
          });
          res.write(body.subarray(0, body.length >> 1));
        });
      });
      up.end();
      return;
    }
    const alter =
      (blob && corrupt && blob[2] === `sha256:${corrupt}`) ||
      (opts.corruptManifests && /^\/v2\/.+\/manifests\//.test(path))
        ? (body: Buffer) => {
            const copy = Buffer.from(body);
            copy[copy.length >> 1] ^= 0xff;
            return copy;
          }
        : undefined;
    forward(target, req, res, path, alter);
  };
  const port = await listen(server);
  return track<Front>({
    host: `127.0.0.1:${port}`,
    port,
    requests,
    cdn,
    async stop() {
      await closeServer(server);
      if (cdnServer) await closeServer(cdnServer);
    },
  });
}
