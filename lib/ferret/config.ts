// A bundle's config.json (the OCI runtime spec), checked before anything
// touches the filesystem: every field ferret applies is checked here, and
// every field that confines the container and that ferret cannot apply is
// refused with one line naming it, never ignored.
import { existsSync, readFileSync, statSync } from "node:fs";
import { isAbsolute, resolve } from "node:path";
import { usageError } from "../core/fail.ts";
import { CAPABILITIES, capName } from "../confine/caps.ts";
import { checkProfile, type SeccompProfile } from "../confine/seccomp.ts";

export interface Mount {
  destination: string;
  type: string;
  source: string;
  options: string[];
}

export interface Namespace {
  type: "pid" | "network" | "mount" | "ipc" | "uts" | "cgroup" | "user" | "time";
  path?: string;
}

export interface Capabilities {
  bounding: string[];
  effective: string[];
  permitted: string[];
  inheritable: string[];
  ambient: string[];
}

export interface Rlimit {
  type: string;
  soft: bigint;
  hard: bigint;
}

export interface Device {
  path: string;
  type: "c" | "b" | "u" | "p";
  major: number;
  minor: number;
  fileMode: number;
  uid: number;
  gid: number;
}

export interface DeviceRule {
  allow: boolean;
  type: string;
  major: number | undefined;
  minor: number | undefined;
  access: string;
}

export interface Resources {
  memoryLimit?: bigint;
  memorySwap?: bigint;
  memoryReservation?: bigint;
  /** Kernel memory limits: cgroup v1 kernels before 6.x; later kernels charge it to the memory limit. */
  memoryKernel?: bigint;
  memoryKernelTCP?: bigint;
  memorySwappiness?: number;
  disableOOMKiller: boolean;
  memoryUseHierarchy?: boolean;
  cpuShares?: number;
  cpuQuota?: number;
  cpuPeriod?: number;
  cpusetCpus?: string;
  cpusetMems?: string;
  pidsLimit?: number;
  devices: DeviceRule[];
}

export interface IdMapping {
  containerID: number;
  hostID: number;
  size: number;
}

export interface Hooks {
  [when: string]: { path: string; args: string[]; env: string[]; timeout?: number }[];
}

/** What ferret does with a bundle: config.json's fields, checked and typed. */
export interface Config {
  ociVersion: string;
  bundle: string;
  root: { path: string; readonly: boolean };
  process: {
    terminal: boolean;
    args: string[];
    env: string[];
    cwd: string;
    uid: number;
    gid: number;
    additionalGids: number[];
    umask: number | undefined;
    capabilities: Capabilities;
    rlimits: Rlimit[];
    noNewPrivileges: boolean;
    oomScoreAdj: number | undefined;
  };
  hostname: string | undefined;
  mounts: Mount[];
  namespaces: Namespace[];
  /** A new user namespace's id mappings. */
  uidMap: IdMapping | undefined;
  gidMap: IdMapping | undefined;
  maskedPaths: string[];
  readonlyPaths: string[];
  devices: Device[];
  resources: Resources;
  cgroupsPath: string | undefined;
  sysctl: Record<string, string>;
  rootfsPropagation: string | undefined;
  seccomp: SeccompProfile | undefined;
  hooks: Hooks;
  annotations: Record<string, string>;
}

type Json = Record<string, unknown>;

function fail(where: string, what: string): never {
  throw usageError(`config.json: ${where}: ${what}`);
}

function obj(x: unknown, where: string): Json {
  if (typeof x !== "object" || x === null || Array.isArray(x)) fail(where, "must be an object");
  return x as Json;
}

function str(x: unknown, where: string): string {
  if (typeof x !== "string") fail(where, "must be a string");
  if (x.includes("\0")) fail(where, "holds a NUL byte");
  return x;
}

function strs(x: unknown, where: string): string[] {
  if (x === undefined) return [];
  if (!Array.isArray(x)) fail(where, "must be an array of strings");
  return x.map((v, i) => str(v, `${where}[${i}]`));
}

function int(x: unknown, where: string, min = 0, max = 2 ** 32 - 1): number {
  if (typeof x !== "number" || !Number.isInteger(x) || x < min || x > max) {
    fail(where, `must be an integer from ${min} to ${max}`);
  }
  return x;
}

function bool(x: unknown, where: string): boolean {
  if (x === undefined) return false;
  if (typeof x !== "boolean") fail(where, "must be true or false");
  return x;
}

/** What config.json may hold that ferret does not apply: refused when set, as each would confine or change the container. */
function refuseUnknown(o: Json, known: readonly string[], where: string): void {
  for (const k of Object.keys(o)) {
    if (!known.includes(k) && o[k] !== undefined && o[k] !== null) fail(`${where}.${k}`, "is not supported by ferret");
  }
}

/** An absolute path with no "..", no NUL and none of the characters the init's plan cannot carry. */
function absPath(x: unknown, where: string): string {
  const p = str(x, where);
  if (!p.startsWith("/")) fail(where, `${p} is not an absolute path`);
  if (p.split("/").includes("..")) fail(where, `${p} has a ".." in it`);
  if (/[\t\n]/.test(p)) fail(where, "has a tab or newline in it");
  return p;
}

function capabilities(x: unknown): Capabilities {
  const o = x === undefined ? {} : obj(x, "process.capabilities");
  refuseUnknown(o, ["bounding", "effective", "permitted", "inheritable", "ambient"], "process.capabilities");
  const set = (k: keyof Capabilities): string[] =>
    strs(o[k], `process.capabilities.${k}`).map((c, i) => {
      const name = capName(c);
      if (!(CAPABILITIES as readonly string[]).includes(name))
        fail(`process.capabilities.${k}[${i}]`, `unknown capability ${c}`);
      return name;
    });
  const caps = {
    bounding: set("bounding"),
    effective: set("effective"),
    permitted: set("permitted"),
    inheritable: set("inheritable"),
    ambient: set("ambient"),
  };
  for (const c of caps.ambient) {
    // (the kernel raises an ambient capability only when the process may inherit it and has it)
    if (!caps.inheritable.includes(c) || !caps.permitted.includes(c)) {
      fail("process.capabilities.ambient", `${c} must be in inheritable and permitted too`);
    }
  }
  return caps;
}

/** The resources ferret's cgroup code applies; any other is refused (it would limit the container). */
function resources(x: unknown): Resources {
  const o = x === undefined ? {} : obj(x, "linux.resources");
  refuseUnknown(o, ["memory", "cpu", "pids", "devices"], "linux.resources");
  const memory = o.memory === undefined ? {} : obj(o.memory, "linux.resources.memory");
  refuseUnknown(
    memory,
    ["limit", "swap", "reservation", "kernel", "kernelTCP", "swappiness", "disableOOMKiller", "useHierarchy"],
    "linux.resources.memory",
  );
  const cpu = o.cpu === undefined ? {} : obj(o.cpu, "linux.resources.cpu");
  refuseUnknown(cpu, ["shares", "quota", "period", "cpus", "mems"], "linux.resources.cpu");
  const pids = o.pids === undefined ? {} : obj(o.pids, "linux.resources.pids");
  refuseUnknown(pids, ["limit"], "linux.resources.pids");
  const big = (v: unknown, where: string): bigint | undefined => {
    if (v === undefined) return undefined;
    if (typeof v !== "number" || !Number.isInteger(v) || v < -1) fail(where, "must be an integer, -1 or more");
    return BigInt(v);
  };
  const devices = (o.devices === undefined ? [] : (o.devices as unknown[])).map((d, i) => {
    const where = `linux.resources.devices[${i}]`;
    const r = obj(d, where);
    refuseUnknown(r, ["allow", "type", "major", "minor", "access"], where);
    const type = r.type === undefined ? "a" : str(r.type, `${where}.type`);
    if (!["a", "b", "c"].includes(type)) fail(`${where}.type`, `${type} is not a, b or c`);
    const access = r.access === undefined ? "rwm" : str(r.access, `${where}.access`);
    if (!/^[rwm]{1,3}$/.test(access)) fail(`${where}.access`, `${access} is not some of r, w, m`);
    const num = (v: unknown, k: string): number | undefined =>
      v === undefined || v === -1 ? undefined : int(v, `${where}.${k}`);
    return {
      allow: bool(r.allow, `${where}.allow`),
      type,
      major: num(r.major, "major"),
      minor: num(r.minor, "minor"),
      access,
    };
  });
  if (!Array.isArray(o.devices ?? [])) fail("linux.resources.devices", "must be an array");
  const cpuset = (v: unknown, where: string): string | undefined => {
    if (v === undefined) return undefined;
    const s = str(v, where);
    if (!/^[0-9,-]*$/.test(s)) fail(where, `${s} is not a list of numbers and ranges`);
    return s || undefined;
  };
  return {
    memoryLimit: big(memory.limit, "linux.resources.memory.limit"),
    memorySwap: big(memory.swap, "linux.resources.memory.swap"),
    memoryReservation: big(memory.reservation, "linux.resources.memory.reservation"),
    memoryKernel: big(memory.kernel, "linux.resources.memory.kernel"),
    memoryKernelTCP: big(memory.kernelTCP, "linux.resources.memory.kernelTCP"),
    memorySwappiness:
      memory.swappiness === undefined ? undefined : int(memory.swappiness, "linux.resources.memory.swappiness", 0, 100),
    disableOOMKiller: bool(memory.disableOOMKiller, "linux.resources.memory.disableOOMKiller"),
    memoryUseHierarchy:
      memory.useHierarchy === undefined ? undefined : bool(memory.useHierarchy, "linux.resources.memory.useHierarchy"),
    cpuShares: cpu.shares === undefined ? undefined : int(cpu.shares, "linux.resources.cpu.shares", 2, 262144),
    cpuQuota: cpu.quota === undefined ? undefined : int(cpu.quota, "linux.resources.cpu.quota", -1, 2 ** 53),
    cpuPeriod: cpu.period === undefined ? undefined : int(cpu.period, "linux.resources.cpu.period", 1000, 1000000),
    cpusetCpus: cpuset(cpu.cpus, "linux.resources.cpu.cpus"),
    cpusetMems: cpuset(cpu.mems, "linux.resources.cpu.mems"),
    pidsLimit: pids.limit === undefined ? undefined : int(pids.limit, "linux.resources.pids.limit", -1, 2 ** 31),
    devices,
  };
}

const RLIMITS = [
  "RLIMIT_CPU",
  "RLIMIT_FSIZE",
  "RLIMIT_DATA",
  "RLIMIT_STACK",
  "RLIMIT_CORE",
  "RLIMIT_RSS",
  "RLIMIT_NPROC",
  "RLIMIT_NOFILE",
  "RLIMIT_MEMLOCK",
  "RLIMIT_AS",
  "RLIMIT_LOCKS",
  "RLIMIT_SIGPENDING",
  "RLIMIT_MSGQUEUE",
  "RLIMIT_NICE",
  "RLIMIT_RTPRIO",
  "RLIMIT_RTTIME",
];

/** The resource's number, as prlimit64 takes it. */
export function rlimitNumber(type: string): number {
  return RLIMITS.indexOf(type);
}

function rlimits(x: unknown): Rlimit[] {
  if (x === undefined) return [];
  if (!Array.isArray(x)) fail("process.rlimits", "must be an array");
  return x.map((r, i) => {
    const where = `process.rlimits[${i}]`;
    const o = obj(r, where);
    const type = str(o.type, `${where}.type`);
    if (!RLIMITS.includes(type)) fail(`${where}.type`, `unknown limit ${type}`);
    const n = (v: unknown, k: string): bigint => {
      if (typeof v !== "number" || v < 0 || !Number.isInteger(v))
        fail(`${where}.${k}`, "must be a non-negative integer");
      return v >= 2 ** 63 ? 2n ** 64n - 1n : BigInt(v);
    };
    return { type, soft: n(o.soft, "soft"), hard: n(o.hard, "hard") };
  });
}

const NAMESPACES = ["pid", "network", "mount", "ipc", "uts", "cgroup", "user", "time"];

function namespaces(x: unknown): Namespace[] {
  if (x === undefined) return [];
  if (!Array.isArray(x)) fail("linux.namespaces", "must be an array");
  const seen = new Set<string>();
  return x.map((n, i) => {
    const where = `linux.namespaces[${i}]`;
    const o = obj(n, where);
    refuseUnknown(o, ["type", "path"], where);
    const type = str(o.type, `${where}.type`);
    if (!NAMESPACES.includes(type)) fail(`${where}.type`, `unknown namespace ${type}`);
    if (seen.has(type)) fail(`${where}.type`, `${type} is given twice`);
    seen.add(type);
    if (type === "time") fail(`${where}.type`, "a time namespace is not supported by ferret yet");
    if (type === "user" && o.path) fail(`${where}.path`, "joining a user namespace is not supported by ferret yet");
    const path = o.path === undefined || o.path === "" ? undefined : absPath(o.path, `${where}.path`);
    if (path && !existsSync(path)) fail(`${where}.path`, `${path} does not exist`);
    return { type: type as Namespace["type"], path };
  });
}

/**
 * A new user namespace's mapping (unshare --map-users takes one range):
 * container ids from containerID, host ids from hostID, size of them.
 */
function idMapping(x: unknown, where: string, newUser: boolean): IdMapping | undefined {
  const list = x === undefined ? [] : x;
  if (!Array.isArray(list)) fail(where, "must be an array");
  if (!newUser) {
    if (list.length > 0) fail(where, "needs a new user namespace (linux.namespaces)");
    return undefined;
  }
  if (list.length !== 1) fail(where, "ferret takes exactly one range for a new user namespace");
  const o = obj(list[0], `${where}[0]`);
  refuseUnknown(o, ["containerID", "hostID", "size"], `${where}[0]`);
  return {
    containerID: int(o.containerID, `${where}[0].containerID`),
    hostID: int(o.hostID, `${where}[0].hostID`),
    size: int(o.size, `${where}[0].size`, 1),
  };
}

function mounts(x: unknown): Mount[] {
  if (x === undefined) return [];
  if (!Array.isArray(x)) fail("mounts", "must be an array");
  return x.map((m, i) => {
    const where = `mounts[${i}]`;
    const o = obj(m, where);
    refuseUnknown(o, ["destination", "type", "source", "options", "uidMappings", "gidMappings"], where);
    if (o.uidMappings || o.gidMappings) fail(`${where}.uidMappings`, "idmapped mounts are not supported by ferret");
    const options = strs(o.options, `${where}.options`);
    for (const opt of options)
      if (/[\s,]/.test(opt)) fail(`${where}.options`, `${JSON.stringify(opt)} has a blank or comma`);
    const bind = options.includes("bind") || options.includes("rbind");
    const type = o.type === undefined ? (bind ? "bind" : "") : str(o.type, `${where}.type`);
    if (!type) fail(`${where}.type`, "is missing");
    if (!/^[a-z0-9._-]+$/.test(type)) fail(`${where}.type`, `${type} is not a filesystem type`);
    const source = o.source === undefined ? type : str(o.source, `${where}.source`);
    if (/[\t\n]/.test(source)) fail(`${where}.source`, "has a tab or newline in it");
    return { destination: absPath(o.destination, `${where}.destination`), type, source, options };
  });
}

function devices(x: unknown): Device[] {
  if (x === undefined) return [];
  if (!Array.isArray(x)) fail("linux.devices", "must be an array");
  return x.map((d, i) => {
    const where = `linux.devices[${i}]`;
    const o = obj(d, where);
    refuseUnknown(o, ["path", "type", "major", "minor", "fileMode", "uid", "gid"], where);
    const type = str(o.type, `${where}.type`);
    if (!["c", "b", "u", "p"].includes(type)) fail(`${where}.type`, `${type} is not c, b, u or p`);
    const path = absPath(o.path, `${where}.path`);
    if (!path.startsWith("/dev/")) fail(`${where}.path`, `${path} is not under /dev`);
    return {
      path,
      type: type as Device["type"],
      major: type === "p" ? 0 : int(o.major, `${where}.major`),
      minor: type === "p" ? 0 : int(o.minor, `${where}.minor`),
      fileMode: o.fileMode === undefined ? 0o666 : int(o.fileMode, `${where}.fileMode`, 0, 0o7777),
      uid: o.uid === undefined ? 0 : int(o.uid, `${where}.uid`),
      gid: o.gid === undefined ? 0 : int(o.gid, `${where}.gid`),
    };
  });
}

/** The sysctls a container may set: those of its own namespaces (as runc allows them). */
function sysctl(x: unknown, ns: Namespace[]): Record<string, string> {
  if (x === undefined) return {};
  const o = obj(x, "linux.sysctl");
  const own = (t: string): boolean => ns.some((n) => n.type === t && !n.path);
  const joined = (t: string): boolean => ns.some((n) => n.type === t);
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(o)) {
    const where = `linux.sysctl.${k}`;
    if (!/^[a-z0-9_]+(\.[a-z0-9_]+)+$/.test(k)) fail(where, "is not a sysctl name");
    const ipc = /^(kernel\.(msgmax|msgmnb|msgmni|sem|shmall|shmmax|shmmni|shm_rmid_forced)|fs\.mqueue\..+)$/.test(k);
    const uts = k === "kernel.hostname" || k === "kernel.domainname";
    if (ipc ? !own("ipc") : uts ? !own("uts") : k.startsWith("net.") ? !joined("network") : true) {
      fail(where, "is not in a namespace of the container's own: it would change the host");
    }
    out[k] = str(v, where);
    if (/\n/.test(out[k])) fail(where, "has a newline in it");
  }
  return out;
}

function hooks(x: unknown): Hooks {
  if (x === undefined) return {};
  const o = obj(x, "hooks");
  const out: Hooks = {};
  for (const [when, list] of Object.entries(o)) {
    if (!Array.isArray(list)) fail(`hooks.${when}`, "must be an array");
    if (list.length > 0) fail(`hooks.${when}`, "hooks are not supported by ferret yet");
    out[when] = [];
  }
  return out;
}

/** config.json's process, or the one `ferret exec --process FILE` gives. */
export function checkProcess(x: unknown): Config["process"] {
  const p = obj(x, "process");
  refuseUnknown(
    p,
    [
      "terminal",
      "consoleSize",
      "user",
      "args",
      "env",
      "cwd",
      "capabilities",
      "rlimits",
      "noNewPrivileges",
      "oomScoreAdj",
      "apparmorProfile",
      "selinuxLabel",
    ],
    "process",
  );
  if (p.apparmorProfile) fail("process.apparmorProfile", "AppArmor is not supported by ferret (this host has none)");
  if (p.selinuxLabel) fail("process.selinuxLabel", "SELinux is not supported by ferret");
  const user = p.user === undefined ? {} : obj(p.user, "process.user");
  refuseUnknown(user, ["uid", "gid", "umask", "additionalGids"], "process.user");
  const args = strs(p.args, "process.args");
  if (args.length === 0) fail("process.args", "is empty: no program to run");
  const env = strs(p.env, "process.env");
  env.forEach((kv, i) => {
    if (!/^[^=]+=/.test(kv)) fail(`process.env[${i}]`, `${kv} is not NAME=VALUE`);
  });
  const cwd = p.cwd === undefined ? "/" : absPath(p.cwd, "process.cwd");
  return {
    terminal: bool(p.terminal, "process.terminal"),
    args,
    env,
    cwd,
    uid: user.uid === undefined ? 0 : int(user.uid, "process.user.uid"),
    gid: user.gid === undefined ? 0 : int(user.gid, "process.user.gid"),
    additionalGids: (user.additionalGids === undefined ? [] : (user.additionalGids as unknown[])).map((g, i) =>
      int(g, `process.user.additionalGids[${i}]`),
    ),
    umask: user.umask === undefined ? undefined : int(user.umask, "process.user.umask", 0, 0o777),
    capabilities: capabilities(p.capabilities),
    rlimits: rlimits(p.rlimits),
    noNewPrivileges: bool(p.noNewPrivileges, "process.noNewPrivileges"),
    oomScoreAdj: p.oomScoreAdj === undefined ? undefined : int(p.oomScoreAdj, "process.oomScoreAdj", -1000, 1000),
  };
}

/** Read and check BUNDLE/config.json. */
export function readConfig(bundleDir: string): Config {
  const bundle = resolve(bundleDir);
  const file = `${bundle}/config.json`;
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch {
    throw usageError(`${file}: no such file (is ${bundleDir} a bundle?)`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw usageError(`${file}: not valid JSON: ${(e as Error).message}`);
  }
  const c = obj(json, "(top)");
  refuseUnknown(
    c,
    ["ociVersion", "root", "process", "hostname", "domainname", "mounts", "linux", "hooks", "annotations"],
    "(top)",
  );
  const ociVersion = str(c.ociVersion, "ociVersion");
  if (!/^1\.\d+\.\d+/.test(ociVersion)) fail("ociVersion", `${ociVersion} is not 1.x.y`);
  const root = obj(c.root, "root");
  refuseUnknown(root, ["path", "readonly"], "root");
  const rootPath = str(root.path, "root.path");
  const rootfs = isAbsolute(rootPath) ? rootPath : resolve(bundle, rootPath);
  if (/[\t\n]/.test(rootfs)) fail("root.path", "has a tab or newline in it");
  if (!existsSync(rootfs) || !statSync(rootfs).isDirectory()) fail("root.path", `${rootfs} is not a directory`);
  const linux = c.linux === undefined ? {} : obj(c.linux, "linux");
  refuseUnknown(
    linux,
    [
      "namespaces",
      "resources",
      "cgroupsPath",
      "devices",
      "maskedPaths",
      "readonlyPaths",
      "sysctl",
      "rootfsPropagation",
      "seccomp",
      "uidMappings",
      "gidMappings",
      "mountLabel",
    ],
    "linux",
  );
  if (linux.mountLabel) fail("linux.mountLabel", "SELinux is not supported by ferret");
  const ns = namespaces(linux.namespaces);
  const newUser = ns.some((n) => n.type === "user" && !n.path);
  const uidMap = idMapping(linux.uidMappings, "linux.uidMappings", newUser);
  const gidMap = idMapping(linux.gidMappings, "linux.gidMappings", newUser);
  const cgroupsPath = linux.cgroupsPath === undefined ? undefined : str(linux.cgroupsPath, "linux.cgroupsPath");
  if (
    cgroupsPath !== undefined &&
    (cgroupsPath.split("/").includes("..") || !/^[A-Za-z0-9_.:@/-]*$/.test(cgroupsPath))
  ) {
    fail("linux.cgroupsPath", `${cgroupsPath} is not a cgroup path`);
  }
  const propagation =
    linux.rootfsPropagation === undefined ? undefined : str(linux.rootfsPropagation, "linux.rootfsPropagation");
  if (
    propagation &&
    !["private", "rprivate", "slave", "rslave", "shared", "rshared", "unbindable", "runbindable"].includes(propagation)
  ) {
    fail("linux.rootfsPropagation", `${propagation} is not a propagation`);
  }
  if (c.domainname) fail("domainname", "is not supported by ferret yet");
  const hostname = c.hostname === undefined || c.hostname === "" ? undefined : str(c.hostname, "hostname");
  if (hostname !== undefined && !/^[A-Za-z0-9.-]{1,64}$/.test(hostname))
    fail("hostname", `${hostname} is not a host name`);
  if (hostname !== undefined && !ns.some((n) => n.type === "uts")) {
    fail("hostname", "needs a UTS namespace (else it would rename the host)");
  }
  return {
    ociVersion,
    bundle,
    root: { path: rootfs, readonly: bool(root.readonly, "root.readonly") },
    process: checkProcess(c.process),
    hostname,
    mounts: mounts(c.mounts),
    namespaces: ns,
    uidMap,
    gidMap,
    maskedPaths: strs(linux.maskedPaths, "linux.maskedPaths").map((m, i) => absPath(m, `linux.maskedPaths[${i}]`)),
    readonlyPaths: strs(linux.readonlyPaths, "linux.readonlyPaths").map((m, i) =>
      absPath(m, `linux.readonlyPaths[${i}]`),
    ),
    devices: devices(linux.devices),
    resources: resources(linux.resources),
    cgroupsPath,
    sysctl: sysctl(linux.sysctl, ns),
    rootfsPropagation: propagation,
    seccomp: linux.seccomp === undefined ? undefined : checkProfile(linux.seccomp, "linux.seccomp"),
    hooks: hooks(c.hooks),
    annotations: Object.fromEntries(
      Object.entries(c.annotations === undefined ? {} : obj(c.annotations, "annotations")).map(([k, v]) => [
        k,
        str(v, `annotations.${k}`),
      ]),
    ),
  };
}
