// marten: manager of images and containers.
//
// Like MINCS's marten, a frontend: the store itself is libexec/minc-farm,
// run as a program for every operation; pulling is libexec/minc-smuggler,
// which downloads and verifies an image into a directory as an OCI image
// layout, which minc-farm then imports.
import * as fs from "node:fs";
import yargs from "yargs";
import { HandedOver, MincError, start, usageError } from "../lib/core/fail.ts";
import { Store } from "../lib/store/farm.ts";
import { runStoppable } from "../lib/core/interrupt.ts";
import { wantedPlatform } from "../lib/store/platform.ts";
import { checkName } from "../lib/store/names.ts";
import { checkReference, parseReference } from "../lib/store/reference.ts";
import { backend } from "../lib/core/libexec.ts";
import { exec, isExecutable, removeTree, runInThisNode } from "../lib/core/run.ts";
import type { SettingsEnv } from "../lib/core/settings.ts";
import { quote, quoteAll, shown, step } from "../lib/core/trace.ts";
import { VERSION } from "../lib/core/version.ts";
import { main as mincFarm } from "../libexec/minc-farm.ts";

// minc-farm, the last step of most commands, runs in this Node (see farm below).
runInThisNode({ "minc-farm": mincFarm });

/** The MINC_* settings a backend gets on top of our environment (lib/core/settings.ts); undefined ones are left out. */
type Env = SettingsEnv;

/** A backend's command line, its environment (ours plus env), and how the trace shows it (with shownEnv). */
function backendCall(
  name: string,
  args: string[],
  env: Env,
  shownEnv: Env = env,
): { argv: string[]; full: NodeJS.ProcessEnv; line: string } {
  const argv = [backend(name), ...args];
  const vars = Object.entries(shownEnv)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${quote(v!)} `)
    .join("");
  const full: NodeJS.ProcessEnv = { ...process.env };
  for (const [k, v] of Object.entries(env)) if (v !== undefined) full[k] = v;
  return { argv, full, line: `${vars}${quoteAll(argv)}` };
}

/**
 * Run a backend with extra variables; its exit status is ours (it printed its
 * own error). It runs asynchronously, so that a signal that interrupts marten
 * reaches it too and marten cleans up once it has ended (lib/core/interrupt.ts).
 */
function runBackend(
  name: string,
  args: string[],
  env: Env = {},
  shownEnv: Env = env,
  stdoutToStderr = false,
): Promise<number> {
  const { argv, full, line } = backendCall(name, args, env, shownEnv);
  shown(line);
  return runStoppable(argv, { stdio: ["inherit", stdoutToStderr ? 2 : 1, 2], env: full });
}

/**
 * The last step of most commands is minc-farm's: marten execs it, which
 * runs its main in this Node rather than starting another (about 40 ms);
 * its exit status is marten's.
 */
function farm(args: string[], env: Env = {}): never {
  const { argv, full, line } = backendCall("minc-farm", args, env);
  return exec(argv, full, line);
}

function list(cmd: "lc" | "li", long: boolean | undefined): number {
  return farm([cmd], { MINC_LONG_ID: long ? "1" : "" });
}

function importCmd(path: string, name: string | undefined, arch: string | undefined): number {
  if (name !== undefined) checkName(name, "--name");
  if (arch !== undefined) wantedPlatform(arch);
  if (!fs.existsSync(path)) throw usageError(`${path}: no such file or directory`);
  return farm(["import", path], { MINC_IMPORT_NAME: name, MINC_ARCH: arch });
}

interface PullOptions {
  arch?: string;
  insecure?: boolean;
  user?: string;
  name?: string;
}

/**
 * pull: minc-smuggler REF DIR downloads and verifies the image into DIR (an
 * empty directory in the store's staging area) as an OCI image layout;
 * minc-farm imports it from there. The staging directory goes either way.
 * Without --name, the layout names the image after REF (its io.mincs.ref
 * annotation), as an archive's tag does: one the store cannot take (the
 * start of an id in it) is left out with a warning, not refused after the
 * download. A REF that gives no valid name at all is refused before it.
 */
async function pull(ref: string, o: PullOptions): Promise<number> {
  let name: string;
  if (o.name === undefined)
    name = checkReference(ref); // (which parses REF)
  else {
    parseReference(ref);
    name = checkName(o.name, "--name");
  }
  if (o.arch !== undefined) wantedPlatform(o.arch);
  if (o.user !== undefined && !/^[^:\s]+:.*$/.test(o.user)) throw usageError("--user takes USER:PASSWORD");
  const smuggler = backend("minc-smuggler");
  if (!isExecutable(smuggler)) {
    throw new MincError(`marten pull needs ${smuggler}, the registry client, which is not installed (not built yet)`);
  }
  const store = new Store().ensure();
  if (o.name !== undefined) store.checkNameFor("image", o.name); // (before the download)
  store.cleanStaleStaging();
  const stage = store.makeStaging("pull");
  try {
    const layout = `${stage}/layout`;
    shown(`mkdir ${quote(layout)}`);
    fs.mkdirSync(layout);
    step(`Download ${ref} into ${layout} as an OCI image layout`);
    // Layers the store has already (by their ChainIDs) are not downloaded again.
    // Each layer is unpacked as soon as it is here, while the others download; the import takes those.
    const env: Env = {
      MINC_ARCH: o.arch,
      MINC_PULL_INSECURE: o.insecure ? "1" : undefined,
      MINC_PULL_USER: o.user,
      MINC_PULL_HAVE: store.images,
      MINC_PULL_UNPACK: "1",
    };
    const masked: Env = { ...env, MINC_PULL_USER: o.user?.replace(/:.*$/, ":***") };
    // What it prints (the manifest's digest) goes to stderr: marten pull prints the image's id.
    const s = await runBackend("minc-smuggler", [ref, layout], env, masked, true);
    if (s !== 0) return s;
    step(`Import it as ${name}`);
    return await runBackend("minc-farm", ["import", layout], {
      MINC_IMPORT_NAME: o.name,
      MINC_ARCH: o.arch,
      MINC_IMPORT_UNPACKED: "1",
    });
  } finally {
    removeTree(stage);
  }
}

function rename(cmd: "rename" | "renamei", id: string, name: string): number {
  checkName(name);
  return farm([cmd, id, name]);
}

start(() => {
  let status = 0;
  let pulled: Promise<number> | undefined; // (pull is the one command that works asynchronously)
  const str = (v: unknown): string => String(v);
  const opt = (v: unknown): string | undefined => (v === undefined ? undefined : String(v));
  yargs(process.argv.slice(2))
    .scriptName("marten")
    .version(VERSION)
    .strict()
    .parserConfiguration({ "parse-numbers": false, "parse-positional-numbers": false })
    .usage(
      "marten - manager of image archives and temporary containers\nUsage: marten [--debug] <command> [arguments...]",
    )
    .option("debug", { type: "boolean", describe: "Show each step and command on stderr" })
    .middleware((a) => {
      if (a.debug) process.env.MINC_DEBUG = "1";
    })
    .command(
      ["lc", "list"],
      "List containers",
      (y) => y.option("long", { alias: "l", type: "boolean", describe: "Show long ids" }),
      (a) => {
        status = list("lc", a.long);
      },
    )
    .command(
      ["li", "images"],
      "List images",
      (y) => y.option("long", { alias: "l", type: "boolean", describe: "Show long ids" }),
      (a) => {
        status = list("li", a.long);
      },
    )
    .command("rm <id>", "Remove a container", {}, (a) => {
      status = farm(["rm", str(a.id)]);
    })
    .command("rmi <id>", "Remove an image", {}, (a) => {
      status = farm(["rmi", str(a.id)]);
    })
    .command(
      "import <path>",
      "Import a directory, a docker save archive or an OCI image layout (tar or directory)",
      (y) =>
        y.option("name", { type: "string", describe: "Name the image" }).option("arch", {
          type: "string",
          describe: "Platform to take from a multi-platform image (default: the host's)",
        }),
      (a) => {
        status = importCmd(str(a.path), opt(a.name), opt(a.arch));
      },
    )
    .command(
      "pull <image>",
      "Pull [REGISTRY/]NAME[:TAG|@DIGEST] from a registry (Docker Hub by default)",
      (y) =>
        y
          .option("arch", { type: "string", describe: "Platform to pull (default: the host's)" })
          .option("insecure", { type: "boolean", describe: "Allow plain HTTP to the registry" })
          .option("user", { type: "string", describe: "USER:PASSWORD for the registry" })
          .option("name", { type: "string", describe: "Name the image (default: NAME[:TAG])" }),
      (a) => {
        pulled = pull(str(a.image), {
          arch: opt(a.arch),
          insecure: a.insecure as boolean | undefined,
          user: opt(a.user),
          name: opt(a.name),
        });
      },
    )
    .command("commit <id>", "Commit a container's changes to a new image", {}, (a) => {
      status = farm(["commit", str(a.id)]);
    })
    .command("rename <id> <name>", "Rename a container", {}, (a) => {
      status = rename("rename", str(a.id), str(a.name));
    })
    .command("renamei <id> <name>", "Rename an image", {}, (a) => {
      status = rename("renamei", str(a.id), str(a.name));
    })
    .command("tag <id> <name>", "Name an image (as renamei)", {}, (a) => {
      status = rename("renamei", str(a.id), str(a.name));
    })
    .demandCommand(1, "marten needs a command (see marten --help)")
    .alias("h", "help")
    .fail((msg, err) => {
      throw err instanceof MincError || err instanceof HandedOver ? err : usageError(err?.message ?? msg);
    })
    .parseSync();
  return pulled ?? status;
});
