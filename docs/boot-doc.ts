// docs/boot.md's trace excerpts: real `minc --debug` boots of the busybox
// rootfs, normalised (temp dir names, PIDs, the repo path, the host's name and
// addresses, leases) so that the same code prints the same excerpts on every
// run. docs/gen-boot.ts writes them into docs/boot.md (`make docs`);
// test/docs.test.ts checks that the document still matches the code.
//
// In the document, an excerpt is the block between
//   <!-- trace:RUN:SELECTOR -->  and  <!-- /trace -->
// RUN is one of BOOT_RUNS; SELECTOR is
//   phase-N          every section of phase N (all programs),
//   program-NAME     the sections headed by program NAME,
//   steps=A|B|...    the steps (comment lines and their "+ " lines) whose comments contain A or B ...
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { networkInterfaces, hostname } from "node:os";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const DOC_REPO = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/** The boots the document shows: name -> minc's options (before -r ROOTFS ps; --nopriv takes the rootfs itself). */
export const BOOT_RUNS: Record<string, string[]> = {
  plain: [],
  nopriv: ["--nopriv"],
  direct: ["--direct"],
  pivot: ["--pivot"],
  mem: ["--mem-limit", "64M"],
  dens: ["--net", "dens", "-p", "8080:80"],
  /** (not minc's: ferret run on a bundle of `ferret spec` with the rootfs, see ferretTrace) */
  ferret: [],
};

export interface BootEnv {
  repo: string;
  rootfs: string;
}

/** The busybox rootfs of the tests, built once by samples/scripts/busybox-rootfs.sh. */
export function bootRootfs(repo = DOC_REPO): string {
  const r = spawnSync(`${repo}/samples/scripts/busybox-rootfs.sh`, [`${repo}/test/.cache/rootfs`], {
    encoding: "utf8",
  });
  if (r.status !== 0) throw new Error(`busybox rootfs failed: ${r.stderr}`);
  return resolve(repo, r.stdout.trim());
}

function mincEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.XDG_RUNTIME_DIR;
  delete env.MINC_DEBUG;
  delete env.MINCS_DIR;
  env.TMPDIR = "/tmp"; // where --nopriv puts its working dir
  return env;
}

/** Boot once with --debug and return the raw trace (stderr). */
/** The host port of the dens run's -p, as the walkthrough shows it. */
const DOC_PORT = "8080";

/**
 * The --debug trace of one run. hostPort maps another host port than the
 * walkthrough's (a free one: 8080 may be taken on this host), and the trace
 * is given back as if it were 8080.
 */
export function rawTrace(run: string, e: BootEnv, hostPort?: number): string {
  const asShown = BOOT_RUNS[run];
  if (!asShown) throw new Error(`unknown run ${run}`);
  if (run === "ferret") return ferretTrace(e);
  const port = hostPort === undefined ? DOC_PORT : String(hostPort);
  const opts = asShown.map((o) => (o === `${DOC_PORT}:80` ? `${port}:80` : o));
  const minc = `${e.repo}/bin/minc`;
  if (run === "dens") {
    // The first dens container of a host makes the bridge and the shared
    // rules; a warm-up boot does that, so the excerpt is the same every time.
    spawnSync(minc, ["--net", "dens", "-r", e.rootfs, "true"], { env: mincEnv(), input: "", timeout: 60_000 });
  }
  const rootdir = opts.at(-1) === "--nopriv" ? [e.rootfs] : ["-r", e.rootfs];
  const r = spawnSync(minc, ["--debug", ...opts, ...rootdir, "ps"], {
    encoding: "utf8",
    env: mincEnv(),
    input: "",
    timeout: 60_000,
  });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`minc ${opts.join(" ")} failed (${r.status}):\n${r.stderr}`);
  if (port === DOC_PORT) return r.stderr;
  // (the port where the trace names it: PORT:80, --dport PORT, port PORT/tcp)
  return r.stderr.replace(new RegExp(`(?<![\\w.])${port}(?=:80\\b|/tcp\\b|\\s|$)`, "gm"), DOC_PORT);
}

/**
 * ferret --debug run of `ferret spec`'s bundle, the rootfs as its root and
 * ps as its process, in a temporary directory (its state dir too) and a
 * cgroup parent of its own: shown as <tmp> and /ferret-doc.
 */
function ferretTrace(e: BootEnv): string {
  const tmp = mkdtempSync("/tmp/ferret-doc-");
  try {
    const ferret = `${e.repo}/bin/ferret`;
    const bundle = `${tmp}/bundle`;
    mkdirSync(bundle);
    spawnSync(ferret, ["spec", "--bundle", bundle]);
    const config = JSON.parse(readFileSync(`${bundle}/config.json`, "utf8"));
    config.root.path = e.rootfs;
    config.process.args = ["ps"];
    config.linux.cgroupsPath = `/ferret-doc-${process.pid}/doc`;
    writeFileSync(`${bundle}/config.json`, JSON.stringify(config));
    const r = spawnSync(ferret, ["--debug", "--root", `${tmp}/state`, "run", "--bundle", bundle, "doc"], {
      encoding: "utf8",
      env: mincEnv(),
      input: "",
      timeout: 60_000,
    });
    if (r.status !== 0) throw new Error(`ferret run failed (${r.status}):\n${r.stderr}`);
    return r.stderr
      .split(tmp)
      .join("<tmp>")
      .replaceAll(`ferret-doc-${process.pid}`, "ferret-doc")
      .replace(/"pid":\d+,"starttime":"\d+"/g, '"pid":<pid>,"starttime":"<ticks>"')
      .replace(/"created":"[^"]+"/g, '"created":"<time>"')
      .replace(/^(\+ echo )[0-9,-]+( > \S+\/cpuset\.(cpus|mems))$/gm, "$1<the parent's>$2");
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

function hostAddresses(): string[] {
  return Object.values(networkInterfaces())
    .flat()
    .filter((a) => a && a.family === "IPv4" && !a.internal && !a.address.startsWith("192.168.139."))
    .map((a) => a!.address);
}

/** Replace what changes from run to run, or host to host, by placeholders. */
export function normalise(trace: string, e: BootEnv): string {
  let t = trace;
  t = t.split(e.rootfs).join("<rootfs>");
  t = t.split(e.repo).join("<repo>");
  t = t.replace(/\bminc\d+-XXXXXX\b/g, "minc<pid>-XXXXXX");
  t = t.replace(/\bminc\d+-[A-Za-z0-9]{6}\b/g, "minc<pid>-<random>");
  t = t.replace(/\bminc\d+\b/g, "minc<pid>");
  t = t.replace(/\bmincv[0-9a-f]{8}\b/g, "mincv<hash>");
  t = t.replace(/MINC_PID=\d+/g, "MINC_PID=<pid>");
  // The masks: only the paths this host's kernel has (/proc/acpi, /proc/kcore, ... depend on its config).
  t = t.replace(
    /^(# Hide what tells of the host's [^:]*: )(\/proc|\/sys)\/.*(\n\+ mount (-t tmpfs -o ro,nosuid,nodev,noexec tmpfs|--bind \/dev\/null) \S+)*/gm,
    "$1the masked paths under $2 this host has (one mount each)",
  );
  // (and so how many mounts one mount -a makes)
  t = t.replace(/^# \(\d+ of the mounts above are made together/gm, "# (<n> of the mounts above are made together");
  // The compiled seccomp filter: a long line of base64, the same on every host of the same arch.
  t = t.replace(/^\+ echo [A-Za-z0-9+/=]{80,} \| base64 -d/gm, "+ echo <the filter's bytes, base64> | base64 -d");
  t = t.replace(/^\+ echo \d+ > (\S+\/pid)$/gm, "+ echo <pid> > $1");
  t = t.replace(/MINC_ARCH=\S+/g, "MINC_ARCH=<arch>");
  t = t.replace(/\b192\.168\.139\.(?!0\b|1\b|255\b)\d+\b/g, "192.168.139.<lease>");
  t = t.replace(/nameserver [0-9a-fA-F.:]+/g, "nameserver <host-resolver>");
  for (const a of hostAddresses()) t = t.replace(new RegExp(`(?<![\\d.])${escapeRe(a)}(?![\\d.])`, "g"), "<host-ip>");
  const host = hostname();
  t = t.replace(new RegExp(`\\t${escapeRe(host)}'`, "g"), "\t<hostname>'");
  // The dens bridge's address is one of the host's too, while the bridge exists.
  t = t.replace(/'192\.168\.139\.1\t<hostname>'/g, "'<host-ip>\t<hostname>'");
  // A host with several addresses names itself once per address: show one.
  t = t.replace(/( '<host-ip>\t<hostname>')+/g, "$1");
  return t;
}

export interface Section {
  program: string;
  phase: number;
  lines: string[];
}

/** Split a trace at its "# ==== PROGRAM: phase N/5: ..." headers (lines before the first go nowhere). */
export function sections(trace: string): Section[] {
  const out: Section[] = [];
  for (const line of trace.split("\n")) {
    if (line === "") continue;
    const m = /^# ==== (\S+): phase (\d)\/5/.exec(line);
    if (m) out.push({ program: m[1], phase: Number(m[2]), lines: [line] });
    else out.at(-1)?.lines.push(line);
  }
  return out;
}

/** Steps: a comment line, its follow-up comments ("# (...)", "# ... "), and the "+ " lines after them. */
function steps(trace: string): string[][] {
  const out: string[][] = [];
  let last = "";
  for (const line of trace.split("\n")) {
    if (line === "" || line.startsWith("# ==== ")) {
      last = "";
      continue;
    }
    const comment = line.startsWith("# ");
    const followUp = /^# (\(|\.\.\. )/.test(line) && last.startsWith("# ");
    if (comment && !followUp) out.push([]);
    if (out.length === 0) out.push([]);
    out.at(-1)!.push(line);
    last = line;
  }
  return out;
}

export function select(trace: string, selector: string): string {
  let m: RegExpExecArray | null;
  if ((m = /^phase-(\d)$/.exec(selector))) {
    const n = Number(m[1]);
    return sections(trace)
      .filter((s) => s.phase === n)
      .flatMap((s) => s.lines)
      .join("\n");
  }
  if ((m = /^program-(\S+)$/.exec(selector))) {
    const name = m[1];
    return sections(trace)
      .filter((s) => s.program === name)
      .flatMap((s) => s.lines)
      .join("\n");
  }
  if ((m = /^steps=(.+)$/.exec(selector))) {
    const words = m[1].split("|");
    return steps(trace)
      .filter((st) => st.some((l) => l.startsWith("# ") && words.some((w) => l.includes(w))))
      .flat()
      .join("\n");
  }
  throw new Error(`unknown trace selector: ${selector}`);
}

const BLOCK = /<!-- trace:(\w+):(.+?) -->\n[\s\S]*?<!-- \/trace -->/g;

/** The runs a document's excerpts need. */
export function runsOf(doc: string): string[] {
  return [...new Set([...doc.matchAll(BLOCK)].map((m) => m[1]))];
}

/** The document with every excerpt block filled from the (normalised) traces. */
export function fill(doc: string, traces: Record<string, string>): string {
  return doc.replace(BLOCK, (_all, run: string, selector: string) => {
    const trace = traces[run];
    if (trace === undefined) throw new Error(`no trace for run ${run}`);
    const text = select(trace, selector);
    if (text === "") throw new Error(`trace:${run}:${selector} selects nothing`);
    return `<!-- trace:${run}:${selector} -->\n\`\`\`\n${text}\n\`\`\`\n<!-- /trace -->`;
  });
}

/** Boot every run the document needs and fill it. */
export function regenerate(doc: string, repo = DOC_REPO): string {
  const e: BootEnv = { repo, rootfs: bootRootfs(repo) };
  const traces: Record<string, string> = {};
  for (const run of runsOf(doc)) traces[run] = normalise(rawTrace(run, e), e);
  return fill(doc, traces);
}

/** A short diff-like account of the excerpts that differ, or "" if none. */
export function excerptDiff(have: string, want: string): string {
  const blocks = (d: string) => new Map([...d.matchAll(BLOCK)].map((m) => [`${m[1]}:${m[2]}`, m[0]]));
  const a = blocks(have);
  const b = blocks(want);
  const out: string[] = [];
  for (const [key, wantBlock] of b) {
    const haveBlock = a.get(key);
    if (haveBlock === wantBlock) continue;
    const h = (haveBlock ?? "").split("\n");
    const w = wantBlock.split("\n");
    out.push(`trace:${key} differs:`);
    const hs = new Set(h);
    const ws = new Set(w);
    for (const l of h) if (!ws.has(l)) out.push(`- ${l}`);
    for (const l of w) if (!hs.has(l)) out.push(`+ ${l}`);
  }
  return out.join("\n");
}
