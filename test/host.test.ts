// The boot's steps (phases 4 and 5: minc-core, minc-coat, minc-leash) give
// the same operations to either executor (lib/core/host.ts) for the same
// plan. Run here without booting and without root: once against the
// executor that writes the boot down (lib/boot/bootscript.ts), once against
// a stand-in for the live one that mounts nothing but sees the root as it
// would be mounted (lib/boot/rootview.ts), each wrapped in a recorder.
import assert from "node:assert/strict";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { registerHooks } from "node:module";
import { after, describe, test } from "node:test";
import { parseMount, writeDown } from "../lib/boot/bootscript.ts";
import { closeView, viewMount, viewRemove, viewRoot } from "../lib/boot/rootview.ts";
import { HandedOver } from "../lib/core/fail.ts";
import { Host, lineOf, type Executor, type Op } from "../lib/core/host.ts";
import { findInPath, liveExecutor, mainHere } from "../lib/core/run.ts";
import { settingsEnv, type Settings } from "../lib/core/settings.ts";

// libexec/ is CommonJS for its bundles (libexec/package.json): its .ts, imported here, are modules.
registerHooks({
  load(url, context, next) {
    const loaded = next(url, context);
    return /\/libexec\/minc-[a-z]+\.ts$/.test(url) ? { ...loaded, format: "module-typescript" } : loaded;
  },
});
const { main: core } = await import("../libexec/minc-core.ts");

const scratch = mkdtempSync("/tmp/minc-test-host-");
after(() => rmSync(scratch, { recursive: true, force: true }));

/** A small rootfs: a shell for capsh, a user, the usual mountpoints. */
const rootfs = `${scratch}/rootfs`;
for (const d of ["bin", "etc", "dev", "proc", "sys", "tmp", "data"]) mkdirSync(`${rootfs}/${d}`, { recursive: true });
writeFileSync(`${rootfs}/bin/sh`, "");
chmodSync(`${rootfs}/bin/sh`, 0o755);
writeFileSync(`${rootfs}/etc/passwd`, "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n");
writeFileSync(`${rootfs}/etc/mtab`, "");
writeFileSync(`${scratch}/qemu-aarch64-static`, "");
mkdirSync(`${scratch}/shared`);

/** Each operation as a line (the environment of an exec left out: each executor keeps its own). */
function recording(inner: Executor, ops: string[]): Executor {
  return {
    ahead: inner.ahead,
    traceOf: (op) => inner.traceOf(op),
    together(body): void {
      ops.push("together {");
      inner.together(body);
      ops.push("}");
    },
    do(op, host): void {
      const { env: _, ...shown } = op as Op & { env?: unknown };
      ops.push(JSON.stringify(shown));
      inner.do(op, host);
    },
  };
}

/**
 * What the live executor would be told, without doing it: the root is seen
 * as mounted, by its view. Only the working dir's own files are made (as
 * live; the written-down executor makes them at once too).
 */
function standIn(tmpdir: string): Executor {
  const ours = (path: string): boolean => path.startsWith(`${tmpdir}/`) && !path.startsWith(`${tmpdir}/root/`);
  return {
    ahead: false,
    traceOf: lineOf,
    together: (body) => body(),
    do: (op, host) => pretend(op, host, ours),
  };
}

function pretend(op: Op, host: Host, ours: (path: string) => boolean): void {
  switch (op.op) {
    case "run":
    case "exec": {
      const file = findInPath(op.argv[0], op.op === "exec" ? op.env.PATH : process.env.PATH);
      if (file && mainHere(file)) return liveExecutor.do(op, host); // minc-coat, minc-leash: their steps too
      if (op.op === "exec") throw new HandedOver(); // (the command would replace us)
      return;
    }
    case "rootWillBe":
      return viewRoot(op.root, [...op.layers]);
    case "mount": {
      const m = parseMount(op.args);
      if (m) viewMount(m.target, m.options.includes("bind") ? m.source : undefined);
      return;
    }
    case "removeFile":
      return viewRemove(op.path);
    case "export":
      process.env[op.name] = op.value;
      return;
    case "mkdirs":
      if (op.dirs.every(ours)) liveExecutor.do(op, host);
      return;
    case "touch":
    case "symlink":
    case "writeFile":
    case "removeTree":
      if (ours(op.path)) liveExecutor.do(op, host);
      return;
    default:
      return;
  }
}

/** Phases 4 and 5 with these settings, against executor; the operations it was given. */
function boot(settings: Partial<Settings>, executor: (tmpdir: string) => Executor & { finish?(): void }): string[] {
  const tmpdir = `${scratch}/work`;
  rmSync(tmpdir, { recursive: true, force: true });
  mkdirSync(tmpdir);
  const saved = { ...process.env };
  const env = { ...saved, ...settingsEnv({ MINC_TMPDIR: tmpdir, MINC_BASEDIR: rootfs, ...settings }) };
  Object.assign(process.env, env);
  const ops: string[] = [];
  const inner = executor(tmpdir);
  try {
    assert.throws(
      () => core(["/bin/true"], env, new Host(recording(inner, ops))),
      (e) => e instanceof HandedOver && e.status === 0,
    );
    inner.finish?.();
  } finally {
    closeView();
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
  }
  return ops.map((line) => line.replaceAll(tmpdir, "TMPDIR"));
}

/** Option sets, and an operation that shows each took effect. */
const PLANS: Record<string, [Partial<Settings>, RegExp]> = {
  plain: [{}, /"op":"mount","args":\["-t","tmpfs","-o","nosuid,mode=0755","tmpfs","TMPDIR\/root\/dev"\]/],
  "--name": [{ MINC_UTSNAME: "box" }, /"path":"\/proc\/sys\/kernel\/hostname","content":"box\\n"/],
  "-b": [
    { MINC_RWBIND: [`${scratch}/shared:/data`, `${scratch}/qemu-aarch64-static:/etc/extra`] },
    /"op":"touch","path":"TMPDIR\/root\/etc\/extra"/,
  ],
  "--usedev": [{ MINC_USE_DEV: true }, /"devtmpfs"/],
  "--nocaps": [{ MINC_DROPCAPS: "cap_kill" }, /--drop=[^"]*cap_sys_chroot[^"]*cap_kill"/],
  "--privileged --nocaps": [
    { MINC_PRIVILEGED: true, MINC_DROPCAPS: "cap_net_raw" },
    /"--drop=cap_net_raw,cap_sys_chroot"/,
  ],
  "--user": [{ MINC_USERSPEC: "alice" }, /--uid=1000/],
  "-n raw": [{ MINC_NETNS: "minc1", MINC_NETMODE: "raw" }, /capsh/], // (phase 3 enters the network: 4 and 5 are as plain)
  "--cross": [
    { MINC_CROSS_QEMU: `${scratch}/qemu-aarch64-static`, MINC_ARCH: "aarch64" },
    /"--bind","\/tmp\/minc-test-host-\w+\/qemu-aarch64-static"/,
  ],
};

describe("the boot's steps give both executors the same operations", () => {
  for (const [name, [settings, shows]] of Object.entries(PLANS)) {
    test(name, () => {
      const live = boot(settings, standIn);
      const written = boot(settings, (tmpdir) =>
        writeDown(`${tmpdir}/minc-core.sh`, `${tmpdir}/root`, { tracing: false, remake: true }),
      );
      assert.match(live.join("\n"), shows);
      assert.deepEqual(written, live);
    });
  }

  test("the written-down executor writes them as the script", () => {
    const dir = `${scratch}/work`;
    boot({ MINC_UTSNAME: "box" }, (tmpdir) =>
      writeDown(`${tmpdir}/minc-core.sh`, `${tmpdir}/root`, { tracing: false, remake: true }),
    );
    const script = readFileSync(`${dir}/minc-core.sh`, "utf8");
    assert.match(script, /^mount -a -T /m);
    assert.match(script, /\/proc\/sys\/kernel\/hostname/);
    assert.match(script, /^exec \S+\/env --default-signal=INT,QUIT \S*perl -e .* \S*capsh .*--chroot=/m);
  });
});
