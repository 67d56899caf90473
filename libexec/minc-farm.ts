// minc-farm: the store of images and containers (MINCS's file archive manager).
//
//   minc-farm lc|list                 list containers: ID PID NAME
//   minc-farm li|images               list images: ID SIZE NAME
//   minc-farm import PATH             import a rootfs directory, an image archive
//                                     (docker save, OCI layout; tar, tar.gz, tar.zst)
//                                     or an OCI layout directory; prints the image id(s)
//   minc-farm commit COID             make the container's writes a new image; prints its id
//   minc-farm fork IMID               make a new container of the image; prints its id
//   minc-farm bind COID | unbind COID mount (unmount) the container's root
//   minc-farm rm COID | rmi IMID      remove a container (not a running one) | an image
//                                     (not one that others depend on)
//   minc-farm pull IMID               print the image's id if it is in the store
//   minc-farm dir COID | idir IMID    print the container's | the image's directory
//   minc-farm imagestack IMID         print the overlay lowerdirs of the image, top first
//   minc-farm baseid COID             print the id of the container's image
//   minc-farm config ID               print the config JSON of an image or of a container's image
//   minc-farm rename COID NAME        name a container (its utsname)
//   minc-farm renamei|tag IMID NAME   name an image
//
// IDs are ids, names or unique id prefixes: a full id is always that id, and
// a name that is also the start of another id is ambiguous (an error). A
// NAME may be neither an id nor the start of one. The store is $MINCS_DIR (or
// MINCS_DIR in /etc/mincs.conf, or /var/lib/mincs). import of a directory
// reads MINC_IMPORT_UUID, MINC_IMPORT_NAME and MINC_BASE_UUID as MINCS did;
// of an archive MINC_IMPORT_NAME and MINC_ARCH (the platform to pick from a
// multi-platform index).
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import { isImageDir } from "../lib/store/imagedir.ts";
import { MincError, usageError } from "../lib/core/fail.ts";
import { chainId, type ImageMeta, mountsUnder, Store } from "../lib/store/farm.ts";
import { checkName, whyNotGivenId } from "../lib/store/names.ts";
import { backend } from "../lib/core/libexec.ts";
import { removeTree, runAsync } from "../lib/core/run.ts";
import { readSettings, type Settings } from "../lib/core/settings.ts";
import { signalsDelivered } from "../lib/core/signals.ts";
import { treeDigest } from "../lib/store/tree.ts";
import { quoteAll, shown, step } from "../lib/core/trace.ts";

const USAGE =
  "usage: minc-farm lc|li|import PATH|commit COID|fork IMID|bind COID|unbind COID|rm COID|rmi IMID|" +
  "pull IMID|dir COID|idir IMID|imagestack IMID|baseid COID|config ID|rename COID NAME|renamei IMID NAME";
// The settings, from the environment main() is given.
let settings: Settings;

function out(text: string): void {
  fs.writeSync(1, text.endsWith("\n") ? text : `${text}\n`);
}

function arg(args: string[], i: number, what: string): string {
  const v = args[i];
  if (v === undefined || v === "") throw usageError(`${what} missing (${USAGE})`);
  return v;
}

// ---- listing ----

function window(id: string): string {
  return settings.MINC_LONG_ID ? id : id.slice(0, 12);
}

/** The header's extra tabs line the columns up under long ids, as MINCS's did. */
function header(column: string): string {
  return `ID\t${settings.MINC_LONG_ID ? "\t".repeat(7) : ""}\t${column}\tNAME`;
}

function listContainers(store: Store): void {
  const lines = [header("PID")];
  for (const id of store.listContainers()) {
    let pid = "";
    try {
      pid = fs.readFileSync(store.containerFiles(id).pid, "utf8").trim();
    } catch {
      // not running
    }
    lines.push(`${window(id)}\t${pid}\t${store.containerName(id) ?? "<noname>"}`);
  }
  out(lines.join("\n"));
}

function sizeOf(dir: string): string {
  const r = spawnSync("du", ["-sh", dir], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
  return r.stdout?.split(/\s/)[0] || "?";
}

function listImages(store: Store): void {
  const lines = [header("SIZE")];
  for (const id of store.listImages()) {
    lines.push(`${window(id)}\t${sizeOf(`${store.imageDir(id)}/root`)}\t${store.imageName(id) ?? "(noname)"}`);
  }
  out(lines.join("\n"));
}

// ---- import and commit of directories ----

/**
 * Copy a directory into the store as one layer: staged, hashed, renamed in.
 * Its id is MINC_IMPORT_UUID, else the sha256 of its content (the ChainID
 * of it on its base, when it has one).
 */
async function importTree(
  store: Store,
  source: string,
  opts: { id?: string; base?: string },
  meta: ImageMeta,
): Promise<string> {
  store.cleanStaleStaging();
  if (opts.id !== undefined && store.hasImage(opts.id)) {
    process.stderr.write(`${source} (${opts.id}) is already imported.\n`);
    store.install([{ id: opts.id, base: opts.base ?? store.baseOf(opts.id), dir: "" }], meta);
    return opts.id;
  }
  const stage = store.makeStaging("import");
  try {
    // Both read the same files: the copy in the kernel (copy_file_range), the digest here, at the same time.
    step(`Copy ${source} into the staging directory while its id is computed: a sha256 over its tree (on its base)`);
    // Settles with the copy's error, if any, rather than rejecting: it is awaited either way.
    const copied = runAsync(["cp", "-a", "--", source, `${stage}/root`]).then(
      () => undefined,
      (e: unknown) => e,
    );
    let digest: string | undefined;
    let digestFailed: unknown;
    try {
      digest = opts.id === undefined ? treeDigest(source) : undefined;
    } catch (e) {
      digestFailed = e;
    }
    shown("wait"); // the copy ends before anything else happens (the staging dir goes on a failure)
    const failed = await copied;
    if (failed) throw failed; // (the copy's error first, as it says more)
    if (digestFailed) throw digestFailed;
    await signalsDelivered(); // (a signal that came during the digest acts before the image goes in)
    const id = opts.id ?? chainId(opts.base, digest!);
    if (store.hasImage(id)) process.stderr.write(`${source} (${id}) is already imported.\n`);
    return store.install([{ id, base: opts.base, dir: stage }], meta);
  } finally {
    removeTree(stage);
  }
}

/** MINC_IMPORT_NAME, checked before anything is copied or unpacked. */
function envName(store: Store): string | undefined {
  const n = settings.MINC_IMPORT_NAME;
  return n ? store.checkNameFor("image", checkName(n, "MINC_IMPORT_NAME")) : undefined;
}

async function importPath(store: Store, path: string): Promise<void> {
  let st: fs.Stats;
  try {
    st = fs.statSync(path);
  } catch {
    throw usageError(`${path}: no such file or directory`);
  }
  if (st.isFile() || (st.isDirectory() && isImageDir(path))) {
    if (settings.MINC_IMPORT_UUID || settings.MINC_BASE_UUID) {
      throw usageError("MINC_IMPORT_UUID and MINC_BASE_UUID are for directories, not image archives");
    }
    // Loaded only here: its tar reader and decompressors cost every other command's start.
    const { importArchive } = await import("../lib/store/archive.ts");
    const ids = await importArchive(store, path, {
      name: envName(store),
      arch: settings.MINC_ARCH || undefined,
      preUnpacked: settings.MINC_IMPORT_UNPACKED,
    });
    for (const id of ids) out(id);
    return;
  }
  if (!st.isDirectory()) throw usageError(`${path}: not a directory or an archive`);
  const given = settings.MINC_IMPORT_UUID;
  const bad = given ? whyNotGivenId(given) : undefined;
  if (bad) throw usageError(`MINC_IMPORT_UUID ${bad}`);
  const base = settings.MINC_BASE_UUID ? store.resolveImage(settings.MINC_BASE_UUID) : undefined;
  // A symlink to the rootfs is followed: cp -a would copy the link itself.
  out(await importTree(store, fs.realpathSync(path), { id: given || undefined, base }, { name: envName(store) }));
}

async function commit(store: Store, ref: string): Promise<void> {
  const id = store.resolveContainer(ref);
  const { storage } = store.containerFiles(id);
  if (!fs.existsSync(storage)) throw new MincError(`container ${id} has no storage yet (it never ran)`);
  const base = store.containerBase(id);
  store.layers(base);
  // Named after the container's hostname, as MINCS did, unless that cannot be an image's name.
  out(await importTree(store, storage, { base }, { name: envName(store), defaultName: store.containerName(id) }));
}

// ---- mounts ----

function coat(...args: string[]): void {
  const argv = [backend("minc-coat"), ...args];
  shown(quoteAll(argv));
  const r = spawnSync(argv[0], argv.slice(1), { stdio: ["ignore", "inherit", "inherit"] });
  if (r.error) throw new MincError(`cannot run ${argv[0]}: ${r.error.message}`);
  if (r.status !== 0) throw new MincError(`failed: ${quoteAll(argv)} (exit ${r.status ?? r.signal})`, r.status ?? 1);
}

function removeContainer(store: Store, ref: string): void {
  const id = store.resolveContainer(ref);
  const dir = store.containerDir(id);
  const pid = store.runningPid(id);
  if (pid !== undefined) throw new MincError(`container ${id} is running (pid ${pid}): stop it first`);
  if (mountsUnder(store.containerFiles(id).root).length) {
    step("Unmount the container's root first");
    coat("unbind", dir);
  }
  store.removeContainer(id);
}

function config(store: Store, ref: string): void {
  let image: string;
  try {
    image = store.resolveImage(ref);
  } catch (e) {
    if (!(e instanceof MincError) || !/^no such image/.test(e.message)) throw e;
    let container: string;
    try {
      container = store.resolveContainer(ref);
    } catch (e2) {
      if (e2 instanceof MincError && /^no such container/.test(e2.message))
        throw new MincError(`no such image or container: ${ref}`);
      throw e2;
    }
    image = store.containerBase(container);
  }
  const json = store.config(image);
  if (json !== undefined) out(json);
}

export async function main(args: string[], env: NodeJS.ProcessEnv): Promise<void> {
  settings = readSettings(env);
  const cmd = args[0];
  if (cmd === undefined || cmd === "-h" || cmd === "--help") throw usageError(USAGE);
  const store = new Store();
  store.ensure();
  switch (cmd) {
    case "lc":
    case "list":
      return listContainers(store);
    case "li":
    case "images":
      return listImages(store);
    case "import":
      return importPath(store, arg(args, 1, "PATH"));
    case "commit":
      return commit(store, arg(args, 1, "COID"));
    case "fork":
      return out(store.fork(arg(args, 1, "IMID")));
    case "bind": {
      const id = store.resolveContainer(arg(args, 1, "COID"));
      coat("bind", store.containerDir(id), store.stack(store.containerBase(id)));
      return out(id);
    }
    case "unbind":
      return coat("unbind", store.containerDir(store.resolveContainer(arg(args, 1, "COID"))));
    case "rm":
      return removeContainer(store, arg(args, 1, "COID"));
    case "rmi":
      return store.removeImage(store.resolveImage(arg(args, 1, "IMID")));
    case "pull":
      return out(store.resolveImage(arg(args, 1, "IMID")));
    case "dir":
      return out(store.containerDir(store.resolveContainer(arg(args, 1, "COID"))));
    case "idir":
      return out(store.imageDir(store.resolveImage(arg(args, 1, "IMID"))));
    case "imagestack":
      return out(store.stack(store.resolveImage(arg(args, 1, "IMID"))));
    case "baseid":
      return out(store.containerBase(store.resolveContainer(arg(args, 1, "COID"))));
    case "config":
      return config(store, arg(args, 1, "ID"));
    case "rename":
      store.renameContainer(arg(args, 1, "COID"), arg(args, 2, "NAME"));
      return;
    case "renamei":
    case "tag":
      store.renameImage(arg(args, 1, "IMID"), arg(args, 2, "NAME"));
      return;
    default:
      throw usageError(`unknown command ${cmd} (${USAGE})`);
  }
}
