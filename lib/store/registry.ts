// Talking to an image registry (the Docker Registry HTTP API V2 / OCI
// distribution spec) with Node's own fetch: authentication (bearer tokens
// from the realm a 401 names, or basic auth), manifests asked for with all
// four media types, platforms picked from an index, and blobs streamed to
// disk while their size and sha256 are checked.
//
// Credentials (and the bearer token) go to the registry's own origin
// (scheme, host and port) only: redirects are followed here, one hop at a
// time, and the Authorization header is dropped as soon as a hop leads
// anywhere else (blob downloads are often sent to a CDN).
import { createHash } from "node:crypto";
import { createReadStream, readFileSync } from "node:fs";
import { open, rename, unlink } from "node:fs/promises";
import { homedir } from "node:os";
import { MincError, usageError, warn } from "../core/fail.ts";
import { hostOf, isLoopback, type Reference } from "./reference.ts";
import { quote, shown, step, tracing } from "../core/trace.ts";
import { VERSION } from "../core/version.ts";
import { formatPlatform, hostPlatform, parseArch, type Platform } from "./platform.ts";

export { formatPlatform, hostPlatform, parseArch, type Platform };

// ---- media types ----

export const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
export const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
export const DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json";
export const DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_SCHEMA1 = [
  "application/vnd.docker.distribution.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.v1+prettyjws",
];
export const OCI_CONFIG = "application/vnd.oci.image.config.v1+json";
export const DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json";
/** Layer types an image may have: plain tar, gzip or zstd. */
export const LAYER_TYPES = new Set([
  "application/vnd.oci.image.layer.v1.tar",
  "application/vnd.oci.image.layer.v1.tar+gzip",
  "application/vnd.oci.image.layer.v1.tar+zstd",
  "application/vnd.docker.image.rootfs.diff.tar.gzip",
  "application/vnd.docker.image.rootfs.diff.tar",
]);
/** The Accept header of a manifest request: without the OCI types Distribution answers 404 to OCI images. */
export const MANIFEST_ACCEPT = [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST].join(", ");
/** Manifests are small; Distribution refuses more than 4 MiB. */
const MANIFEST_MAX = 4 << 20;

/** A failed or refused download (exit 1). */
function failure(message: string): MincError {
  return new MincError(message);
}

// ---- descriptors and manifests ----

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: Platform;
  annotations?: Record<string, string>;
  urls?: string[];
}

export type Manifest =
  | { kind: "index"; mediaType: string; manifests: Descriptor[] }
  | { kind: "image"; mediaType: string; config: Descriptor; layers: Descriptor[] };

const SHA256 = /^sha256:[a-f0-9]{64}$/;

/** A descriptor from the registry, checked: what goes on disk is named after its digest. */
export function checkDescriptor(value: unknown, what: string): Descriptor {
  const d = value as Partial<Descriptor> | null;
  if (!d || typeof d !== "object") throw failure(`${what}: not a descriptor`);
  if (typeof d.mediaType !== "string" || !d.mediaType) throw failure(`${what}: no mediaType`);
  if (typeof d.digest !== "string" || !SHA256.test(d.digest)) {
    throw failure(`${what}: digest ${JSON.stringify(d.digest)} is not sha256: and 64 lowercase hex digits`);
  }
  if (typeof d.size !== "number" || !Number.isSafeInteger(d.size) || d.size < 0)
    throw failure(`${what}: bad size ${JSON.stringify(d.size)}`);
  const out: Descriptor = { mediaType: d.mediaType, digest: d.digest, size: d.size };
  if (d.platform && typeof d.platform === "object") {
    const p = d.platform;
    out.platform = {
      architecture: String(p.architecture ?? ""),
      os: String(p.os ?? ""),
      ...(p.variant ? { variant: String(p.variant) } : {}),
    };
  }
  if (d.annotations && typeof d.annotations === "object") out.annotations = d.annotations;
  if (Array.isArray(d.urls)) out.urls = d.urls;
  return out;
}

/** Parse a manifest or an index as served; schema 1 and anything unknown are refused. */
export function parseManifest(bytes: Buffer, contentType: string | null, what: string): Manifest {
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(bytes.toString("utf8"));
  } catch {
    throw failure(`${what}: the manifest is not JSON`);
  }
  if (!json || typeof json !== "object") throw failure(`${what}: the manifest is not a JSON object`);
  const served = (contentType ?? "").split(";")[0].trim().toLowerCase();
  const mediaType = typeof json.mediaType === "string" ? json.mediaType : served;
  if (json.schemaVersion === 1 || DOCKER_SCHEMA1.includes(mediaType)) {
    throw failure(
      `${what}: Docker schema 1 manifests are deprecated and not supported (push the image again with a current tool)`,
    );
  }
  if (json.schemaVersion !== 2)
    throw failure(`${what}: unknown manifest schemaVersion ${JSON.stringify(json.schemaVersion)}`);
  if (
    Array.isArray(json.manifests) &&
    (mediaType === OCI_INDEX || mediaType === DOCKER_LIST || (!mediaType && !json.config))
  ) {
    return {
      kind: "index",
      mediaType: mediaType || OCI_INDEX,
      manifests: json.manifests.map((m, i) => checkDescriptor(m, `${what}: manifest ${i + 1}`)),
    };
  }
  if (
    json.config &&
    Array.isArray(json.layers) &&
    (mediaType === OCI_MANIFEST || mediaType === DOCKER_MANIFEST || !mediaType)
  ) {
    return {
      kind: "image",
      mediaType: mediaType || OCI_MANIFEST,
      config: checkDescriptor(json.config, `${what}: config`),
      layers: json.layers.map((l, i) => checkDescriptor(l, `${what}: layer ${i + 1}`)),
    };
  }
  throw failure(`${what}: not an image manifest or index (media type ${JSON.stringify(mediaType || served)})`);
}

/** Refuse what is not a container image we can unpack (artifacts, foreign layers). */
export function checkImage(m: Extract<Manifest, { kind: "image" }>, what: string): void {
  if (m.config.mediaType !== OCI_CONFIG && m.config.mediaType !== DOCKER_CONFIG) {
    throw failure(`${what}: not a container image (its config is ${m.config.mediaType})`);
  }
  m.layers.forEach((l, i) => {
    if (LAYER_TYPES.has(l.mediaType)) return;
    if (/nondistributable|foreign/.test(l.mediaType))
      throw failure(`${what}: layer ${i + 1} is a foreign layer (${l.mediaType}), not supported`);
    throw failure(`${what}: layer ${i + 1} has an unknown media type ${l.mediaType}`);
  });
}

// ---- platforms: lib/store/platform.ts ----

/** arm64 is v8 and arm v7 unless said otherwise; amd64 v1. */
function variantOf(p: Platform): string {
  const v = (p.variant ?? "").toLowerCase();
  if (v) return v;
  return p.architecture === "arm64" ? "v8" : p.architecture === "arm" ? "v7" : p.architecture === "amd64" ? "v1" : "";
}

/** BuildKit's provenance and SBOM entries: not an image to run. */
export function isAttestation(d: Descriptor): boolean {
  return (
    d.annotations?.["vnd.docker.reference.type"] === "attestation-manifest" ||
    (d.platform?.architecture === "unknown" && d.platform?.os === "unknown")
  );
}

/**
 * The entry of an index for this platform: same os and architecture, and
 * the same variant (defaults filled in); for arm with no variant asked, an
 * older one (v6, v5) if that is all there is. None is an error listing
 * what there is.
 */
export function pickPlatform(
  manifests: readonly Descriptor[],
  want: Platform,
  what: string,
  variantGiven = true,
): Descriptor {
  const images = manifests.filter((d) => !isAttestation(d) && d.platform);
  const same = images.filter((d) => d.platform!.os === want.os && d.platform!.architecture === want.architecture);
  const exact = same.find((d) => variantOf(d.platform!) === variantOf(want));
  if (exact) return exact;
  if (!variantGiven && want.architecture === "arm") {
    const lower = same
      .filter(
        (d) =>
          /^v\d+$/.test(variantOf(d.platform!)) &&
          Number(variantOf(d.platform!).slice(1)) < Number(variantOf(want).slice(1)),
      )
      .sort((a, b) => Number(variantOf(b.platform!).slice(1)) - Number(variantOf(a.platform!).slice(1)));
    if (lower.length) return lower[0];
  }
  const there = [...new Set(images.map((d) => formatPlatform(d.platform!)))];
  throw failure(
    `${what} has no image for ${formatPlatform(want)}; it has: ${there.join(", ") || "none"} (choose one with MINC_ARCH)`,
  );
}

// ---- credentials ----

export interface Credentials {
  user: string;
  password: string;
  /** Where they came from, for messages. */
  source: string;
}

/** MINC_PULL_USER=user:password */
export function parseUserSpec(spec: string, source = "MINC_PULL_USER"): Credentials {
  const colon = spec.indexOf(":");
  if (colon <= 0) throw usageError(`${source} must be user:password`);
  return { user: spec.slice(0, colon), password: spec.slice(colon + 1), source };
}

/** The keys of docker's config.json that mean this registry. */
function authKeys(domain: string): string[] {
  const d = domain.toLowerCase();
  if (d === "docker.io") return ["docker.io", "index.docker.io", "registry-1.docker.io"];
  return [d];
}

/** Credentials for this registry from ~/.docker/config.json (or $DOCKER_CONFIG/config.json) "auths". */
export function dockerConfigCredentials(domain: string, env: NodeJS.ProcessEnv = process.env): Credentials | undefined {
  const dir = env.DOCKER_CONFIG || `${env.HOME || homedir()}/.docker`;
  const file = `${dir}/config.json`;
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
  let auths: Record<string, { auth?: string; username?: string; password?: string }>;
  try {
    auths = JSON.parse(text).auths ?? {};
  } catch {
    warn(`${file} is not valid JSON; pulling without its credentials`);
    return undefined;
  }
  const keys = authKeys(domain);
  for (const [key, entry] of Object.entries(auths)) {
    const host = key
      .toLowerCase()
      .replace(/^[a-z]+:\/\//, "")
      .replace(/\/.*$/, "");
    if (!keys.includes(host) || !entry || typeof entry !== "object") continue;
    if (typeof entry.auth === "string" && entry.auth) {
      const plain = Buffer.from(entry.auth, "base64").toString("utf8");
      const colon = plain.indexOf(":");
      if (colon > 0) return { user: plain.slice(0, colon), password: plain.slice(colon + 1), source: file };
    }
    if (typeof entry.username === "string" && entry.username && typeof entry.password === "string") {
      return { user: entry.username, password: entry.password, source: file };
    }
  }
  return undefined;
}

// ---- WWW-Authenticate ----

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parse a WWW-Authenticate header (RFC 7235): several challenges, quoted or bare parameters. */
export function parseChallenges(header: string): Challenge[] {
  const out: Challenge[] = [];
  const re = /\s*(?:,\s*)*([A-Za-z0-9!#$%&'*+.^_`|~-]+)(?:\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*)))?/gy;
  let current: Challenge | undefined;
  let m: RegExpExecArray | null;
  while (re.lastIndex < header.length && (m = re.exec(header))) {
    if (m[0].trim() === "" || m[0].trim() === ",") break;
    const [, token, quoted, bare] = m;
    if (quoted !== undefined || bare !== undefined) {
      if (!current) continue;
      current.params[token.toLowerCase()] = quoted !== undefined ? quoted.replace(/\\(.)/g, "$1") : bare!;
    } else {
      current = { scheme: token.toLowerCase(), params: {} };
      out.push(current);
    }
  }
  return out;
}

// ---- the client ----

/** HTTPS always; plain HTTP after it only on the loopback or when allowed (MINC_PULL_INSECURE). */
export function schemesFor(endpoint: string, insecure: boolean): ("https" | "http")[] {
  return insecure || isLoopback(hostOf(endpoint)) ? ["https", "http"] : ["https"];
}

export interface ClientOptions {
  credentials?: Credentials;
  /** Plain HTTP allowed for a registry that is not on the loopback. */
  insecure?: boolean;
  signal?: AbortSignal;
}

interface Fetched {
  res: Response;
  /** The URL that answered, after redirects. */
  url: URL;
}

/** Why a fetch failed, in one line. */
function netError(e: unknown, url: URL | string): Error {
  if (e instanceof Error && e.name === "AbortError") return e;
  const cause = e instanceof Error ? (e.cause as { code?: string; message?: string } | undefined) : undefined;
  const why = cause?.code ?? cause?.message ?? (e instanceof Error ? e.message : String(e));
  return failure(`cannot reach ${new URL(url).host}: ${why}`);
}

/** A registry's error answer ({"errors":[{code,message}]}) in a few words. */
async function errorText(res: Response): Promise<string> {
  let text = "";
  try {
    text = await res.text();
  } catch {
    // the status says enough
  }
  try {
    const errs = JSON.parse(text).errors as { code?: string; message?: string }[];
    if (Array.isArray(errs) && errs.length)
      return `${res.status} ${errs.map((e) => [e.code, e.message].filter(Boolean).join(": ")).join("; ")}`;
  } catch {
    // not JSON
  }
  return `${res.status} ${res.statusText}`.trim();
}

async function drain(res: Response): Promise<void> {
  try {
    await res.body?.cancel();
  } catch {
    // nothing to read
  }
}

/** Read a whole body, refusing more than max bytes. */
async function readLimited(res: Response, max: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of res.body ?? []) {
    n += chunk.length;
    if (n > max) throw failure(`${what} is larger than ${max} bytes`);
    chunks.push(Buffer.from(chunk));
  }
  return Buffer.concat(chunks);
}

/** A pull from one repository of one registry. */
export class RegistryClient {
  readonly ref: Reference;
  readonly credentials?: Credentials;
  readonly insecure: boolean;
  readonly signal?: AbortSignal;
  /** The registry's origin (scheme://host[:port] as URL.origin writes it), known after connect(). */
  private base = "";
  /** The Authorization header for the registry's origin, once known. */
  private authorization?: string;
  private basic = false;

  constructor(ref: Reference, opts: ClientOptions = {}) {
    this.ref = ref;
    this.credentials = opts.credentials;
    this.insecure = !!opts.insecure;
    this.signal = opts.signal;
  }

  private plainAllowed(host: string): boolean {
    return this.insecure || isLoopback(host);
  }

  /** One request; redirects followed by hand, Authorization only to the registry's origin. */
  private async send(
    url: URL,
    headers: Record<string, string>,
    auth: string | undefined,
    show: string,
  ): Promise<Fetched> {
    const origin = url.origin;
    for (let hop = 0; ; hop++) {
      const h: Record<string, string> = { "user-agent": `mincs/${VERSION}`, ...headers };
      if (auth && url.origin === origin) h.authorization = auth;
      shown(curl(url, h, show));
      let res: Response;
      try {
        res = await fetch(url, { headers: h, redirect: "manual", signal: this.signal });
      } catch (e) {
        throw netError(e, url);
      }
      const location = res.headers.get("location");
      if (res.status >= 300 && res.status < 400 && location) {
        await drain(res);
        if (hop >= 10) throw failure(`too many redirects from ${origin}`);
        const next = new URL(location, url);
        if (next.protocol !== "https:" && next.protocol !== "http:")
          throw failure(`redirected to ${next.protocol} URL`);
        if (next.origin !== url.origin) {
          step(
            `Redirected to ${next.origin}: ${next.origin === origin ? "back to the registry" : "another host, sent no credentials"}`,
          );
        }
        url = next;
        continue;
      }
      return { res, url };
    }
  }

  /** Find the registry (HTTPS, or HTTP on the loopback or when insecure) and learn how it wants to be asked. */
  async connect(): Promise<void> {
    const host = this.ref.endpoint;
    const schemes = schemesFor(host, this.insecure);
    let res: Response | undefined;
    let firstError: unknown;
    for (const scheme of schemes) {
      const url = new URL(`${scheme}://${host}/v2/`);
      try {
        ({ res } = await this.send(url, {}, undefined, ""));
        this.base = url.origin;
        break;
      } catch (e) {
        if (e instanceof Error && e.name === "AbortError") throw e;
        firstError ??= e;
        if (scheme === "https" && schemes.length > 1)
          step(`No HTTPS at ${host}; ${this.insecure ? "MINC_PULL_INSECURE allows" : "on the loopback"} plain HTTP`);
      }
    }
    if (!res) throw firstError;
    if (res.status === 200) {
      await drain(res);
      step(`${host} asks for no authentication`);
      return;
    }
    if (res.status !== 401) {
      const why = await errorText(res);
      if (res.status === 404) throw failure(`${host} is not a registry (no /v2/ API: ${why})`);
      throw failure(`${host} answered ${why}`);
    }
    await drain(res);
    await this.authenticate(res.headers.get("www-authenticate") ?? "", false);
  }

  /** Act on a 401's challenge: get a bearer token or set up basic auth. */
  private async authenticate(header: string, again: boolean): Promise<void> {
    const host = this.ref.domain;
    const challenges = parseChallenges(header);
    const bearer = challenges.find((c) => c.scheme === "bearer" && c.params.realm);
    const basic = challenges.find((c) => c.scheme === "basic");
    if (bearer) {
      await this.fetchToken(bearer);
      return;
    }
    if (basic) {
      if (!this.credentials) {
        throw failure(
          `${host} wants a user name and password (set MINC_PULL_USER=user:password, or log in to it in ~/.docker/config.json)`,
        );
      }
      if (again || this.basic)
        throw failure(
          `authentication failed for ${host} (user ${this.credentials.user} from ${this.credentials.source})`,
        );
      step(
        `${host} asks for basic authentication: send ${this.credentials.user}'s password (from ${this.credentials.source}) to it, and only to it`,
      );
      this.basic = true;
      this.authorization = `Basic ${Buffer.from(`${this.credentials.user}:${this.credentials.password}`).toString("base64")}`;
      // Check the password now, for a clear error before anything else.
      const { res } = await this.send(new URL(`${this.base}/v2/`), {}, this.authorization, "");
      await drain(res);
      if (res.status === 401)
        throw failure(
          `authentication failed for ${host} (user ${this.credentials.user} from ${this.credentials.source})`,
        );
      return;
    }
    throw failure(
      `${host} asks for authentication this client does not know: ${header || "(no WWW-Authenticate header)"}`,
    );
  }

  /** A bearer token for pulling this repository from the challenge's realm. */
  private async fetchToken(challenge: Challenge): Promise<void> {
    const host = this.ref.domain;
    let realm: URL;
    try {
      realm = new URL(challenge.params.realm);
    } catch {
      throw failure(`${host} names a bad token realm ${JSON.stringify(challenge.params.realm)}`);
    }
    if (realm.protocol !== "https:" && realm.protocol !== "http:")
      throw failure(`${host} names a token realm that is not HTTP: ${realm}`);
    const scope = `repository:${this.ref.repository}:pull`;
    const scopes = [scope];
    if (challenge.params.scope && !challenge.params.scope.split(" ").every((s) => s === scope)) {
      for (const s of challenge.params.scope.split(" ")) if (s && !scopes.includes(s)) scopes.push(s);
    }
    if (challenge.params.service) realm.searchParams.set("service", challenge.params.service);
    for (const s of scopes) realm.searchParams.append("scope", s);
    const creds = this.credentials;
    let auth: string | undefined;
    if (creds) {
      if (realm.protocol === "http:" && !this.plainAllowed(realm.hostname)) {
        throw failure(
          `refusing to send the password for ${host} to ${realm.origin} over plain HTTP (MINC_PULL_INSECURE=1 allows it)`,
        );
      }
      realm.searchParams.set("account", creds.user);
      auth = `Basic ${Buffer.from(`${creds.user}:${creds.password}`).toString("base64")}`;
      step(`${host} wants a bearer token: ask ${realm.origin} for one as ${creds.user} (from ${creds.source})`);
    } else {
      step(`${host} wants a bearer token: ask ${realm.origin} for an anonymous one`);
    }
    const { res } = await this.send(realm, { accept: "application/json" }, auth, "token");
    if (res.status === 401 || res.status === 403) {
      const why = await errorText(res);
      if (creds) throw failure(`authentication failed for ${host} (user ${creds.user} from ${creds.source}: ${why})`);
      throw failure(`${host} refuses anonymous access (${why}); set MINC_PULL_USER=user:password`);
    }
    if (res.status !== 200)
      throw failure(`the token server ${realm.origin} of ${host} answered ${await errorText(res)}`);
    let body: { token?: string; access_token?: string };
    try {
      body = JSON.parse((await readLimited(res, 1 << 20, "the token answer")).toString("utf8"));
    } catch (e) {
      if (e instanceof MincError) throw e;
      throw failure(`the token server ${realm.origin} of ${host} answered no JSON`);
    }
    const token = body.token || body.access_token;
    if (typeof token !== "string" || !token) throw failure(`the token server ${realm.origin} of ${host} gave no token`);
    this.authorization = `Bearer ${token}`;
  }

  /**
   * GET a path of this repository with the registry's auth. A 401 gets one
   * more try: with a new bearer token (the first one expired, or the
   * registry's /v2/ asked for none), or with basic auth set up.
   */
  private async get(path: string, headers: Record<string, string>, show: string): Promise<Fetched> {
    if (!this.base) await this.connect();
    const url = new URL(`${this.base}/v2/${this.ref.repository}/${path}`);
    const f = await this.send(url, headers, this.authorization, show);
    if (f.res.status !== 401 || f.url.origin !== this.base) return f;
    const header = f.res.headers.get("www-authenticate") ?? "";
    await drain(f.res);
    const bearer = parseChallenges(header).find((c) => c.scheme === "bearer" && c.params.realm);
    if (bearer && !(this.authorization && bearer.params.error === "insufficient_scope")) {
      await this.fetchToken(bearer);
    } else if (!bearer && !this.authorization) {
      await this.authenticate(header, false);
    } else {
      throw this.denied();
    }
    const again = await this.send(url, headers, this.authorization, show);
    if (again.res.status === 401 && again.url.origin === this.base) {
      await drain(again.res);
      throw this.denied();
    }
    return again;
  }

  private denied(): MincError {
    const host = this.ref.domain;
    if (this.basic && this.credentials)
      return failure(
        `authentication failed for ${host} (user ${this.credentials.user} from ${this.credentials.source})`,
      );
    if (this.credentials)
      return failure(
        `${host} denies ${this.credentials.user} access to ${this.ref.repository} (no such repository, or no pull right)`,
      );
    return failure(
      `${host} denies anonymous access to ${this.ref.repository} (no such repository, or it needs credentials: set MINC_PULL_USER=user:password)`,
    );
  }

  /** A manifest or index by tag or digest, as served (bytes), with its digest checked. */
  async manifest(
    reference: string,
    expected?: Descriptor,
  ): Promise<{ bytes: Buffer; digest: string; contentType: string | null }> {
    const what = `${this.ref.domain}/${this.ref.repository}${reference.startsWith("sha256:") ? "@" : ":"}${reference}`;
    const { res } = await this.get(`manifests/${reference}`, { accept: MANIFEST_ACCEPT }, "");
    if (res.status === 404) {
      const why = await errorText(res);
      throw failure(`${what}: not found (${why})`);
    }
    if (res.status !== 200) throw failure(`${what}: the registry answered ${await errorText(res)}`);
    const bytes = await readLimited(res, MANIFEST_MAX, `the manifest of ${what}`);
    const digest = `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
    if (reference.startsWith("sha256:") && digest !== reference) {
      throw failure(`${what}: the registry served a manifest whose digest is ${digest}`);
    }
    if (expected && bytes.length !== expected.size) {
      throw failure(`${what}: the registry served ${bytes.length} bytes, the index says ${expected.size}`);
    }
    const said = res.headers.get("docker-content-digest");
    if (said && SHA256.test(said) && said !== digest) {
      throw failure(`${what}: the registry says the digest is ${said}, but what it served is ${digest}`);
    }
    return { bytes, digest, contentType: res.headers.get("content-type") };
  }

  /** GET a blob (redirects followed); the answer's body is the blob. */
  async blob(d: Descriptor, file: string): Promise<Response> {
    // identity: a blob is stored compressed already, and must arrive byte for byte.
    const { res } = await this.get(`blobs/${d.digest}`, { "accept-encoding": "identity" }, file);
    if (res.status === 200) return res;
    const why = await errorText(res);
    const e = failure(`blob ${d.digest} of ${this.ref.domain}/${this.ref.repository}: ${why}`);
    (e as MincError & { retry?: boolean }).retry = res.status >= 500 || res.status === 429;
    throw e;
  }
}

/** The curl line that does the same as a request, without its secrets. */
function curl(url: URL, headers: Record<string, string>, show: string): string {
  const words = ["curl", "-fsS"];
  for (const [k, v] of Object.entries(headers)) {
    if (k === "user-agent") continue;
    if (k === "authorization") {
      words.push(v.startsWith("Bearer ") ? `-H "Authorization: Bearer $TOKEN"` : `-u "$PULL_USER:$PULL_PASSWORD"`);
      continue;
    }
    words.push("-H", quote(`${k[0].toUpperCase()}${k.slice(1)}: ${v}`));
  }
  words.push(quote(url.href));
  if (show === "token") return `TOKEN=$(${words.join(" ")} | jq -r .token)`;
  if (show) words.push("-o", quote(show));
  return words.join(" ");
}

// ---- blobs on disk ----

/** sha256 and size of a file, or undefined when it does not exist. */
export async function hashFile(path: string): Promise<{ digest: string; size: number } | undefined> {
  const hash = createHash("sha256");
  let size = 0;
  try {
    for await (const chunk of createReadStream(path)) {
      hash.update(chunk as Buffer);
      size += (chunk as Buffer).length;
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
  return { digest: `sha256:${hash.digest("hex")}`, size };
}

/** Is the file there with exactly this descriptor's size and digest? */
export async function hasBlob(path: string, d: Descriptor): Promise<boolean> {
  const h = await hashFile(path).catch(() => undefined);
  return !!h && h.size === d.size && h.digest === d.digest;
}

/**
 * Stream a blob's body into `partial`, checking its size as it comes and its
 * sha256 at the end; then rename it to `path`. On any failure the partial
 * file is removed and nothing is at `path`.
 */
export async function saveBlob(
  res: Response,
  d: Descriptor,
  partial: string,
  path: string,
  onBytes: (n: number) => void,
  what: string,
): Promise<void> {
  const fh = await open(partial, "wx", 0o644);
  try {
    const hash = createHash("sha256");
    let size = 0;
    const declared = res.headers.get("content-length");
    if (declared !== null && Number(declared) !== d.size) {
      throw failure(`${what}: the registry sends ${declared} bytes, the manifest says ${d.size}`);
    }
    for await (const chunk of res.body ?? []) {
      size += chunk.length;
      if (size > d.size) throw failure(`${what}: the registry sends more than the ${d.size} bytes the manifest says`);
      hash.update(chunk);
      await fh.write(chunk);
      onBytes(chunk.length);
    }
    if (size !== d.size) throw failure(`${what}: got ${size} bytes, the manifest says ${d.size}`);
    const digest = `sha256:${hash.digest("hex")}`;
    if (digest !== d.digest)
      throw failure(
        `${what}: digest mismatch: the registry sent data whose sha256 is ${digest.slice(7)}, not ${d.digest.slice(7)}`,
      );
    await fh.sync();
    await fh.close();
    await rename(partial, path);
  } catch (e) {
    await fh.close().catch(() => undefined);
    await unlink(partial).catch(() => undefined);
    throw e;
  }
}

// ---- progress ----

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

interface Row {
  label: string;
  total: number;
  bytes: number;
  started?: number;
  state: "waiting" | "downloading" | "done" | "failed";
  note: string;
}

/**
 * A line per blob. On a terminal the lines are redrawn in place (bytes,
 * total, speed); otherwise each blob gets a plain line when it starts and
 * when it ends (under --debug, as # comments of the trace).
 */
export class Progress {
  private rows: Row[] = [];
  private drawn = 0;
  private timer?: NodeJS.Timeout;
  private readonly write: (s: string) => void;
  readonly tty: boolean;
  private readonly columns: () => number;
  private readonly now: () => number;

  constructor(opts: { write: (s: string) => void; tty: boolean; columns?: () => number; now?: () => number }) {
    this.write = opts.write;
    this.tty = opts.tty;
    this.columns = opts.columns ?? (() => 80);
    this.now = opts.now ?? (() => Date.now());
  }

  add(label: string, total: number): number {
    this.rows.push({ label, total, bytes: 0, state: "waiting", note: "" });
    if (this.tty) this.draw();
    return this.rows.length - 1;
  }

  private plain(row: Row, text: string): void {
    const line = `${row.label}: ${text}`;
    if (tracing()) step(line);
    else this.write(`${line}\n`);
  }

  start(i: number): void {
    const row = this.rows[i];
    row.state = "downloading";
    row.started = this.now();
    if (this.tty) {
      this.draw();
      this.timer ??= setInterval(() => this.draw(), 100).unref();
    } else {
      this.plain(row, `downloading ${formatBytes(row.total)}`);
    }
  }

  /** Back to zero for another try. */
  restart(i: number): void {
    this.rows[i].bytes = 0;
  }

  bytes(i: number, n: number): void {
    this.rows[i].bytes += n;
  }

  done(i: number, note?: string): void {
    const row = this.rows[i];
    row.state = "done";
    row.bytes = row.total;
    const secs = row.started === undefined ? 0 : (this.now() - row.started) / 1000;
    row.note =
      note ??
      `done, ${formatBytes(row.total)} in ${secs.toFixed(1)} s${secs > 0 ? ` (${formatBytes(Math.round(row.total / secs))}/s)` : ""}`;
    if (this.tty) this.draw();
    else this.plain(row, row.note);
  }

  failed(i: number, note: string): void {
    const row = this.rows[i];
    if (row.state === "done") return;
    row.state = "failed";
    row.note = note;
    if (this.tty) this.draw();
  }

  /** Stop redrawing; the last state stays on the screen. */
  finish(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.tty) this.draw();
  }

  line(row: Row): string {
    if (row.state === "done" || row.state === "failed") return `${row.label}: ${row.note}`;
    if (row.state === "waiting") return `${row.label}: waiting`;
    const secs = Math.max((this.now() - (row.started ?? this.now())) / 1000, 0.001);
    const width = 20;
    const filled = row.total ? Math.min(width, Math.floor((row.bytes / row.total) * width)) : 0;
    const bar = `[${"=".repeat(filled)}${filled < width ? ">" : ""}${" ".repeat(Math.max(0, width - filled - 1))}]`;
    return `${row.label}: ${bar} ${formatBytes(row.bytes)} / ${formatBytes(row.total)}  ${formatBytes(Math.round(row.bytes / secs))}/s`;
  }

  private draw(): void {
    const width = Math.max(20, this.columns() - 1);
    let out = this.drawn ? `\x1b[${this.drawn}A` : "";
    for (const row of this.rows) out += `\r\x1b[2K${this.line(row).slice(0, width)}\n`;
    this.drawn = this.rows.length;
    this.write(out);
  }
}
