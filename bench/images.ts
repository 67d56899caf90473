// bench/images.ts: the image store's speed against plain tools, in one run.
//
//   node bench/images.ts [-n RUNS]     (root; a local docker-registry and skopeo)
//
// 1. `marten import DIR` of a ~200 MB rootfs against `cp -a DIR`, and against
//    the shell MINCS's marten if MINCS_SHELL_DIR names a checkout of it. Two
//    floors against `cp -a` too: a Node program that only runs `cp -a`, and
//    the directory's id (its sha256, lib/store/tree.ts) computed alone.
// 2. `marten pull` of a ~200 MB, 5-layer image from a registry on 127.0.0.1
//    against `skopeo copy docker://... dir:D` followed by `tar -xzf` of each
//    layer (what a pull must at least do).
// Each is timed RUNS times (default 3), each run into a fresh store or
// directory; the medians and their ratio are printed. No thresholds.
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { treeDigest } from "../lib/store/tree.ts";
import { buildImage, cannotRunRegistry, push, startRegistry, stopAll } from "../test/registry-fixture.ts";

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const runs = Number(process.argv[process.argv.indexOf("-n") + 1]) || 3;
const MB = 1024 * 1024;

function sh(argv: string[], env: NodeJS.ProcessEnv = process.env): void {
  const r = spawnSync(argv[0], argv.slice(1), { stdio: ["ignore", "ignore", "pipe"], env, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`${argv.join(" ")}: ${r.stderr}`);
}

function timed(fn: () => void): number {
  const t = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t) / 1e6;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function report(name: string, ours: number[], base: number[], baseName: string, label = "ours"): void {
  const o = median(ours),
    b = median(base);
  console.log(
    `${name.padEnd(22)} ${label} ${o.toFixed(0).padStart(6)} ms   ${baseName} ${b.toFixed(0).padStart(6)} ms   ratio ${(o / b).toFixed(2)}x`,
  );
}

/** Files of random (incompressible) data: the worst case for every tool alike. */
function randomFiles(count: number, size: number): Record<string, Buffer> {
  const files: Record<string, Buffer> = {};
  for (let i = 0; i < count; i++) files[`data/f${i}`] = randomBytes(size);
  return files;
}

/** A Node program that only runs cp -a: Node's start plus the copy. */
const NODE_CP = `require("node:child_process").spawnSync("cp", ["-a", process.argv[1], process.argv[2]])`;

function benchImport(work: string): void {
  const rootfs = spawnSync(`${REPO}/samples/scripts/busybox-rootfs.sh`, [`${REPO}/test/.cache/rootfs`], {
    encoding: "utf8",
  }).stdout.trim();
  const src = `${work}/rootfs`;
  cpSync(rootfs, src, { recursive: true, verbatimSymlinks: true });
  mkdirSync(`${src}/data`);
  for (const [name, data] of Object.entries(randomFiles(50, 4 * MB))) writeFileSync(`${src}/${name}`, data);
  const shellMarten = process.env.MINCS_SHELL_DIR ? `${process.env.MINCS_SHELL_DIR}/marten` : undefined;
  const ours: number[] = [],
    cp: number[] = [],
    shell: number[] = [],
    nodeCp: number[] = [],
    digest: number[] = [];
  // Each starts with no dirty page of the one before (sync, untimed): the time of a
  // 200 MB copy on ext4 otherwise varies from one to four times with the writeback.
  const intoStore = (marten: string, times: number[]): void => {
    const store = mkdtempSync(`${work}/store-`);
    sh(["sync"]);
    times.push(timed(() => sh([marten, "import", src], { ...process.env, MINCS_DIR: store })));
    rmSync(store, { recursive: true });
  };
  for (let i = 0; i < runs; i++) {
    intoStore(`${REPO}/bin/marten`, ours);
    const dest = `${work}/copy`;
    sh(["sync"]);
    cp.push(timed(() => sh(["cp", "-a", src, dest])));
    rmSync(dest, { recursive: true });
    if (shellMarten) intoStore(shellMarten, shell);
    // Two floors: the least any Node importer that copies with cp -a can take
    // (Node's own start, then the same copy), and the content id alone.
    sh(["sync"]);
    nodeCp.push(timed(() => sh([process.execPath, "-e", NODE_CP, src, dest])));
    rmSync(dest, { recursive: true });
    digest.push(timed(() => treeDigest(src)));
  }
  report("import DIR (200 MB)", ours, cp, "cp -a");
  if (shellMarten) report("import DIR (200 MB)", ours, shell, "shell MINCS");
  report("import DIR (200 MB)", nodeCp, cp, "cp -a", "floor 1: node running cp -a");
  report("import DIR (200 MB)", digest, cp, "cp -a", "floor 2: the id alone");
}

async function benchPull(work: string): Promise<void> {
  const registry = await startRegistry();
  const layout = `${work}/layout`;
  const layers = Array.from({ length: 5 }, (_, l) => {
    const files = randomFiles(10, 4 * MB);
    return Object.fromEntries(Object.entries(files).map(([k, v]) => [k.replace("data/", `layer${l}/`), v]));
  });
  buildImage(layout, "big", { layers });
  const ref = `${registry.host}/library/big:big`;
  await push(layout, "big", ref);
  const ours: number[] = [],
    base: number[] = [];
  for (let i = 0; i < runs; i++) {
    const store = mkdtempSync(`${work}/store-`);
    ours.push(timed(() => sh([`${REPO}/bin/marten`, "pull", ref], { ...process.env, MINCS_DIR: store })));
    rmSync(store, { recursive: true });
    const dir = `${work}/skopeo`;
    base.push(
      timed(() => {
        sh(["skopeo", "copy", "--quiet", "--src-tls-verify=false", `docker://${ref}`, `dir:${dir}`]);
        const manifest = JSON.parse(readFileSync(`${dir}/manifest.json`, "utf8")) as { layers: { digest: string }[] };
        const root = `${work}/unpacked`;
        mkdirSync(root);
        for (const l of manifest.layers) sh(["tar", "-xzf", `${dir}/${l.digest.slice(7)}`, "-C", root]);
      }),
    );
    rmSync(dir, { recursive: true });
    rmSync(`${work}/unpacked`, { recursive: true });
  }
  report("pull (5 x 40 MB)", ours, base, "skopeo+tar");
}

const why = process.getuid?.() !== 0 ? "needs root" : cannotRunRegistry();
if (why) {
  console.log(`bench/images.ts: skipped (${why})`);
} else {
  const work = mkdtempSync("/tmp/minc-bench-images-");
  try {
    console.log(`${runs} runs each, medians`);
    benchImport(work);
    await benchPull(work);
  } finally {
    await stopAll();
    for (const d of readdirSync(work)) rmSync(`${work}/${d}`, { recursive: true, force: true });
    rmSync(work, { recursive: true, force: true });
  }
}
