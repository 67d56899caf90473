// Image archives: `docker save` (the old format with repositories and
// <id>/json + <id>/layer.tar, and the current one with manifest.json) and
// OCI image layouts (oci-layout, index.json, blobs/sha256/...), each as a
// tar (plain, gzip or zstd) or as a directory. An image is imported layer
// by layer, each under its OCI ChainID, bottom first, with its config on the
// top layer; blob digests and sizes (OCI descriptors) and DiffIDs (the
// config's rootfs.diff_ids) are verified before anything enters the store.
import { createReadStream } from "node:fs";
import * as fs from "node:fs";
import { createHash } from "node:crypto";
import { posix } from "node:path";
import { MincError, usageError, warn } from "../core/fail.ts";
import { chainId, type StagedLayer, type Store } from "./farm.ts";
import {
  decompress,
  digestLayer,
  entryText,
  normalizeDigest,
  StreamDigests,
  unpackedDir,
  unpackLayer,
  walkTar,
  type UnpackResult,
} from "./layer.ts";
import { pool } from "../core/pool.ts";
import { resolveInRoot } from "../boot/paths.ts";
import { removeTree, run } from "../core/run.ts";
import { signalsDelivered } from "../core/signals.ts";
import { quote, shown, step } from "../core/trace.ts";
import { wantedPlatform } from "./platform.ts";
import { nameFromReference } from "./reference.ts";
import { checkShape, type Shape } from "./shape.ts";

// ---- where the files of an archive come from ----

/** The files of an archive or of an image directory, by their path inside it. */
export interface Source {
  readonly label: string;
  /** The path a name stands for (symlinks and hardlinks followed), or undefined if it is not a file there. */
  canonical(name: string): string | undefined;
  /** A small file (JSON). */
  read(name: string): Buffer;
  /** The given files (canonical names), each streamed once to each(), in the source's own order. */
  stream(names: readonly string[], each: (name: string, data: AsyncIterable<Buffer>) => Promise<void>): Promise<void>;
  /** A layout directory only: the blob name as minc-smuggler unpacked it, moved to dest, and what unpacking it gave. */
  takeUnpacked?(name: string, dest: string): UnpackResult | undefined;
}

/** An archive path: no leading "/" or "./", ".." resolved; undefined if it climbs out. */
export function archiveName(name: string, dir = ""): string | undefined {
  const joined = name.startsWith("/") ? name : `${dir}/${name}`;
  const parts: string[] = [];
  for (const p of joined.split("/")) {
    if (p === "" || p === ".") continue;
    if (p === "..") {
      if (parts.length === 0) return undefined;
      parts.pop();
    } else parts.push(p);
  }
  return parts.length ? parts.join("/") : undefined;
}

class DirSource implements Source {
  readonly label: string;
  private readonly root: string;

  constructor(root: string) {
    this.root = root;
    this.label = root;
  }

  canonical(name: string): string | undefined {
    const n = archiveName(name);
    if (n === undefined) return undefined;
    try {
      return fs.statSync(resolveInRoot(this.root, n)).isFile() ? n : undefined;
    } catch {
      return undefined;
    }
  }

  read(name: string): Buffer {
    const n = this.canonical(name);
    if (n === undefined) throw new MincError(`${this.label}: no file ${name}`);
    return fs.readFileSync(resolveInRoot(this.root, n));
  }

  /** Files of a directory can be read at once: a few layers unpack side by side (zlib works on other threads). */
  async stream(
    names: readonly string[],
    each: (name: string, data: AsyncIterable<Buffer>) => Promise<void>,
  ): Promise<void> {
    await pool(names, UNPACK_PARALLEL, new AbortController(), async (n) => {
      const s = createReadStream(resolveInRoot(this.root, n));
      try {
        await each(n, s);
      } finally {
        s.destroy();
      }
    });
  }

  takeUnpacked(name: string, dest: string): UnpackResult | undefined {
    const dir = unpackedDir(this.root, name);
    if (dir === undefined || !fs.existsSync(`${dir}/result.json`)) return undefined;
    const result = JSON.parse(fs.readFileSync(`${dir}/result.json`, "utf8")) as UnpackResult;
    shown(`mv ${quote(`${dir}/root`)} ${quote(dest)}`);
    fs.mkdirSync(posix.dirname(dest), { recursive: true });
    fs.renameSync(`${dir}/root`, dest);
    return result;
  }
}

/** Layers of a directory source unpacked at the same time. */
const UNPACK_PARALLEL = 3;

interface TarRecord {
  ordinal: number;
  type: "file" | "symlink" | "link" | "other";
  size: number;
  link?: string;
  data?: Buffer;
}

/** Files up to this size are kept from the first reading (manifests, configs, small layers). */
const SMALL = 4 << 20;
const SMALL_TOTAL = 256 << 20;

class TarSource implements Source {
  readonly label: string;
  private readonly file: string;
  private readonly records = new Map<string, TarRecord>();

  private constructor(file: string) {
    this.file = file;
    this.label = file;
  }

  /** First reading: which files the archive has, and the small ones' contents. */
  static async open(file: string): Promise<TarSource> {
    const src = new TarSource(file);
    let ordinal = 0;
    let kept = 0;
    const d = new StreamDigests();
    try {
      await walkTar(decompress(createReadStream(file), "auto", d), async (entry) => {
        const h = entry.header;
        const n = archiveName(entryText(entry, "name"));
        const here = ordinal++;
        if (n === undefined) return;
        const rec: TarRecord = { ordinal: here, type: "other", size: h.size ?? 0 };
        if (h.type === "file" || h.type === "contiguous-file") {
          rec.type = "file";
          if (rec.size <= SMALL && kept + rec.size <= SMALL_TOTAL) {
            const chunks: Buffer[] = [];
            for await (const c of entry) chunks.push(c as Buffer);
            rec.data = Buffer.concat(chunks);
            kept += rec.size;
          }
        } else if (h.type === "symlink") {
          rec.type = "symlink";
          rec.link = archiveName(entryText(entry, "linkname"), posix.dirname(n));
        } else if (h.type === "link") {
          rec.type = "link";
          rec.link = archiveName(entryText(entry, "linkname"));
        }
        src.records.set(n, rec);
      });
    } catch (e) {
      throw new MincError(`${file}: ${(e as Error).message}`);
    }
    return src;
  }

  canonical(name: string): string | undefined {
    let n = archiveName(name);
    for (let hops = 0; n !== undefined && hops < 40; hops++) {
      const r = this.records.get(n);
      if (r === undefined) return undefined;
      if (r.type === "file") return n;
      if (r.type === "other") return undefined;
      n = r.link;
    }
    return undefined;
  }

  read(name: string): Buffer {
    const n = this.canonical(name);
    if (n === undefined) throw new MincError(`${this.label}: no file ${name}`);
    const data = this.records.get(n)!.data;
    if (data === undefined) throw new MincError(`${this.label}: ${name} is too large to be metadata`);
    return data;
  }

  /** Second reading: stream the wanted files as they come. */
  async stream(
    names: readonly string[],
    each: (name: string, data: AsyncIterable<Buffer>) => Promise<void>,
  ): Promise<void> {
    const wanted = new Map<number, string>();
    for (const n of names) {
      const r = this.records.get(n);
      if (r === undefined || r.type !== "file") throw new MincError(`${this.label}: no file ${n}`);
      wanted.set(r.ordinal, n);
    }
    let ordinal = 0;
    const d = new StreamDigests();
    await walkTar(decompress(createReadStream(this.file), "auto", d), async (entry) => {
      const n = wanted.get(ordinal++);
      if (n !== undefined) await each(n, entry);
    });
  }
}

export async function openSource(path: string): Promise<Source> {
  let st: fs.Stats;
  try {
    st = fs.statSync(path);
  } catch {
    throw usageError(`${path}: no such file or directory`);
  }
  if (st.isDirectory()) return new DirSource(path);
  if (!st.isFile()) throw usageError(`${path}: not a file or directory`);
  return TarSource.open(path);
}

// ---- what an archive holds ----

export interface LayerPlan {
  /** Its file in the source (canonical), or undefined when the source lacks it. */
  file: string | undefined;
  /** The name the archive gives it (for messages). */
  label: string;
  /** Digest and size of the file as stored, when the archive says them. */
  digest?: string;
  size?: number;
  /** The expected DiffID, when the config gives it. */
  diffId?: string;
}

export interface ImagePlan {
  label: string;
  /** The name its archive gives it (from its tag); one the store cannot take is left out. */
  name?: string;
  layers: LayerPlan[];
  /** The config to keep, given the layers' DiffIDs. */
  config(diffIds: readonly string[]): Buffer | undefined;
}

/** A JSON document of the archive, of the shape its readers rely on. */
function readJson<T>(buf: Buffer, shape: Shape, what: string): T {
  let value: unknown;
  try {
    value = JSON.parse(buf.toString("utf8"));
  } catch (e) {
    throw new MincError(`${what} is not valid JSON: ${(e as Error).message}`);
  }
  return checkShape<T>(value, shape, what);
}

function sha256(buf: Buffer): string {
  return `sha256:${createHash("sha256").update(buf).digest("hex")}`;
}

interface Descriptor {
  mediaType?: string;
  digest: string;
  size?: number;
  platform?: { os?: string; architecture?: string; variant?: string };
  annotations?: Record<string, string>;
}

const DESCRIPTOR: Shape = {
  "mediaType?": "string",
  digest: "string",
  "size?": "number",
  "platform?": { "os?": "string", "architecture?": "string", "variant?": "string" },
  "annotations?": { "*": "string" },
};

interface ImageConfig {
  rootfs?: { type?: string; diff_ids?: string[] | null } | null;
}

const IMAGE_CONFIG: Shape = { "rootfs?": { "diff_ids?": ["string"] } };

function checkDiffIds(config: ImageConfig, layers: number, what: string): string[] | undefined {
  const ids = config.rootfs?.diff_ids;
  if (ids === undefined || ids === null) return undefined;
  if (ids.length !== layers)
    throw new MincError(`${what}: the config lists ${ids.length} diff_ids for ${layers} layers`);
  return ids.map(normalizeDigest);
}

/** The digest a docker-save file name carries (blobs/sha256/HEX, HEX.json), if any. */
function digestInName(name: string): string | undefined {
  const m = /(?:^|\/)blobs\/sha256\/([0-9a-f]{64})$/.exec(name) ?? /(?:^|\/)([0-9a-f]{64})\.json$/.exec(name);
  return m ? `sha256:${m[1]}` : undefined;
}

function verifyBuffer(buf: Buffer, digest: string | undefined, size: number | undefined, what: string): Buffer {
  if (size !== undefined && buf.length !== size) throw new MincError(`${what}: size ${buf.length}, expected ${size}`);
  if (digest !== undefined && sha256(buf) !== normalizeDigest(digest))
    throw new MincError(`${what}: digest ${sha256(buf)}, expected ${digest}`);
  return buf;
}

const DOCKER_MANIFEST: Shape = [{ Config: "string", Layers: ["string"], "RepoTags?": ["string"] }];

/** docker save, the current format: manifest.json lists each image's config and layers. */
function dockerPlans(src: Source): ImagePlan[] {
  const manifest = readJson<{ Config: string; RepoTags?: string[] | null; Layers: string[] }[]>(
    src.read("manifest.json"),
    DOCKER_MANIFEST,
    `${src.label}: manifest.json`,
  );
  if (manifest.length === 0) throw new MincError(`${src.label}: manifest.json lists no image`);
  return manifest.map((m, n) => {
    const label = `${src.label}: image ${n + 1}`;
    const raw = verifyBuffer(src.read(m.Config), digestInName(m.Config), undefined, `${label}: config ${m.Config}`);
    const diffIds = checkDiffIds(readJson<ImageConfig>(raw, IMAGE_CONFIG, `${label}: config`), m.Layers.length, label);
    const tag = m.RepoTags?.[0];
    return {
      label,
      name: tag ? nameFromReference(tag) : undefined,
      layers: m.Layers.map((f, i) => ({
        file: src.canonical(f),
        label: f,
        digest: digestInName(f),
        diffId: diffIds?.[i],
      })),
      config: () => raw,
    };
  });
}

/** repositories: repository -> tag -> the id of its top layer. */
const LEGACY_REPOSITORIES: Shape = { "*": { "*": "string" } };
const LEGACY_LAYER: Shape = { "parent?": "string" };

/** docker save, the old format: repositories names the top layer; each <id>/json names its parent. */
function legacyPlans(src: Source): ImagePlan[] {
  const repos = readJson<Record<string, Record<string, string>>>(
    src.read("repositories"),
    LEGACY_REPOSITORIES,
    `${src.label}: repositories`,
  );
  const plans: ImagePlan[] = [];
  const seen = new Set<string>();
  for (const [repo, tags] of Object.entries(repos)) {
    for (const [tag, top] of Object.entries(tags)) {
      if (!/^[0-9a-f]{64}$/.test(top))
        throw new MincError(`${src.label}: repositories: ${repo}:${tag} has a bad id ${JSON.stringify(top)}`);
      if (seen.has(top)) continue;
      seen.add(top);
      const chain: string[] = [];
      let topJson: Record<string, unknown> = {};
      for (let id: string | undefined = top; id; ) {
        if (!/^[0-9a-f]{64}$/.test(id) || chain.includes(id))
          throw new MincError(`${src.label}: bad parent chain at ${id}`);
        const json: Record<string, unknown> = readJson<Record<string, unknown>>(
          src.read(`${id}/json`),
          LEGACY_LAYER,
          `${src.label}: ${id}/json`,
        );
        if (id === top) topJson = json;
        chain.unshift(id);
        id = typeof json.parent === "string" && json.parent ? json.parent : undefined;
      }
      plans.push({
        label: `${src.label}: ${repo}:${tag}`,
        name: nameFromReference(`${repo}:${tag}`),
        layers: chain.map((id) => ({ file: src.canonical(`${id}/layer.tar`), label: `${id}/layer.tar` })),
        config: (diffIds) =>
          Buffer.from(
            JSON.stringify({
              architecture: topJson.architecture,
              os: topJson.os,
              created: topJson.created,
              config: topJson.config ?? topJson.container_config ?? {},
              rootfs: { type: "layers", diff_ids: diffIds },
            }),
          ),
      });
    }
  }
  if (plans.length === 0) throw new MincError(`${src.label}: repositories names no image`);
  return plans;
}

const INDEX_TYPES = [
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
];
const MANIFEST_TYPES = [
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.v2+json",
];

interface IndexOrManifest {
  mediaType?: string;
  manifests?: Descriptor[];
  config?: Descriptor;
  layers?: Descriptor[];
}

function platformName(p: Descriptor["platform"]): string {
  return [p?.os ?? "?", p?.architecture ?? "?", p?.variant].filter(Boolean).join("/");
}

function isAttestation(d: Descriptor): boolean {
  return d.annotations?.["vnd.docker.reference.type"] === "attestation-manifest" || d.platform?.os === "unknown";
}

/**
 * The name an index entry gives its image: from a full reference
 * (minc-smuggler's io.mincs.ref, containerd's image name, or a ref.name
 * with a repository in it); a bare ref.name is only a tag, which names nothing.
 */
function refNameOf(d: Descriptor): string | undefined {
  const a = d.annotations ?? {};
  const full = a["io.mincs.ref"] || a["io.containerd.image.name"];
  if (full) return nameFromReference(full);
  const ref = a["org.opencontainers.image.ref.name"];
  if (!ref || !/[:/]/.test(ref)) return undefined;
  return nameFromReference(ref);
}

const OCI_LAYOUT: Shape = { imageLayoutVersion: "string" };
/** An image index (index.json, a nested one) or an image manifest: kindOf() tells which. */
const INDEX_OR_MANIFEST: Shape = {
  "mediaType?": "string",
  "manifests?": [DESCRIPTOR],
  "config?": DESCRIPTOR,
  "layers?": [DESCRIPTOR],
};

/** OCI image layout: index.json, through nested indexes, to the manifest for the platform. */
function ociPlans(src: Source, arch?: string): ImagePlan[] {
  readJson(src.read("oci-layout"), OCI_LAYOUT, `${src.label}: oci-layout`);
  const want = wantedPlatform(arch);
  const blob = (d: Descriptor, what: string): Buffer => {
    const digest = normalizeDigest(d.digest);
    const file = src.canonical(`blobs/sha256/${digest.slice(7)}`);
    if (file === undefined) throw new MincError(`${src.label}: ${what} ${digest} is missing`);
    return verifyBuffer(src.read(file), digest, d.size, `${src.label}: ${what} ${digest}`);
  };
  const kindOf = (d: Descriptor, body: IndexOrManifest): "index" | "manifest" => {
    const t = d.mediaType ?? body.mediaType;
    if (t && INDEX_TYPES.includes(t)) return "index";
    if (t && MANIFEST_TYPES.includes(t)) return "manifest";
    if (Array.isArray(body.manifests)) return "index";
    if (Array.isArray(body.layers)) return "manifest";
    throw new MincError(`${src.label}: ${d.digest} is neither an image index nor a manifest (${t ?? "no media type"})`);
  };
  const picks: { desc: Descriptor; body: IndexOrManifest; name?: string }[] = [];
  const choose = (entries: Descriptor[]): Descriptor => {
    const ok = entries.filter(
      (e) =>
        (e.platform?.os ?? "linux") === want.os &&
        e.platform?.architecture === want.architecture &&
        (want.variant === undefined || e.platform?.variant === undefined || e.platform.variant === want.variant),
    );
    if (ok.length === 0 && entries.length === 1 && !arch) {
      warn(
        `${src.label}: the image is for ${platformName(entries[0].platform)}, not for this host (${platformName(want)})`,
      );
      return entries[0];
    }
    if (ok.length === 0) {
      throw new MincError(
        `${src.label}: no image for ${platformName(want)}; there are: ${entries.map((e) => platformName(e.platform)).join(", ")}`,
      );
    }
    return ok.find((e) => e.platform?.variant === want.variant) ?? ok[0];
  };
  const walk = (index: IndexOrManifest, name: string | undefined, depth: number): void => {
    if (depth > 4) throw new MincError(`${src.label}: image indexes nested too deep`);
    const entries = (index.manifests ?? []).filter((e) => !isAttestation(e));
    if (entries.length === 0) throw new MincError(`${src.label}: the image index lists no image`);
    // Entries with platforms are one image for several platforms: take ours.
    // Without, each entry of the top index is an image (several tags).
    const withPlatform = entries.filter((e) => e.platform);
    let list: Descriptor[];
    if (withPlatform.length > 0) list = [choose(withPlatform)];
    else if (depth === 0 || entries.length === 1) list = entries;
    else throw new MincError(`${src.label}: an image index lists ${entries.length} manifests and no platforms`);
    for (const e of list) {
      const body = readJson<IndexOrManifest>(
        blob(e, "manifest"),
        INDEX_OR_MANIFEST,
        `${src.label}: manifest ${e.digest}`,
      );
      const own = refNameOf(e) ?? name;
      if (kindOf(e, body) === "index") walk(body, own, depth + 1);
      else picks.push({ desc: e, body, name: own });
    }
  };
  walk(readJson<IndexOrManifest>(src.read("index.json"), INDEX_OR_MANIFEST, `${src.label}: index.json`), undefined, 0);
  return picks.map(({ desc, body: manifest, name }) => {
    const label = `${src.label}: manifest ${desc.digest}`;
    if (!manifest.config || !manifest.layers) throw new MincError(`${label} has no config or layers`);
    const raw = blob(manifest.config, "config");
    const diffIds = checkDiffIds(
      readJson<ImageConfig>(raw, IMAGE_CONFIG, `${label}: config`),
      manifest.layers.length,
      label,
    );
    return {
      label,
      name,
      layers: manifest.layers.map((l, i) => {
        const digest = normalizeDigest(l.digest);
        return {
          file: src.canonical(`blobs/sha256/${digest.slice(7)}`),
          label: `blobs/sha256/${digest.slice(7)}`,
          digest,
          size: l.size,
          diffId: diffIds?.[i],
        };
      }),
      config: () => raw,
    };
  });
}

/** What images a source holds, whatever its format. */
export function plansOf(src: Source, arch?: string): ImagePlan[] {
  if (src.canonical("manifest.json")) return dockerPlans(src);
  if (src.canonical("oci-layout") && src.canonical("index.json")) return ociPlans(src, arch);
  if (src.canonical("repositories")) return legacyPlans(src);
  throw usageError(`${src.label}: not an image archive (no manifest.json, OCI index.json or repositories)`);
}

// ---- into the store ----

export interface ImportOptions {
  /** Name the image this (rather than after the archive's tag): checked by the caller (minc-farm's envName), and again when the store takes it. */
  name?: string;
  /** Platform for OCI indexes (MINC_ARCH syntax). */
  arch?: string;
  /**
   * The layout is marten pull's, where minc-smuggler unpacked each layer as
   * it came (MINC_PULL_UNPACK): take unpacked/HEX/ instead of unpacking the
   * blob again. Never for a layout from elsewhere: its unpacked trees would
   * be taken on trust.
   */
  preUnpacked?: boolean;
}

interface Blob {
  file: string;
  dir: string;
  jobs: { plan: ImagePlan; layer: LayerPlan; index: number }[];
  /** False when every layer it is is in the store already: it is only checked. */
  unpack: boolean;
  result?: Pick<UnpackResult, "diffId" | "digest" | "size" | "compression">;
  used: boolean;
}

/**
 * Import every image of an archive (or image directory) into the store.
 * Returns the top layer ids. Nothing enters the store unless all layers
 * were unpacked and verified; a failure leaves the store as it was.
 */
export async function importArchive(store: Store, path: string, opts: ImportOptions = {}): Promise<string[]> {
  store.ensure();
  store.cleanStaleStaging();
  step(`Read the image archive ${path}`);
  const src = await openSource(path);
  const plans = plansOf(src, opts.arch);
  if (opts.name !== undefined && plans.length > 1)
    throw usageError(`${path} holds ${plans.length} images: --name needs one`);
  const stage = store.makeStaging("import");
  try {
    return await importPlans(store, src, plans, stage, opts);
  } finally {
    step("Remove the staging directory");
    removeTree(stage);
  }
}

/** ChainIDs of a plan's layers when all DiffIDs are known up front. */
function knownChain(plan: ImagePlan): string[] | undefined {
  if (!plan.layers.every((l) => l.diffId)) return undefined;
  const ids: string[] = [];
  for (const l of plan.layers) ids.push(chainId(ids[ids.length - 1], l.diffId!));
  return ids;
}

async function importPlans(
  store: Store,
  src: Source,
  plans: ImagePlan[],
  stage: string,
  opts: ImportOptions,
): Promise<string[]> {
  // Which files to unpack: the layers the store lacks (all of them when the
  // DiffIDs are unknown). Those it has are still checked when the source has
  // them; a source may leave them out (a pull skips layers the store has).
  const blobs = new Map<string, Blob>();
  for (const plan of plans) {
    if (plan.layers.length === 0) throw new MincError(`${plan.label}: no layers`);
    const chain = knownChain(plan);
    plan.layers.forEach((layer, index) => {
      const have = chain !== undefined && store.hasImage(chain[index]);
      if (layer.file === undefined) {
        if (have) return;
        throw new MincError(`${plan.label}: layer ${layer.label} is missing from the archive`);
      }
      let b = blobs.get(layer.file);
      if (!b)
        blobs.set(
          layer.file,
          (b = { file: layer.file, dir: `${stage}/blob-${blobs.size}`, jobs: [], unpack: false, used: false }),
        );
      b.jobs.push({ plan, layer, index });
      if (!have) b.unpack = true;
    });
  }
  await src.stream([...blobs.keys()], async (file, data) => {
    const b = blobs.get(file)!;
    const first = b.jobs[0];
    const what = `${first.plan.label}: layer ${first.layer.label}`;
    try {
      const early = b.unpack && opts.preUnpacked ? src.takeUnpacked?.(file, `${b.dir}/root`) : undefined;
      if (early) {
        step(
          `Layer ${first.index + 1}/${first.plan.layers.length} (${first.layer.label}) was unpacked as it came: take it`,
        );
        b.result = early;
      } else if (b.unpack) {
        step(`Unpack layer ${first.index + 1}/${first.plan.layers.length} (${first.layer.label}) into ${b.dir}/root`);
        const r = await unpackLayer(data, `${b.dir}/root`, { diffId: first.layer.diffId });
        shown(`# ${r.entries} entries, ${r.compression}, ${r.diffId}`);
        b.result = r;
      } else {
        step(
          `Check layer ${first.index + 1}/${first.plan.layers.length} (${first.layer.label}), which the store has already`,
        );
        b.result = await digestLayer(data);
      }
    } catch (e) {
      if (e instanceof MincError) throw new MincError(`${what}: ${e.message}`, e.status);
      throw e;
    }
    for (const { plan, layer } of b.jobs) {
      const what = `${plan.label}: layer ${layer.label}`;
      if (layer.size !== undefined && b.result.size !== layer.size)
        throw new MincError(`${what}: size ${b.result.size}, expected ${layer.size}`);
      if (layer.digest !== undefined && b.result.digest !== normalizeDigest(layer.digest))
        throw new MincError(`${what}: digest ${b.result.digest}, expected ${layer.digest}`);
      if (layer.diffId !== undefined && b.result.diffId !== layer.diffId)
        throw new MincError(`${what}: diff_id ${b.result.diffId}, expected ${layer.diffId}`);
    }
  });
  for (const b of blobs.values())
    if (!b.result) throw new MincError(`${src.label}: ${b.file} was not found on reading`);

  // Every layer staged (or already in the store), under its ChainID.
  const staged = new Map<string, string>();
  const images: { layers: StagedLayer[]; plan: ImagePlan; config?: Buffer }[] = [];
  let n = 0;
  for (const plan of plans) {
    const diffIds: string[] = [];
    const layers: StagedLayer[] = [];
    plan.layers.forEach((layer) => {
      const blob = layer.file === undefined ? undefined : blobs.get(layer.file);
      const diffId = layer.diffId ?? blob?.result?.diffId;
      if (diffId === undefined) throw new MincError(`${plan.label}: no diff_id for ${layer.label}`);
      diffIds.push(diffId);
      const id = chainId(layers[layers.length - 1]?.id, diffId);
      const base = layers[layers.length - 1]?.id;
      let dir = staged.get(id);
      if (dir === undefined && blob?.unpack && !store.hasImage(id)) {
        dir = `${stage}/layer-${n++}`;
        if (!blob.used) {
          shown(`mv ${quote(blob.dir)} ${quote(dir)}`);
          fs.renameSync(blob.dir, dir);
          blob.used = true;
          blob.dir = dir;
        } else {
          step(`The same layer is used twice: copy it`);
          fs.mkdirSync(dir);
          run(["cp", "-a", `${blob.dir}/root`, `${dir}/root`]);
        }
        staged.set(id, dir);
      }
      layers.push({ id, base, dir: dir ?? "" });
    });
    images.push({ layers, plan, config: plan.config(diffIds) });
  }
  await signalsDelivered(); // (a signal that came while unpacking acts before the images go in)
  const tops: string[] = [];
  for (const { layers, plan, config } of images) {
    const name = opts.name ?? plan.name;
    step(`Put the image's ${layers.length} layers in the store${name ? ` as ${name}` : ""}`);
    tops.push(store.install(layers, { name: opts.name, defaultName: plan.name, config }));
  }
  return tops;
}
