// minc-smuggler REF DESTDIR: download one image from a registry into
// DESTDIR as an OCI image layout (oci-layout, index.json, blobs/sha256/...),
// for `marten pull` to import.
//
// The reference is checked before anything goes to the network; the
// manifest is asked for in all four formats, an index is narrowed to the
// platform of MINC_ARCH (or the host), and every blob is checked for its
// size and sha256 while it streams to disk. A failed or interrupted pull
// removes everything it wrote into DESTDIR. The manifest's digest is the only
// thing printed on stdout.
//
// Settings, from the environment like every backend:
//   MINC_ARCH            the platform to pick from an index (default: the host's)
//   MINC_PULL_USER       user:password (else ~/.docker/config.json "auths", else anonymous)
//   MINC_PULL_INSECURE=1 allow plain HTTP to a registry not on the loopback
//   MINC_PULL_CACHE=DIR  blobs already in DIR/blobs/sha256 are not downloaded again; new ones are added
//   MINC_PULL_HAVE=DIR   layers whose ChainID names a directory in DIR (an image store's images/,
//                        as marten passes) are in the store already: they are not downloaded
//   MINC_PULL_UNPACK=1   unpack each layer into DESTDIR/unpacked/HEX/ as soon as it is here, while
//                        the others download (marten pull; minc-farm's import takes them)
//   MINC_DEBUG=1         the trace: each step, each request as the curl line that does the same
import {
  createReadStream,
  readdirSync,
  readFileSync,
  renameSync,
  rmdirSync,
  statSync,
  type Stats,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { copyFile, link, mkdir, rename } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { MincError, usageError, warn } from "../lib/core/fail.ts";
import { chainId } from "../lib/store/farm.ts";
import { unpackedDir, unpackLayer } from "../lib/store/layer.ts";
import { formatReference, parseReference, type Reference } from "../lib/store/reference.ts";
import {
  Progress,
  RegistryClient,
  checkImage,
  dockerConfigCredentials,
  formatBytes,
  formatPlatform,
  hasBlob,
  hostPlatform,
  parseArch,
  parseManifest,
  parseUserSpec,
  pickPlatform,
  saveBlob,
  OCI_INDEX,
  type Credentials,
  type Descriptor,
  type Platform,
} from "../lib/store/registry.ts";
import { pool } from "../lib/core/pool.ts";
import { mkdirs, removeTree, writeFile } from "../lib/core/run.ts";
import { readSettings, type Settings as MincSettings } from "../lib/core/settings.ts";
import { progname, quote, shown, step, tracing } from "../lib/core/trace.ts";

const USAGE = "usage: minc-smuggler [REGISTRY/]NAME[:TAG][@sha256:DIGEST] DESTDIR";
/** Layers downloaded at the same time. */
const PARALLEL = 3;
/** Attempts per blob when the connection breaks or the registry answers 5xx. */
const ATTEMPTS = 3;
/** An image config is a small JSON document. */
const CONFIG_MAX = 16 << 20;
const REF_NAME = "org.opencontainers.image.ref.name";
/** The MINC_* settings of this run (listed at the top), from the environment main() is given. */
let given: MincSettings;

interface Settings {
  ref: Reference;
  dest: string;
  want: Platform;
  /** MINC_ARCH named a variant (arm/v6), so no older one will do. */
  variantGiven: boolean;
  credentials?: Credentials;
  insecure: boolean;
  cache?: string;
}

// ---- settings: all checked before any I/O ----

function checkDest(dest: string): void {
  let st: Stats;
  try {
    st = statSync(dest);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
    throw usageError(`${dest}: ${(e as Error).message}`);
  }
  if (!st.isDirectory()) throw usageError(`${dest}: not a directory`);
  const extra = readdirSync(dest).filter(
    (n) => n !== "oci-layout" && n !== "index.json" && n !== "blobs" && n !== "unpacked",
  );
  if (extra.length)
    throw usageError(
      `${dest} is neither empty nor an OCI image layout (it has ${extra.slice(0, 3).join(", ")}${extra.length > 3 ? ", ..." : ""})`,
    );
}

function settings(args: string[]): Settings {
  if (args.length !== 2) throw usageError(USAGE);
  const [refArg, destArg] = args;
  if (refArg.startsWith("-") || destArg.startsWith("-"))
    throw usageError(`unknown option ${refArg.startsWith("-") ? refArg : destArg}; ${USAGE}`);
  const ref = parseReference(refArg);
  if (destArg === "") throw usageError(`empty DESTDIR; ${USAGE}`);
  const dest = resolve(destArg);
  checkDest(dest);
  const archSpec = given.MINC_ARCH.trim();
  const want = archSpec ? parseArch(archSpec) : hostPlatform();
  const variantGiven = !!archSpec && archSpec.replace(/^linux\//i, "").includes("/");
  const insecure = given.MINC_PULL_INSECURE;
  const credentials = given.MINC_PULL_USER ? parseUserSpec(given.MINC_PULL_USER) : dockerConfigCredentials(ref.domain);
  let cache: string | undefined;
  if (given.MINC_PULL_CACHE) {
    cache = resolve(given.MINC_PULL_CACHE);
    try {
      if (!statSync(cache).isDirectory()) throw usageError(`MINC_PULL_CACHE=${cache}: not a directory`);
    } catch (e) {
      if (e instanceof MincError) throw e;
      if ((e as NodeJS.ErrnoException).code !== "ENOENT")
        throw usageError(`MINC_PULL_CACHE=${cache}: ${(e as Error).message}`);
    }
  }
  return { ref, dest, want, variantGiven, credentials, insecure, cache };
}

// ---- what this run wrote, to take back on failure ----

class Written {
  private files: string[] = [];
  private dirs: string[] = [];

  file(path: string): void {
    this.files.push(path);
  }

  /** Make dir and its missing parents, remembering which were made here. */
  mkdirs(dir: string): void {
    const missing: string[] = [];
    for (let d = dir; ; d = dirname(d)) {
      try {
        statSync(d);
        break;
      } catch {
        missing.unshift(d);
      }
      if (dirname(d) === d) break;
    }
    if (!missing.length) return;
    mkdirs(dir);
    this.dirs.push(...missing);
  }

  private trees: string[] = [];

  /** A directory filled here (an unpacked layer): removed whole. */
  tree(dir: string): void {
    this.trees.push(dir);
  }

  /** Remove every file written and every directory made, newest first. */
  undo(): void {
    const files = this.files.splice(0);
    const dirs = this.dirs.splice(0);
    const trees = this.trees.splice(0);
    if (files.length || dirs.length || trees.length) step("The pull failed: remove what it wrote");
    for (const t of trees) removeTree(t);
    for (const f of files.reverse()) {
      shown(`rm -f ${quote(f)}`);
      try {
        unlinkSync(f);
      } catch {
        // already gone
      }
    }
    for (const d of dirs.reverse()) {
      shown(`rmdir ${quote(d)}`);
      try {
        rmdirSync(d);
      } catch {
        // not empty: something else is in it
      }
    }
  }
}

function blobPath(root: string, digest: string): string {
  return join(root, "blobs", "sha256", digest.slice("sha256:".length));
}

function isAbort(e: unknown): boolean {
  return e instanceof Error && e.name === "AbortError";
}

/** A broken connection or a 5xx: worth another try. A bad digest or a full disk is not. */
function retryable(e: unknown): boolean {
  if (e instanceof MincError) return !!(e as MincError & { retry?: boolean }).retry || /^cannot reach /.test(e.message);
  // fetch's network errors (a reset, a body cut short) are TypeErrors.
  return e instanceof TypeError;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener(
      "abort",
      () => {
        clearTimeout(t);
        reject(signal.reason);
      },
      { once: true },
    );
  });
}

// ---- the pull ----

class Pull {
  readonly s: Settings;
  readonly written = new Written();
  readonly controller = new AbortController();
  readonly progress = new Progress({
    write: (text) => process.stderr.write(text),
    tty: !!process.stderr.isTTY && !tracing(),
    columns: () => process.stderr.columns || 80,
  });
  readonly client: RegistryClient;

  constructor(s: Settings) {
    this.s = s;
    this.client = new RegistryClient(s.ref, {
      credentials: s.credentials,
      insecure: s.insecure,
      signal: this.controller.signal,
    });
  }

  /** Write a small blob we hold in memory (the manifest), byte for byte. */
  private async putBytes(d: { digest: string; size: number; mediaType: string }, bytes: Buffer): Promise<void> {
    const path = blobPath(this.s.dest, d.digest);
    if (await hasBlob(path, d)) return;
    const partial = `${path}.partial-${process.pid}`;
    shown(`printf '%s' ${quote(bytes.toString("utf8"))} > ${quote(path)}`);
    this.written.file(partial);
    writeFileSync(partial, bytes);
    renameSync(partial, path);
    this.written.file(path);
  }

  /** Put the blob at path by hard link (or copy) from another file, checked already. */
  private async linkFrom(from: string, path: string): Promise<void> {
    const partial = `${path}.partial-${process.pid}`;
    this.written.file(partial);
    try {
      shown(`ln ${quote(from)} ${quote(partial)}`);
      await link(from, partial);
    } catch {
      shown(`cp ${quote(from)} ${quote(partial)}`);
      await copyFile(from, partial);
    }
    shown(`mv ${quote(partial)} ${quote(path)}`);
    await rename(partial, path);
    this.written.file(path);
  }

  /** Keep a downloaded blob in MINC_PULL_CACHE too; a cache that cannot take it is only a warning. */
  private async toCache(path: string, d: Descriptor): Promise<void> {
    if (!this.s.cache) return;
    const cached = blobPath(this.s.cache, d.digest);
    try {
      if (await hasBlob(cached, d)) return;
      await mkdir(dirname(cached), { recursive: true });
      const tmp = `${cached}.partial-${process.pid}`;
      shown(`ln ${quote(path)} ${quote(cached)}`);
      try {
        await link(path, tmp);
      } catch {
        await copyFile(path, tmp);
      }
      await rename(tmp, cached);
    } catch (e) {
      warn(`could not keep ${d.digest} in the cache ${this.s.cache}: ${(e as Error).message}`);
    }
  }

  /** Layers being unpacked while others download (MINC_PULL_UNPACK), each ending with its error, if any. */
  private readonly unpacking: Promise<Error | undefined>[] = [];

  /**
   * MINC_PULL_UNPACK=1 (marten pull): unpack a layer into unpacked/HEX/ as
   * soon as it is here, while the others still download, so that the
   * import need not read it again (it still checks its digests).
   */
  private unpackEarly(d: Descriptor, label: string): void {
    if (!given.MINC_PULL_UNPACK) return;
    const dir = unpackedDir(this.s.dest, `blobs/sha256/${d.digest.slice(7)}`)!;
    step(`${label}: unpack it into ${dir} while the others download`);
    this.written.mkdirs(dir); // (unpacked/ too: a failed pull leaves no DESTDIR/unpacked)
    this.written.tree(dir);
    // Its sha256 was checked as it downloaded; only the unpacked content's (the DiffID) is new.
    // The pull's signal stops it when the pull fails or is interrupted.
    const blob = createReadStream(blobPath(this.s.dest, d.digest), {
      highWaterMark: 1 << 20,
      signal: this.controller.signal,
    });
    const done = unpackLayer(blob, `${dir}/root`, { digest: d.digest }).then((r) => {
      writeFileSync(`${dir}/result.json`, `${JSON.stringify(r)}\n`);
    });
    this.unpacking.push(
      done.then(
        () => undefined,
        (e: Error) => e,
      ),
    );
  }

  /** Every early unpack ended; the first failure, if any, is the pull's. */
  private async unpacked(): Promise<void> {
    const failed = (await Promise.all(this.unpacking)).find((e) => e !== undefined);
    if (failed) throw new MincError(`unpacking a layer failed: ${failed.message}`);
  }

  /**
   * The pull failed: what still runs (an early unpack, writing into a
   * directory that undo() is about to remove) is stopped, and has ended
   * when this returns.
   */
  async stop(): Promise<void> {
    this.controller.abort();
    await Promise.all(this.unpacking);
  }

  /** One blob into DESTDIR: already there, from the cache, or downloaded and checked. */
  private async blob(d: Descriptor, row: number, label: string): Promise<void> {
    const path = blobPath(this.s.dest, d.digest);
    if (await hasBlob(path, d)) {
      this.progress.done(row, "already here");
      return;
    }
    if (this.s.cache) {
      const cached = blobPath(this.s.cache, d.digest);
      if (await hasBlob(cached, d)) {
        step(`${label}: in the cache ${this.s.cache} already`);
        await this.linkFrom(cached, path);
        this.progress.done(row, "from the cache");
        return;
      }
    }
    const partial = `${path}.partial-${process.pid}`;
    for (let attempt = 1; ; attempt++) {
      this.progress.start(row);
      try {
        const res = await this.client.blob(d, path);
        this.written.file(partial);
        await saveBlob(res, d, partial, path, (n) => this.progress.bytes(row, n), label);
        this.written.file(path);
        break;
      } catch (e) {
        if (attempt < ATTEMPTS && retryable(e)) {
          step(`${label}: ${(e as Error).message}; try again`);
          await sleep(500 * attempt, this.controller.signal);
          this.progress.restart(row);
          continue;
        }
        this.progress.failed(row, isAbort(e) ? "stopped" : "failed");
        if (e instanceof MincError || isAbort(e)) throw e;
        throw new MincError(`${label}: download failed: ${(e as Error).message}`);
      }
    }
    this.progress.done(row);
    await this.toCache(path, d);
  }

  async run(): Promise<string> {
    const { ref, dest, want } = this.s;
    const what = formatReference(ref);
    step(`Pull ${what} for ${formatPlatform(want)} from ${ref.endpoint} into the OCI image layout ${dest}`);
    await this.client.connect();

    step(
      `Ask for ${ref.digest ? "the manifest with this digest" : `the manifest tagged ${ref.tag}`}, accepting the four formats (OCI index and manifest, Docker list and schema2)`,
    );
    const top = await this.client.manifest(ref.digest ?? ref.tag!);
    let served = top;
    let manifest = parseManifest(top.bytes, top.contentType, what);
    let indexDigest: string | undefined;
    if (manifest.kind === "index") {
      step(
        `An index of ${manifest.manifests.length} manifests (${top.digest}): pick ${formatPlatform(want)}, skipping attestations`,
      );
      const entry = pickPlatform(manifest.manifests, want, what, this.s.variantGiven);
      indexDigest = top.digest;
      served = await this.client.manifest(entry.digest, entry);
      manifest = parseManifest(served.bytes, served.contentType, `${what} (${formatPlatform(entry.platform!)})`);
      if (manifest.kind === "index") throw new MincError(`${what}: an index inside an index is not supported`);
    }
    checkImage(manifest, what);
    const config = manifest.config;
    if (config.size > CONFIG_MAX)
      throw new MincError(`${what}: the image config is ${formatBytes(config.size)}, too large`);

    step(`Make the layout's blob directory`);
    this.written.mkdirs(join(dest, "blobs", "sha256"));
    removeStale(join(dest, "blobs", "sha256"));
    step(`Keep the manifest ${served.digest} as served, byte for byte`);
    await this.putBytes({ ...served, mediaType: manifest.mediaType, size: served.bytes.length }, served.bytes);

    // Each blob once, the config first; then the layers, a few at a time.
    const seen = new Set<string>([config.digest]);
    const layers = manifest.layers.filter((l) => !seen.has(l.digest) && seen.add(l.digest));
    const short = (d: Descriptor) => d.digest.slice(0, 19);
    const configRow = this.progress.add(`config ${short(config)}`, config.size);
    step(`Download the config, check its size and sha256`);
    await this.blob(config, configRow, `the config ${config.digest}`);
    const image = this.readConfig(config, manifest.layers.length, what);
    const have = storeHas(image.diffIds, manifest.layers);
    if (have.size)
      step(`${have.size} of the layers are in the image store already (${given.MINC_PULL_HAVE}): not downloaded`);
    const wanted = layers.filter((l) => !have.has(l.digest));
    const rows = wanted.map((l) =>
      this.progress.add(`layer ${manifest.layers.indexOf(l) + 1}/${manifest.layers.length} ${short(l)}`, l.size),
    );
    if (wanted.length)
      step(`Download the layers, ${PARALLEL} at a time, each checked for its size and sha256 as it comes`);
    await pool(
      wanted.map((l, i) => [l, i] as const),
      PARALLEL,
      this.controller,
      async ([l, i]) => {
        await this.blob(l, rows[i], `layer ${l.digest}`);
        this.unpackEarly(l, `layer ${l.digest}`);
      },
    );
    this.progress.finish();
    await this.unpacked();

    step("Write the layout's oci-layout and index.json (one manifest, named by its tag)");
    const layoutFile = join(dest, "oci-layout");
    if (!existsFile(layoutFile)) {
      writeFile(layoutFile, `${JSON.stringify({ imageLayoutVersion: "1.0.0" })}\n`);
      this.written.file(layoutFile);
    }
    const annotations: Record<string, string> = {};
    if (ref.tag) annotations[REF_NAME] = ref.tag;
    annotations["io.mincs.ref"] = what;
    if (indexDigest) annotations["io.mincs.index"] = indexDigest;
    const platform = {
      architecture: image.architecture,
      os: image.os,
      ...(image.variant ? { variant: image.variant } : {}),
    };
    const index = {
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [
        {
          mediaType: manifest.mediaType,
          digest: served.digest,
          size: served.bytes.length,
          ...(platform.architecture ? { platform } : {}),
          annotations,
        },
      ],
    };
    const indexFile = join(dest, "index.json");
    const tmp = `${indexFile}.partial-${process.pid}`;
    this.written.file(tmp);
    writeFile(tmp, `${JSON.stringify(index)}\n`);
    shown(`mv ${quote(tmp)} ${quote(indexFile)}`);
    renameSync(tmp, indexFile);
    return served.digest;
  }

  /** The config must be an image config with one diff_id per layer. */
  private readConfig(
    d: Descriptor,
    layers: number,
    what: string,
  ): { architecture: string; os: string; variant?: string; diffIds: string[] } {
    let config: { architecture?: unknown; os?: unknown; variant?: unknown; rootfs?: { diff_ids?: unknown } };
    try {
      config = JSON.parse(readFileSync(blobPath(this.s.dest, d.digest), "utf8"));
    } catch {
      throw new MincError(`${what}: the image config is not JSON`);
    }
    const diffIds = config?.rootfs?.diff_ids;
    if (!Array.isArray(diffIds) || diffIds.length !== layers) {
      throw new MincError(
        `${what}: the config lists ${Array.isArray(diffIds) ? diffIds.length : "no"} diff_ids for ${layers} layers`,
      );
    }
    const p = {
      architecture: String(config.architecture ?? ""),
      os: String(config.os ?? ""),
      ...(config.variant ? { variant: String(config.variant) } : {}),
    };
    if (p.architecture && (p.architecture !== this.s.want.architecture || p.os !== this.s.want.os)) {
      warn(`${what} is an image for ${formatPlatform(p)}, not ${formatPlatform(this.s.want)}`);
    }
    return { ...p, diffIds: diffIds.map(String) };
  }
}

/** The digests of the layers an image store (MINC_PULL_HAVE) has already, known by their ChainIDs. */
function storeHas(diffIds: string[], layers: readonly Descriptor[]): Set<string> {
  const have = new Set<string>();
  const dir = given.MINC_PULL_HAVE;
  if (!dir) return have;
  let chain: string | undefined;
  diffIds.forEach((diffId, i) => {
    chain = chainId(chain, diffId);
    if (existsFile(join(dir, chain, "root"))) have.add(layers[i].digest);
  });
  return have;
}

/** Partial files of an earlier pull that was killed (SIGKILL: no chance to clean up). */
function removeStale(dir: string): void {
  for (const name of readdirSync(dir)) {
    const m = /\.partial-(\d+)$/.exec(name);
    if (!m || Number(m[1]) === process.pid) continue;
    try {
      process.kill(Number(m[1]), 0);
      continue; // that pull still runs
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "EPERM") continue;
    }
    step("Remove what a killed pull left");
    shown(`rm -f ${quote(join(dir, name))}`);
    try {
      unlinkSync(join(dir, name));
    } catch {
      // gone already
    }
  }
}

function existsFile(path: string): boolean {
  try {
    statSync(path);
    return true;
  } catch {
    return false;
  }
}

const SIGNALS: [NodeJS.Signals, number][] = [
  ["SIGINT", 2],
  ["SIGTERM", 15],
  ["SIGHUP", 1],
];

export function main(args: string[], env: NodeJS.ProcessEnv): number | Promise<number> {
  given = readSettings(env);
  if (args.length === 1 && (args[0] === "-h" || args[0] === "--help")) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  const s = settings(args);
  const pull = new Pull(s);
  let interrupted: [NodeJS.Signals, number] | undefined;
  for (const [sig, n] of SIGNALS) {
    process.on(sig, () => {
      if (interrupted) return;
      interrupted = [sig, n];
      pull.controller.abort();
    });
  }
  return pull.run().then(
    (digest) => {
      process.stdout.write(`${digest}\n`);
      return 0;
    },
    async (e: unknown) => {
      await pull.stop();
      pull.progress.finish();
      pull.written.undo();
      let message: string;
      let status: number;
      if (interrupted) {
        message = `interrupted by ${interrupted[0]}; nothing kept`;
        status = 128 + interrupted[1];
      } else if (e instanceof MincError) {
        message = e.message;
        status = e.status;
      } else {
        message = `internal error: ${e instanceof Error ? e.stack : String(e)}`;
        status = 1;
      }
      process.stderr.write(`${progname()}: ${message}\n`);
      return status;
    },
  );
}
