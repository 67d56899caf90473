// The image and container store of MINCS, as the shell minc-farm laid it out:
//
//   $MINCS_DIR/images/<id>/root        the layer's files (whiteouts in overlayfs form)
//   $MINCS_DIR/images/<id>/storage     -> root
//   $MINCS_DIR/images/<id>/baseid      the parent layer's id (none for a bottom layer)
//   $MINCS_DIR/images/<id>/name        the image's name (on named images)
//   $MINCS_DIR/images/<id>/config.json the image's OCI/Docker config (on its top layer; new here)
//   $MINCS_DIR/containers/<id>/        root/ storage/ work/ baseid utsname pid
//
// Ids are 64 lowercase hex digits. What this port adds, invisible to the
// shell MINCS: every import is assembled in $MINCS_DIR/.staging/<pid>-<random>
// and renamed into place, bottom layer first, under an exclusive flock on
// $MINCS_DIR/.lock (taken as minc-dens takes its lock: flock(1) on an fd we
// hold open). A staging directory whose process is gone is removed by the
// next run, so an interrupted import leaves no image.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import { MincError, usageError, warn } from "../core/fail.ts";
import { checkLayerPath } from "./layerpath.ts";
import { removeOnInterrupt } from "../core/interrupt.ts";
import { mounts } from "../core/mounts.ts";
import { checkName, checkRef, isId, isIdPrefix, isStoreId, plainName, sameName, whyNotName } from "./names.ts";
import { removeTree } from "../core/run.ts";
import { quote, quoteAll, shown, step } from "../core/trace.ts";
import { workdirPaths, type WorkdirPaths } from "../boot/workdir.ts";

// node:crypto is loaded when first used: listing the store (marten li, lc)
// needs none of it, and it is some 20 of Node's internal modules to load.
const crypto = (): typeof import("node:crypto") => process.getBuiltinModule("node:crypto");

export const DEFAULT_DIR = "/var/lib/mincs";
export const CONFIG_FILE = "/etc/mincs.conf";

/**
 * The store's root: $MINCS_DIR, else MINCS_DIR=... from /etc/mincs.conf
 * (only that assignment is read; the file is not run), else /var/lib/mincs.
 */
export function storeDir(env: NodeJS.ProcessEnv = process.env, conf = CONFIG_FILE): string {
  let dir = env.MINCS_DIR;
  if (!dir) {
    let text = "";
    try {
      text = fs.readFileSync(conf, "utf8");
    } catch {
      // no config file
    }
    dir = mincsDirFromConfig(text) ?? DEFAULT_DIR;
  }
  if (!dir.startsWith("/")) throw usageError(`MINCS_DIR ${dir}: must be an absolute path`);
  checkLayerPath("MINCS_DIR", dir, "hold overlay layers");
  return dir.replace(/\/+$/, "") || "/";
}

/** The value of the last plain MINCS_DIR=VALUE line of a mincs.conf ('...' or "..." quoted or not). */
export function mincsDirFromConfig(text: string): string | undefined {
  let found: string | undefined;
  for (const line of text.split("\n")) {
    const m = /^\s*(?:export\s+)?MINCS_DIR=(?:'([^']*)'|"([^"$`\\]*)"|([^\s'"$`\\;&|]*))\s*(?:#.*)?$/.exec(line);
    if (m) found = m[1] ?? m[2] ?? m[3];
  }
  return found || undefined;
}

/** chainid(L1) = diffid(L1); chainid(Ln) = sha256(chainid(Ln-1) + " " + diffid(Ln)); returned as bare hex. */
export function chainId(parent: string | undefined, diffId: string): string {
  const diff = diffId.startsWith("sha256:") ? diffId : `sha256:${diffId}`;
  if (!/^sha256:[0-9a-f]{64}$/.test(diff)) throw new MincError(`not a sha256 digest: ${diffId}`);
  if (parent === undefined) return diff.slice(7);
  return crypto().createHash("sha256").update(`sha256:${parent} ${diff}`).digest("hex");
}

function randomHex(bytes: number): string {
  return crypto().randomBytes(bytes).toString("hex");
}

export function randomId(): string {
  return randomHex(32);
}

/** True if the process exists and is not a zombie (one of another user counts). */
export function alive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EPERM") return false;
  }
  try {
    // "PID (COMM) STATE ...": COMM may hold spaces and parentheses.
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return !/^[ZX]/.test(stat.slice(stat.lastIndexOf(")") + 2));
  } catch {
    return true;
  }
}

function readTrimmed(file: string): string | undefined {
  try {
    return fs.readFileSync(file, "utf8").trim();
  } catch {
    return undefined;
  }
}

function isDir(path: string): boolean {
  try {
    return fs.lstatSync(path).isDirectory();
  } catch {
    return false;
  }
}

function exists(path: string): boolean {
  try {
    fs.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/** A layer assembled in a staging directory: DIR/root holds its files. */
export interface StagedLayer {
  id: string;
  base?: string;
  dir: string;
}

/** What the top layer of an image carries besides its files. */
export interface ImageMeta {
  /** The name the user gave: one the store cannot take is refused (exit 2). */
  name?: string;
  /**
   * The name the image comes with, when none is given: its archive's tag, the
   * hostname of the container committed. Nobody chose it for this store, so
   * one the store cannot take is left out, with a warning.
   */
  defaultName?: string;
  config?: Buffer;
}

type Kind = "image" | "container";

export class Store {
  readonly dir: string;
  readonly images: string;
  readonly containers: string;
  readonly staging: string;
  readonly lockFile: string;

  constructor(dir: string = storeDir()) {
    this.dir = dir;
    this.images = `${dir}/images`;
    this.containers = `${dir}/containers`;
    this.staging = `${dir}/.staging`;
    this.lockFile = `${dir}/.lock`;
  }

  /** mkdir -p the store's directories (as the shell minc-farm did on every run). */
  ensure(): this {
    const missing = [this.images, this.containers, this.staging].filter((d) => !isDir(d));
    if (missing.length) {
      step(`Make the store's directories in ${this.dir}`);
      shown(`mkdir -p ${quoteAll(missing)}`);
      for (const d of missing) fs.mkdirSync(d, { recursive: true });
    }
    return this;
  }

  imageDir(id: string): string {
    return `${this.images}/${id}`;
  }

  containerDir(id: string): string {
    return `${this.containers}/${id}`;
  }

  /** A container's directory is its working directory (lib/boot/workdir.ts). */
  containerFiles(id: string): WorkdirPaths {
    return workdirPaths(this.containerDir(id));
  }

  private ids(kind: Kind): string[] {
    const dir = kind === "image" ? this.images : this.containers;
    let names: string[];
    try {
      names = fs.readdirSync(dir);
    } catch {
      return [];
    }
    return names.filter((n) => isStoreId(n) && isDir(`${dir}/${n}`)).sort();
  }

  listImages(): string[] {
    return this.ids("image");
  }

  listContainers(): string[] {
    return this.ids("container");
  }

  hasImage(id: string): boolean {
    return isStoreId(id) && isDir(this.imageDir(id));
  }

  imageName(id: string): string | undefined {
    return readTrimmed(`${this.imageDir(id)}/name`) || undefined;
  }

  containerName(id: string): string | undefined {
    return readTrimmed(this.containerFiles(id).utsname) || undefined;
  }

  /** The parent layer of an image (undefined for a bottom layer). */
  baseOf(id: string): string | undefined {
    const base = readTrimmed(`${this.imageDir(id)}/baseid`);
    if (!base) return undefined;
    if (!isStoreId(base)) throw new MincError(`image ${id}: its baseid ${JSON.stringify(base)} is not an id`);
    return base;
  }

  /** The image a container was forked from. */
  containerBase(id: string): string {
    const base = readTrimmed(this.containerFiles(id).baseid);
    if (!base || !isStoreId(base)) throw new MincError(`container ${id} has no valid baseid`);
    return base;
  }

  private nameOf(kind: Kind, id: string): string | undefined {
    return kind === "image" ? this.imageName(id) : this.containerName(id);
  }

  /**
   * A reference to the full id. An id is itself, whatever names say (a
   * name cannot be an id, but a store of the shell MINCS may have one). Else
   * a name (NAME:latest for NAME, and the reverse) or a unique id prefix;
   * a name that is also the start of another id is ambiguous, never settled
   * in favour of either: a name that the store did not refuse (one stored by
   * the shell MINCS, or one that a later id starts with) would otherwise take
   * the place of an image given by its short id. Nothing found is an error.
   */
  resolve(kind: Kind, ref: string): string {
    checkRef(ref, kind);
    const ids = this.ids(kind);
    if (ids.includes(ref)) return ref;
    if (isId(ref)) throw new MincError(`no such ${kind}: ${ref}`);
    const named = this.named(kind, ids, ref);
    const started = isIdPrefix(ref) ? ids.filter((id) => id.startsWith(ref)) : [];
    const hits = [...new Set([...named, ...started])];
    if (hits.length === 1) return hits[0];
    if (hits.length === 0) throw new MincError(`no such ${kind}: ${ref}`);
    if (named.length > 0 && started.length > 0) {
      throw new MincError(
        `${kind} ${ref} is ambiguous: it is the name of ${named.join(", ")} and the start of the id of ${started.join(", ")}; give the full id`,
      );
    }
    throw new MincError(`${kind} ${ref} is ambiguous: it matches ${hits.join(", ")}`);
  }

  /** The ids of the kind named ref: those of that very name, else of the same name (NAME is NAME:latest). */
  private named(kind: Kind, ids: string[], ref: string): string[] {
    const names = new Map(ids.map((id) => [id, this.nameOf(kind, id)]));
    const exact = ids.filter((id) => names.get(id) === ref);
    if (exact.length > 0) return exact;
    return ids.filter((id) => {
      const n = names.get(id);
      return n !== undefined && sameName(n, ref);
    });
  }

  resolveImage(ref: string): string {
    return this.resolve("image", ref);
  }

  resolveContainer(ref: string): string {
    return this.resolve("container", ref);
  }

  /** The image's layers, top first, checked to exist and to form no loop. */
  layers(id: string): string[] {
    const seen: string[] = [];
    for (let cur: string | undefined = id; cur !== undefined; cur = this.baseOf(cur)) {
      if (seen.includes(cur)) throw new MincError(`image ${id}: its layers form a loop at ${cur}`);
      if (!isDir(`${this.imageDir(cur)}/root`)) {
        throw new MincError(
          cur === id ? `image ${id} has no root directory` : `image ${id}: its base layer ${cur} is missing`,
        );
      }
      seen.push(cur);
    }
    return seen;
  }

  /** The overlay lowerdir list of an image, top layer first. */
  stack(id: string): string {
    return this.layers(id)
      .map((l) => `${this.imageDir(l)}/root`)
      .join(":");
  }

  /** The config JSON of the image (the first layer from the top that has one). */
  config(id: string): string | undefined {
    for (const layer of this.layers(id)) {
      const file = `${this.imageDir(layer)}/config.json`;
      if (exists(file)) return fs.readFileSync(file, "utf8");
    }
    return undefined;
  }

  /** The images and containers whose baseid is this image. */
  dependents(id: string): { images: string[]; containers: string[] } {
    return {
      images: this.listImages().filter((i) => readTrimmed(`${this.imageDir(i)}/baseid`) === id),
      containers: this.listContainers().filter((c) => readTrimmed(this.containerFiles(c).baseid) === id),
    };
  }

  /** The pid of the container's running process, if its pid file names a live one. */
  runningPid(id: string): number | undefined {
    const text = readTrimmed(this.containerFiles(id).pid);
    if (!text || !/^\d+$/.test(text)) return undefined;
    const pid = Number(text);
    return alive(pid) ? pid : undefined;
  }

  // ---- staging and the lock ----

  /** A new staging directory, $MINCS_DIR/.staging/<pid>-<random>. */
  makeStaging(tag = ""): string {
    this.ensure();
    const dir = `${this.staging}/${process.pid}-${tag ? `${tag}-` : ""}${randomHex(6)}`;
    removeOnInterrupt(dir); // (before it exists: a signal from here on is caught)
    shown(`mkdir ${quote(dir)}`);
    fs.mkdirSync(dir);
    return dir;
  }

  /** Remove the staging directories of processes that are gone (interrupted imports). */
  cleanStaleStaging(): void {
    let names: string[];
    try {
      names = fs.readdirSync(this.staging);
    } catch {
      return;
    }
    for (const n of names) {
      const m = /^(\d+)-/.exec(n);
      if (!m || alive(Number(m[1]))) continue;
      step(`Remove the staging directory of process ${m[1]}, which is gone`);
      // Renamed first, so that two runs never remove it at once.
      const trash = `${this.staging}/${process.pid}-stale-${randomHex(6)}`;
      try {
        fs.renameSync(`${this.staging}/${n}`, trash);
      } catch {
        continue; // another run took it
      }
      removeTree(trash);
    }
  }

  /** Run body under the store's exclusive lock (flock on $MINCS_DIR/.lock). */
  withLock<T>(body: () => T): T {
    this.ensure();
    step("Take the store's lock: one change of the store at a time");
    shown(`exec 3>>${quote(this.lockFile)}`);
    const fd = fs.openSync(this.lockFile, "a");
    try {
      const argv = ["flock", "-w", "300", "3"];
      shown(quoteAll(argv));
      const r = spawnSync(argv[0], argv.slice(1), { stdio: ["ignore", "inherit", "inherit", fd] });
      if (r.error) throw new MincError(`cannot run flock: ${r.error.message}`);
      if (r.status !== 0) throw new MincError(`could not lock ${this.lockFile} within 300 s`);
      return body();
    } finally {
      step("Release the store's lock");
      shown("exec 3>&-");
      fs.closeSync(fd);
    }
  }

  // ---- changes (each under the lock) ----

  /**
   * Put staged layers in place, bottom first: each one renamed into
   * images/<id> unless a layer of that id is there already (the same
   * content on the same base: a concurrent import, or an earlier one).
   * The top layer gets the name and config. Returns the top id.
   */
  install(layers: readonly StagedLayer[], meta: ImageMeta = {}): string {
    if (layers.length === 0) throw new MincError("an image needs at least one layer");
    if (meta.name !== undefined) checkName(meta.name);
    const top = layers[layers.length - 1];
    step("Complete each staged layer: the storage link, its base, and on the top layer the name and config");
    for (const l of layers) {
      if (!isStoreId(l.id) || (l.base !== undefined && !isStoreId(l.base))) throw new MincError(`bad layer id ${l.id}`);
      if (!l.dir) continue; // in the store already
      if (!isDir(`${l.dir}/root`)) throw new MincError(`staged layer ${l.dir} has no root`);
      if (!exists(`${l.dir}/storage`)) symlinkShown("root", `${l.dir}/storage`);
      if (l.base !== undefined) writeShown(`${l.dir}/baseid`, `${l.base}\n`);
    }
    if (top.dir && meta.config !== undefined) writeShown(`${top.dir}/config.json`, meta.config);
    return this.withLock(() => {
      const name = this.admitName(
        meta,
        layers.map((l) => l.id),
      );
      if (name !== undefined) {
        this.takeName(top.id, name);
        if (top.dir) writeShown(`${top.dir}/name`, `${name}\n`);
      }
      let topWasThere = false;
      for (const l of layers) {
        const target = this.imageDir(l.id);
        if (exists(target)) {
          const base = readTrimmed(`${target}/baseid`) || undefined;
          if (base !== l.base) {
            throw new MincError(
              `image ${l.id} is already in the store with base ${base ?? "(none)"}, not ${l.base ?? "(none)"}`,
            );
          }
          if (l === top) topWasThere = true;
          continue;
        }
        if (!l.dir) throw new MincError(`layer ${l.id} left the store during the import; try again`);
        if (l.base !== undefined && !isDir(this.imageDir(l.base)))
          throw new MincError(`base image ${l.base} is not in the store`);
        shown(`mv ${quote(l.dir)} ${quote(target)}`);
        fs.renameSync(l.dir, target);
      }
      if (topWasThere) {
        const target = this.imageDir(top.id);
        step("The top layer was in the store already: it takes this image's config and name");
        if (meta.config !== undefined) {
          writeShown(`${target}/.config.json.${process.pid}`, meta.config);
          replaceShown(`${target}/.config.json.${process.pid}`, `${target}/config.json`);
        }
        if (name !== undefined) writeShown(`${target}/name`, `${name}\n`);
      }
      return top.id;
    });
  }

  /**
   * The name an image being installed takes (call under the lock): the given
   * one, refused if the store cannot take it; else its default one, left out
   * with a warning if the store cannot take it. newIds are its layers' ids.
   */
  private admitName(meta: ImageMeta, newIds: readonly string[]): string | undefined {
    if (meta.name !== undefined) return this.checkNameFor("image", meta.name, newIds);
    if (meta.defaultName === undefined) return undefined;
    const why = this.whyNameRefused("image", meta.defaultName, newIds);
    if (why === undefined) return meta.defaultName;
    warn(`${why}; image ${newIds[newIds.length - 1].slice(0, 12)} is stored without it`);
    return undefined;
  }

  /**
   * A name for an image or a container of the store, refused (exit 2) if it
   * cannot take it. Not under the lock: an early check, before a download or
   * an unpack, of what the change itself checks again.
   */
  checkNameFor(kind: Kind, name: string, newIds: readonly string[] = []): string {
    const why = this.whyNameRefused(kind, name, newIds);
    if (why !== undefined) throw usageError(why);
    return name;
  }

  /**
   * Why an image or a container cannot take this name in this store (call
   * under the lock); undefined if it can. Besides what no name may be: the
   * start of an id of the kind (with newIds, those about to come in). As the
   * shell MINCS's marten tag refused a name that already stood for
   * something, and so that a name never stands where a short id is meant.
   */
  private whyNameRefused(kind: Kind, name: string, newIds: readonly string[] = []): string | undefined {
    const why = whyNotName(name);
    if (why !== undefined) return why;
    const plain = plainName(name);
    if (!isIdPrefix(plain)) return undefined;
    const started = [...this.ids(kind), ...newIds].find((id) => id.startsWith(plain));
    return started === undefined
      ? undefined
      : `name ${JSON.stringify(name)} is the start of the id of ${kind} ${started}: a name may not be an id or the start of one`;
  }

  /** The name leaves every other image that has it (call under the lock). */
  private takeName(id: string, name: string): void {
    for (const other of this.listImages()) {
      const n = this.imageName(other);
      if (other === id || n === undefined || !sameName(n, name)) continue;
      step(`The name ${name} moves from image ${other.slice(0, 12)}`);
      removeShown(`${this.imageDir(other)}/name`);
    }
  }

  /** marten renamei/tag: refused if another image has the name, or the store cannot take it. */
  renameImage(ref: string, name: string): string {
    checkName(name);
    return this.withLock(() => {
      const id = this.resolveImage(ref);
      this.checkNameFor("image", name);
      for (const other of this.listImages()) {
        const n = this.imageName(other);
        if (other !== id && n !== undefined && sameName(n, name))
          throw usageError(`${name} is already used by image ${other}`);
      }
      writeShown(`${this.imageDir(id)}/name`, `${name}\n`);
      return id;
    });
  }

  /** marten rename: a container's name is its utsname (its hostname); refused as an image's name is. */
  renameContainer(ref: string, name: string): string {
    checkName(name);
    return this.withLock(() => {
      const id = this.resolveContainer(ref);
      this.checkNameFor("container", name);
      for (const other of this.listContainers()) {
        if (other !== id && this.containerName(other) === name)
          throw usageError(`${name} is already used by container ${other}`);
      }
      writeShown(this.containerFiles(id).utsname, `${name}\n`);
      return id;
    });
  }

  /** A new container of the image: containers/<random id>/root and baseid. */
  fork(ref: string): string {
    return this.withLock(() => {
      const image = this.resolveImage(ref);
      this.layers(image);
      const id = randomId();
      const files = this.containerFiles(id);
      step(`Make a new container of image ${image.slice(0, 12)}`);
      shown(`mkdir -p ${quote(files.root)}`);
      fs.mkdirSync(files.root, { recursive: true });
      writeShown(files.baseid, `${image}\n`);
      return id;
    });
  }

  /** Remove a container (refused while it runs); the caller unmounts it first. */
  removeContainer(id: string): void {
    const trash = this.withLock(() => {
      const pid = this.runningPid(id);
      if (pid !== undefined) throw new MincError(`container ${id} is running (pid ${pid})`);
      if (mountsUnder(this.containerDir(id)).length) throw new MincError(`container ${id} is still mounted`);
      return this.toTrash(this.containerDir(id));
    });
    removeTree(trash);
  }

  /** Remove an image (refused while containers or images depend on it). */
  removeImage(id: string): void {
    const trash = this.withLock(() => {
      const deps = this.dependents(id);
      if (deps.containers.length)
        throw new MincError(`image ${id} is used by the containers ${deps.containers.join(", ")}`);
      if (deps.images.length) throw new MincError(`image ${id} is the base of the images ${deps.images.join(", ")}`);
      if (mountsUnder(this.imageDir(id)).length) throw new MincError(`image ${id} is mounted`);
      return this.toTrash(this.imageDir(id));
    });
    removeTree(trash);
  }

  /** Out of the store at once (a rename), removed after the lock is released. */
  private toTrash(dir: string): string {
    fs.mkdirSync(this.staging, { recursive: true });
    const trash = `${this.staging}/${process.pid}-rm-${randomHex(6)}`;
    shown(`mv ${quote(dir)} ${quote(trash)}`);
    fs.renameSync(dir, trash);
    return trash;
  }
}

// ---- traced file operations ----

export function writeShown(path: string, content: string | Buffer): void {
  if (typeof content === "string" && !content.replace(/\n$/, "").includes("\n")) {
    shown(`echo ${quote(content.replace(/\n$/, ""))} > ${quote(path)}`);
  } else if (content.length <= 4096) {
    shown(`printf '%s' ${quote(content.toString())} > ${quote(path)}`);
  } else {
    shown(`: write ${content.length} bytes to ${quote(path)}`);
  }
  fs.writeFileSync(path, content);
}

function symlinkShown(target: string, path: string): void {
  shown(`ln -s ${quote(target)} ${quote(path)}`);
  fs.symlinkSync(target, path);
}

function removeShown(path: string): void {
  shown(`rm -f ${quote(path)}`);
  fs.rmSync(path, { force: true });
}

function replaceShown(from: string, to: string): void {
  shown(`mv ${quote(from)} ${quote(to)}`);
  fs.renameSync(from, to);
}

/** Mount points at or below dir. */
export function mountsUnder(dir: string): string[] {
  return mounts()
    .map((m) => m.point)
    .filter((m) => m === dir || m.startsWith(`${dir}/`));
}

// ---- the start of an async entrypoint ----
