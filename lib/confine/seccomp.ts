// OCI seccomp profiles (the runtime spec's linux.seccomp, config-linux.md):
// checked, and compiled to the classic BPF program the kernel runs on each
// system call (lib/confine/loader.ts loads it). runc hands a profile to
// libseccomp; Debian has no libseccomp for Node, and the program is small
// enough to write here.
//
// What the compiled program does with a profile, and why:
//   - Only the native ABI goes through the rules. A syscall made through the
//     i386 ABI (int 0x80, seccomp_data.arch AUDIT_ARCH_I386) kills the
//     process: there is no i386 table here (its numbers differ, and
//     socketcall/ipc multiplex), and letting it through would bypass every
//     rule. So 32-bit programs do not run under a filter, though Docker's
//     profile lists SCMP_ARCH_X86.
//   - x32 syscalls arrive with arch AUDIT_ARCH_X86_64 and bit 30 of the
//     number set (they are x86_64's numbers plus 0x40000000). They get
//     ERRNO(ENOSYS), whatever the profile says: the call does not run, and
//     ENOSYS is what a kernel built without x32, as most are, answers.
//   - A number above the newest one in lib/confine/syscalls.ts is a syscall
//     newer than our table: it gets ERRNO(ENOSYS) so that libc falls back
//     to the older call it replaces (fchmodat2 to fchmodat, futex_wait to futex),
//     unless the default action lets calls through (ALLOW, LOG, TRACE), where
//     it gets the default. runc prepends the same stub to libseccomp's filter.
//   - A name the table lacks is skipped, as runc does with libseccomp's
//     table; compileFilter returns those names (`unknown`) for a trace.
//   - Several entries for one syscall: the first one whose arguments match
//     decides, in profile order (runc's behaviour, written down by the
//     runtime-spec discussion opencontainers/runtime-spec#1159).
//   - The args of one entry are ANDed, also when two compare the same
//     argument (a range: GE 10 and LE 20). runc would split such an entry
//     into one rule per condition (ORed), libseccomp refuses it in one rule.
//   - Values are 64-bit, compared unsigned on both 32-bit halves, as
//     libseccomp does on a 64-bit ABI.
//
// The program: check the arch, load the number, a binary search over the
// number line cut into intervals of equal outcome (a return, or the block
// of argument checks of one syscall), then those blocks, then the shared
// returns. Classic BPF's conditional jumps reach 255 instructions forward,
// so assemble() turns a farther one into a jump to a BPF_JA (32-bit reach).

import { usageError } from "../core/fail.ts";
import { SYSCALLS_X86_64 } from "./syscalls.ts";

const ACTIONS = [
  "SCMP_ACT_KILL",
  "SCMP_ACT_KILL_THREAD",
  "SCMP_ACT_KILL_PROCESS",
  "SCMP_ACT_TRAP",
  "SCMP_ACT_ERRNO",
  "SCMP_ACT_TRACE",
  "SCMP_ACT_LOG",
  "SCMP_ACT_ALLOW",
  "SCMP_ACT_NOTIFY",
] as const;
export type SeccompAction = (typeof ACTIONS)[number];

const OPERATORS = [
  "SCMP_CMP_NE",
  "SCMP_CMP_LT",
  "SCMP_CMP_LE",
  "SCMP_CMP_EQ",
  "SCMP_CMP_GE",
  "SCMP_CMP_GT",
  "SCMP_CMP_MASKED_EQ",
] as const;
export type SeccompOperator = (typeof OPERATORS)[number];

/** One argument comparison; value and valueTwo are uint64 (a bigint past 2^53). */
export type SeccompArg = { index: number; value: number | bigint; valueTwo?: number | bigint; op: SeccompOperator };
export type SeccompSyscall = { names: string[]; action: SeccompAction; errnoRet?: number; args?: SeccompArg[] };
/** The runtime spec's linux.seccomp object. */
export type SeccompProfile = {
  defaultAction: SeccompAction;
  defaultErrnoRet?: number;
  architectures?: string[];
  flags?: string[];
  listenerPath?: string;
  listenerMetadata?: string;
  syscalls?: SeccompSyscall[];
};
/** The program as the kernel takes it (struct sock_filter[]), and the names our table lacks. */
export type CompiledFilter = { filter: Buffer; unknown: string[] };

/** Architectures whose syscalls reach an x86_64 kernel; the filter handles each (see above). */
const HOST_ARCHES = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"];
const OTHER_ARCHES = [
  "SCMP_ARCH_ARM",
  "SCMP_ARCH_AARCH64",
  "SCMP_ARCH_MIPS",
  "SCMP_ARCH_MIPS64",
  "SCMP_ARCH_MIPS64N32",
  "SCMP_ARCH_MIPSEL",
  "SCMP_ARCH_MIPSEL64",
  "SCMP_ARCH_MIPSEL64N32",
  "SCMP_ARCH_PPC",
  "SCMP_ARCH_PPC64",
  "SCMP_ARCH_PPC64LE",
  "SCMP_ARCH_S390",
  "SCMP_ARCH_S390X",
  "SCMP_ARCH_PARISC",
  "SCMP_ARCH_PARISC64",
  "SCMP_ARCH_RISCV64",
  "SCMP_ARCH_LOONGARCH64",
];

/**
 * Flags accepted though not applied: the loader calls prctl(PR_SET_SECCOMP),
 * which takes none. TSYNC asks the kernel to put the filter on every thread
 * of the process: the loader (perl) has one thread, so it is on all there
 * are. SPEC_ALLOW lets the task keep speculative store bypass enabled: not
 * applying it keeps the kernel's mitigation, which costs speed, not safety.
 */
const FLAGS_NOT_NEEDED = ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"];
/** Flags refused: each changes what the filter does (LOG: audit records; the others serve an agent). */
const FLAGS_REFUSED = [
  "SECCOMP_FILTER_FLAG_LOG",
  "SECCOMP_FILTER_FLAG_NEW_LISTENER",
  "SECCOMP_FILTER_FLAG_TSYNC_ESRCH",
  "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
];

const EPERM = 1;
const ENOSYS = 38;
/** The kernel turns an errno above this into this (include/linux/err.h). */
const MAX_ERRNO = 4095;
const BPF_MAXINSNS = 4096;

// ---------------------------------------------------------------- checking

const PROFILE_KEYS = [
  "defaultAction",
  "defaultErrnoRet",
  "architectures",
  "flags",
  "listenerPath",
  "listenerMetadata",
  "syscalls",
];
const SYSCALL_KEYS = ["names", "action", "errnoRet", "args"];
const ARG_KEYS = ["index", "value", "valueTwo", "op"];

/** Fields of Docker's own profile format, which must be resolved (defaultProfile does) before it is OCI. */
const DOCKER_KEYS = ["includes", "excludes", "comment", "archMap", "name", "minKernel"];

function fail(where: string, problem: string): never {
  throw usageError(`${where}: ${problem}`);
}

function show(x: unknown): string {
  return typeof x === "bigint" ? `${x}` : (JSON.stringify(x) ?? String(x));
}

function record(x: unknown, where: string, keys: readonly string[]): Record<string, unknown> {
  if (typeof x !== "object" || x === null || Array.isArray(x)) fail(where, `${show(x)} is not an object`);
  const o = x as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (keys.includes(key)) continue;
    if (DOCKER_KEYS.includes(key))
      fail(`${where}.${key}`, "a field of Docker's profile format, not of the OCI one (resolve it first)");
    fail(`${where}.${key}`, "unknown field");
  }
  return o;
}

function list(x: unknown, where: string): unknown[] {
  if (!Array.isArray(x)) fail(where, `${show(x)} is not an array`);
  return x;
}

function text(x: unknown, where: string): string {
  if (typeof x !== "string" || x === "") fail(where, `${show(x)} is not a non-empty string`);
  return x;
}

function uint(x: unknown, where: string, max: number): number {
  if (typeof x !== "number" || !Number.isInteger(x) || x < 0) fail(where, `${show(x)} is not an unsigned integer`);
  if (x > max) fail(where, `${x} is above ${max}`);
  return x;
}

/** A uint64; a JSON number past 2^53 is not the one written, so only a bigint may be. */
function uint64(x: unknown, where: string): number | bigint {
  if (typeof x === "bigint") {
    if (x < 0n || x >= 1n << 64n) fail(where, `${x} is not an unsigned 64-bit integer`);
    return x;
  }
  if (typeof x !== "number" || !Number.isInteger(x) || x < 0) fail(where, `${show(x)} is not an unsigned integer`);
  if (!Number.isSafeInteger(x)) fail(where, `${x} is above 2^53, where a JSON number loses digits`);
  return x;
}

function action(x: unknown, where: string): SeccompAction {
  if (x === undefined) fail(where, "missing (it is required)");
  if (typeof x !== "string" || !(ACTIONS as readonly string[]).includes(x)) fail(where, `unknown action ${show(x)}`);
  if (x === "SCMP_ACT_NOTIFY") fail(where, "SCMP_ACT_NOTIFY needs a seccomp agent, and minc runs none");
  return x as SeccompAction;
}

/** errnoRet is the errno of ERRNO and the data of TRACE; the spec wants an error for any other action. */
function errnoRet(x: unknown, act: SeccompAction, where: string): number {
  if (act === "SCMP_ACT_ERRNO") return uint(x, where, MAX_ERRNO);
  if (act === "SCMP_ACT_TRACE") return uint(x, where, 0xffff);
  return fail(where, `${act} takes no errno (only SCMP_ACT_ERRNO and SCMP_ACT_TRACE do)`);
}

function architecture(x: unknown, where: string): string {
  const arch = text(x, where);
  if (HOST_ARCHES.includes(arch)) return arch;
  if (OTHER_ARCHES.includes(arch)) fail(where, `${arch} cannot run on this x86_64 host`);
  return fail(where, `unknown architecture ${show(arch)}`);
}

function flag(x: unknown, where: string): string {
  const f = text(x, where);
  if (FLAGS_NOT_NEEDED.includes(f)) return f;
  if (FLAGS_REFUSED.includes(f)) fail(where, `${f} cannot be applied: the filter is loaded with prctl, without flags`);
  return fail(where, `unknown flag ${show(f)}`);
}

function arg(x: unknown, where: string): SeccompArg {
  const o = record(x, where, ARG_KEYS);
  if (o.index === undefined) fail(`${where}.index`, "missing (it is required)");
  const index = uint(o.index, `${where}.index`, Number.MAX_SAFE_INTEGER);
  if (index > 5) fail(`${where}.index`, `${index} is past the last argument (5)`);
  if (o.value === undefined) fail(`${where}.value`, "missing (it is required)");
  const value = uint64(o.value, `${where}.value`);
  if (o.op === undefined) fail(`${where}.op`, "missing (it is required)");
  if (typeof o.op !== "string" || !(OPERATORS as readonly string[]).includes(o.op))
    fail(`${where}.op`, `unknown operator ${show(o.op)}`);
  const op = o.op as SeccompOperator;
  const checked: SeccompArg = { index, value, op };
  if (o.valueTwo !== undefined) {
    const valueTwo = uint64(o.valueTwo, `${where}.valueTwo`);
    // Docker writes valueTwo: 0 in every arg; any other value on an op that ignores it is a mistake.
    if (op !== "SCMP_CMP_MASKED_EQ" && BigInt(valueTwo) !== 0n)
      fail(`${where}.valueTwo`, `${op} has no second value (only SCMP_CMP_MASKED_EQ does)`);
    checked.valueTwo = valueTwo;
  }
  return checked;
}

function syscallEntry(x: unknown, where: string): SeccompSyscall {
  const o = record(x, where, SYSCALL_KEYS);
  if (o.names === undefined) fail(`${where}.names`, "missing (it is required)");
  const names = list(o.names, `${where}.names`).map((n, i) => text(n, `${where}.names[${i}]`));
  if (names.length === 0) fail(`${where}.names`, "empty (it needs at least one name)");
  const act = action(o.action, `${where}.action`);
  const entry: SeccompSyscall = { names, action: act };
  if (o.errnoRet !== undefined) entry.errnoRet = errnoRet(o.errnoRet, act, `${where}.errnoRet`);
  if (o.args !== undefined) entry.args = list(o.args, `${where}.args`).map((a, i) => arg(a, `${where}.args[${i}]`));
  return entry;
}

/**
 * The profile x, checked: each problem is one usage error naming its field.
 * What cannot be applied here is refused, not ignored (a seccomp agent,
 * flags that change the filter, another machine's architecture).
 */
export function checkProfile(x: unknown, where = "linux.seccomp"): SeccompProfile {
  const o = record(x, where, PROFILE_KEYS);
  const defaultAction = action(o.defaultAction, `${where}.defaultAction`);
  const profile: SeccompProfile = { defaultAction };
  if (o.defaultErrnoRet !== undefined)
    profile.defaultErrnoRet = errnoRet(o.defaultErrnoRet, defaultAction, `${where}.defaultErrnoRet`);
  if (o.architectures !== undefined)
    profile.architectures = list(o.architectures, `${where}.architectures`).map((a, i) =>
      architecture(a, `${where}.architectures[${i}]`),
    );
  if (o.flags !== undefined)
    profile.flags = list(o.flags, `${where}.flags`).map((f, i) => flag(f, `${where}.flags[${i}]`));
  if (o.listenerPath !== undefined) fail(`${where}.listenerPath`, "minc runs no seccomp agent (SCMP_ACT_NOTIFY)");
  if (o.listenerMetadata !== undefined)
    fail(`${where}.listenerMetadata`, "minc runs no seccomp agent (SCMP_ACT_NOTIFY)");
  if (o.syscalls !== undefined)
    profile.syscalls = list(o.syscalls, `${where}.syscalls`).map((s, i) => syscallEntry(s, `${where}.syscalls[${i}]`));
  return profile;
}

// ---------------------------------------------------------------- resolving

/** seccomp_data: nr at 0, arch at 4, args[i] at 16 + 8i (low half first: x86_64 is little endian). */
const OFF_NR = 0;
const OFF_ARCH = 4;
const argLow = (i: number) => 16 + 8 * i;
const argHigh = (i: number) => 20 + 8 * i;

const AUDIT_ARCH_X86_64 = 0xc000003e;
const X32_SYSCALL_BIT = 0x40000000;

const RET_KILL_PROCESS = 0x80000000;
const RET_KILL_THREAD = 0x00000000;
const RET_TRAP = 0x00030000;
const RET_ERRNO = 0x00050000;
const RET_TRACE = 0x7ff00000;
const RET_LOG = 0x7ffc0000;
const RET_ALLOW = 0x7fff0000;

/** What the kernel returns for an action (SECCOMP_RET_*, data in the low 16 bits). */
function actionRet(act: SeccompAction, data: number | undefined): number {
  switch (act) {
    case "SCMP_ACT_KILL":
    case "SCMP_ACT_KILL_THREAD":
      return RET_KILL_THREAD;
    case "SCMP_ACT_KILL_PROCESS":
      return RET_KILL_PROCESS;
    case "SCMP_ACT_TRAP":
      return RET_TRAP;
    case "SCMP_ACT_ERRNO":
      return (RET_ERRNO | (data ?? EPERM)) >>> 0;
    case "SCMP_ACT_TRACE":
      return (RET_TRACE | (data ?? EPERM)) >>> 0; // libseccomp's and runc's default data
    case "SCMP_ACT_LOG":
      return RET_LOG;
    case "SCMP_ACT_ALLOW":
      return RET_ALLOW;
    case "SCMP_ACT_NOTIFY":
      throw usageError("SCMP_ACT_NOTIFY needs a seccomp agent, and minc runs none");
  }
}

type Cond = { index: number; op: SeccompOperator; a: bigint; b: bigint };
type Rule = { ret: number; conds: Cond[] };

/** The highest number in our table: above it, a syscall is newer than the table. */
const LAST_NR = Math.max(...Object.values(SYSCALLS_X86_64));

function syscallNumber(name: string): number | undefined {
  return Object.hasOwn(SYSCALLS_X86_64, name) ? SYSCALLS_X86_64[name] : undefined;
}

/** Each syscall's rules in profile order, and the names the table lacks. */
function rulesByNumber(profile: SeccompProfile): { rules: Map<number, Rule[]>; unknown: string[] } {
  const rules = new Map<number, Rule[]>();
  const unknown = new Set<string>();
  for (const entry of profile.syscalls ?? []) {
    const conds = (entry.args ?? []).map((a) => ({
      index: a.index,
      op: a.op,
      a: BigInt(a.value),
      b: BigInt(a.valueTwo ?? 0),
    }));
    const rule: Rule = { ret: actionRet(entry.action, entry.errnoRet), conds };
    for (const name of entry.names) {
      const nr = syscallNumber(name);
      if (nr === undefined) {
        unknown.add(name);
        continue;
      }
      const list = rules.get(nr) ?? [];
      // After an entry with no args, no later one for this syscall can be the first to match.
      if (list.at(-1)?.conds.length === 0) continue;
      list.push(rule);
      rules.set(nr, list);
    }
  }
  return { rules, unknown: [...unknown] };
}

/** Where a syscall number goes: straight to a return, or to the argument checks of its rules. */
type Target = { ret: number } | { block: number };
type Interval = { start: number; target: Target; key: string };

function targetOf(nr: number, rules: Rule[] | undefined, defaultRet: number): Target {
  if (!rules || rules.every((r) => r.ret === defaultRet)) return { ret: defaultRet };
  if (rules.length === 1 && rules[0].conds.length === 0) return { ret: rules[0].ret };
  return { block: nr };
}

function allowsUnknown(act: SeccompAction): boolean {
  return act === "SCMP_ACT_ALLOW" || act === "SCMP_ACT_LOG" || act === "SCMP_ACT_TRACE";
}

/** The u32 number line cut where the outcome changes, in ascending order. */
function intervals(profile: SeccompProfile, rules: Map<number, Rule[]>, defaultRet: number): Interval[] {
  const out: Interval[] = [];
  const add = (start: number, target: Target) => {
    const key = "ret" in target ? `r${target.ret}` : `b${target.block}`;
    if (out.at(-1)?.key !== key) out.push({ start, target, key });
  };
  for (let nr = 0; nr <= LAST_NR; nr++) add(nr, targetOf(nr, rules.get(nr), defaultRet));
  add(LAST_NR + 1, { ret: allowsUnknown(profile.defaultAction) ? defaultRet : (RET_ERRNO | ENOSYS) >>> 0 });
  add(X32_SYSCALL_BIT, { ret: (RET_ERRNO | ENOSYS) >>> 0 });
  return out;
}

// ---------------------------------------------------------------- emitting

const BPF_LD_W_ABS = 0x20;
const BPF_ALU_AND_K = 0x54;
const BPF_JMP_JA = 0x05;
const BPF_JMP_JEQ_K = 0x15;
const BPF_JMP_JGT_K = 0x25;
const BPF_JMP_JGE_K = 0x35;
const BPF_RET_K = 0x06;

/** An instruction whose jumps name labels: jt/jf for a conditional jump, to for BPF_JA. */
type Insn = { code: number; k: number; jt?: number; jf?: number; to?: number };
type Item = Insn | { at: number };

/** A program being written with labels; assemble() resolves them. */
class Program {
  readonly items: Item[] = [];
  private labels = 0;
  label(): number {
    return this.labels++;
  }
  place(label: number): void {
    this.items.push({ at: label });
  }
  load(offset: number): void {
    this.items.push({ code: BPF_LD_W_ABS, k: offset });
  }
  and(k: number): void {
    this.items.push({ code: BPF_ALU_AND_K, k });
  }
  jump(code: number, k: number, jt: number, jf: number): void {
    this.items.push({ code, k, jt, jf });
  }
  goto(to: number): void {
    this.items.push({ code: BPF_JMP_JA, k: 0, to });
  }
  ret(k: number): void {
    this.items.push({ code: BPF_RET_K, k });
  }
}

/** Jump to pass when the argument compares true, else to fail; the 64-bit value is two 32-bit halves. */
function emitCond(p: Program, c: Cond, pass: number, fail: number): void {
  const high = (v: bigint) => Number(v >> 32n);
  const low = (v: bigint) => Number(v & 0xffffffffn);
  const lowHalf = p.label();
  p.load(argHigh(c.index));
  switch (c.op) {
    case "SCMP_CMP_EQ":
    case "SCMP_CMP_NE": {
      const [same, differ] = c.op === "SCMP_CMP_EQ" ? [pass, fail] : [fail, pass];
      p.jump(BPF_JMP_JEQ_K, high(c.a), lowHalf, differ);
      p.place(lowHalf);
      p.load(argLow(c.index));
      p.jump(BPF_JMP_JEQ_K, low(c.a), same, differ);
      return;
    }
    case "SCMP_CMP_GT":
    case "SCMP_CMP_GE": {
      const highEqual = p.label();
      p.jump(BPF_JMP_JGT_K, high(c.a), pass, highEqual);
      p.place(highEqual);
      p.jump(BPF_JMP_JEQ_K, high(c.a), lowHalf, fail);
      p.place(lowHalf);
      p.load(argLow(c.index));
      p.jump(c.op === "SCMP_CMP_GT" ? BPF_JMP_JGT_K : BPF_JMP_JGE_K, low(c.a), pass, fail);
      return;
    }
    case "SCMP_CMP_LT":
    case "SCMP_CMP_LE": {
      const highAbove = p.label();
      p.jump(BPF_JMP_JGE_K, high(c.a), highAbove, pass);
      p.place(highAbove);
      p.jump(BPF_JMP_JEQ_K, high(c.a), lowHalf, fail);
      p.place(lowHalf);
      p.load(argLow(c.index));
      // LT passes unless low >= value; LE unless low > value.
      p.jump(c.op === "SCMP_CMP_LT" ? BPF_JMP_JGE_K : BPF_JMP_JGT_K, low(c.a), fail, pass);
      return;
    }
    case "SCMP_CMP_MASKED_EQ":
      p.and(high(c.a));
      p.jump(BPF_JMP_JEQ_K, high(c.b), lowHalf, fail);
      p.place(lowHalf);
      p.load(argLow(c.index));
      p.and(low(c.a));
      p.jump(BPF_JMP_JEQ_K, low(c.b), pass, fail);
      return;
  }
}

/** One syscall's rules in order, each a chain of argument checks ending in its return; then the default. */
function emitRules(p: Program, rules: Rule[], defaultRet: number): void {
  for (const rule of rules) {
    const next = p.label();
    for (const cond of rule.conds) {
      const pass = p.label();
      emitCond(p, cond, pass, next);
      p.place(pass);
    }
    p.ret(rule.ret);
    p.place(next);
  }
  if (rules.at(-1)!.conds.length > 0) p.ret(defaultRet);
}

/** A balanced binary search over the intervals' starts (the number is in A); leaves jump to targets. */
function emitSearch(p: Program, plan: Interval[], target: (t: Target) => number): void {
  const entry = (lo: number, hi: number) => (hi - lo === 1 ? target(plan[lo].target) : p.label());
  const node = (lo: number, hi: number, label: number): void => {
    if (hi - lo === 1) return;
    const mid = (lo + hi) >>> 1;
    const left = entry(lo, mid);
    const right = entry(mid, hi);
    p.place(label);
    p.jump(BPF_JMP_JGE_K, plan[mid].start, right, left);
    node(lo, mid, left);
    node(mid, hi, right);
  };
  const root = entry(0, plan.length);
  if (plan.length === 1) p.goto(root);
  else node(0, plan.length, root);
}

function emitProgram(plan: Interval[], rules: Map<number, Rule[]>, defaultRet: number): Program {
  const p = new Program();
  const rets = new Map<number, number>();
  const blocks = new Map<number, number>();
  const labelOf = <K>(map: Map<K, number>, key: K) => {
    if (!map.has(key)) map.set(key, p.label());
    return map.get(key)!;
  };
  const target = (t: Target) => ("ret" in t ? labelOf(rets, t.ret) : labelOf(blocks, t.block));
  const native = p.label();
  p.load(OFF_ARCH);
  p.jump(BPF_JMP_JEQ_K, AUDIT_ARCH_X86_64, native, labelOf(rets, RET_KILL_PROCESS));
  p.place(native);
  p.load(OFF_NR);
  emitSearch(p, plan, target);
  for (const [nr, label] of blocks) {
    p.place(label);
    emitRules(p, rules.get(nr)!, defaultRet);
  }
  for (const [k, label] of rets) {
    p.place(label);
    p.ret(k);
  }
  return p;
}

/** Each label's instruction index. */
function positions(items: readonly Item[]): Map<number, number> {
  const at = new Map<number, number>();
  let pc = 0;
  for (const item of items) {
    if ("at" in item) at.set(item.at, pc);
    else pc++;
  }
  return at;
}

/**
 * Turn every conditional jump farther than 255 into a jump to a BPF_JA
 * placed right after it; inserting those moves other targets, so repeat
 * until none is too far (each jump is relayed at most once a side).
 */
function relayLongJumps(p: Program): Item[] {
  let items: Item[] = p.items;
  for (;;) {
    const at = positions(items);
    const out: Item[] = [];
    let pc = 0;
    let relayed = false;
    for (const item of items) {
      out.push(item);
      if ("at" in item) continue;
      for (const side of ["jt", "jf"] as const) {
        const to = item[side];
        if (to === undefined || at.get(to)! - (pc + 1) <= 255) continue;
        const relay = p.label();
        out.push({ at: relay }, { code: BPF_JMP_JA, k: 0, to });
        item[side] = relay;
        relayed = true;
      }
      pc++;
    }
    items = out;
    if (!relayed) return items;
  }
}

/** The struct sock_filter[] bytes: u16 code, u8 jt, u8 jf, u32 k, little endian. */
function assemble(p: Program): Buffer {
  const items = relayLongJumps(p);
  const at = positions(items);
  const insns = items.filter((i): i is Insn => !("at" in i));
  const out = Buffer.alloc(insns.length * 8);
  insns.forEach((insn, pc) => {
    const distance = (label: number) => {
      const d = at.get(label)! - (pc + 1);
      if (d < 0) throw new Error(`seccomp compiler: backward jump at ${pc}`);
      return d;
    };
    out.writeUInt16LE(insn.code, pc * 8);
    out.writeUInt8(insn.jt === undefined ? 0 : distance(insn.jt), pc * 8 + 2);
    out.writeUInt8(insn.jf === undefined ? 0 : distance(insn.jf), pc * 8 + 3);
    out.writeUInt32LE((insn.to === undefined ? insn.k : distance(insn.to)) >>> 0, pc * 8 + 4);
  });
  return out;
}

/**
 * The classic BPF program for profile (checked first), for this x86_64
 * host, and the syscall names it skipped because our table lacks them.
 */
export function compileFilter(profile: SeccompProfile): CompiledFilter {
  const checked = checkProfile(profile);
  const defaultRet = actionRet(checked.defaultAction, checked.defaultErrnoRet);
  const { rules, unknown } = rulesByNumber(checked);
  const filter = assemble(emitProgram(intervals(checked, rules, defaultRet), rules, defaultRet));
  const count = filter.length / 8;
  if (count > BPF_MAXINSNS)
    throw usageError(`seccomp profile: its filter has ${count} instructions, more than the kernel's ${BPF_MAXINSNS}`);
  return { filter, unknown };
}

// ---------------------------------------------------------------- Docker's default profile

/**
 * An entry of Docker's profile: includes.caps (all needed) and
 * excludes.caps (any one drops it), as moby resolves them.
 */
type DockerEntry = SeccompSyscall & { caps?: string[]; notCaps?: string[] };

// The allow-list of moby's profiles/seccomp/default.json (moby/profiles,
// May 2026), less the names no x86_64 kernel has: the 32-bit ones
// (chown32, _llseek, mmap2, socketcall, ipc, the *_time64 family...) and
// other machines' (recv, send, riscv_hwprobe, umount). Grouped by use.

// biome-ignore format: names packed by group
const PROCESSES = [
  "fork", "vfork", "execve", "execveat", "exit", "exit_group", "wait4", "waitid",
  "getpid", "getppid", "gettid", "getpgid", "getpgrp", "getsid", "setpgid", "setsid",
  "set_tid_address", "set_robust_list", "get_robust_list", "rseq", "restart_syscall",
  "prctl", "capget", "capset", "seccomp", "membarrier", "pidfd_open", "pidfd_send_signal", "process_mrelease",
  "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
];
// biome-ignore format: names packed by group
const SIGNALS = [
  "kill", "tkill", "tgkill", "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn",
  "rt_sigsuspend", "rt_sigtimedwait", "rt_tgsigqueueinfo", "sigaltstack", "signalfd", "signalfd4", "pause", "alarm",
];
// biome-ignore format: names packed by group
const CREDENTIALS = [
  "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups",
  "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid", "setfsgid", "setgroups",
];
// biome-ignore format: names packed by group
const MEMORY = [
  "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "mincore", "msync", "remap_file_pages",
  "mlock", "mlock2", "mlockall", "munlock", "munlockall", "memfd_create", "memfd_secret",
  "pkey_alloc", "pkey_free", "pkey_mprotect", "get_thread_area", "set_thread_area",
];
// biome-ignore format: names packed by group
const FILE_IO = [
  "open", "openat", "openat2", "creat", "close", "close_range", "read", "readv", "pread64", "preadv", "preadv2",
  "write", "writev", "pwrite64", "pwritev", "pwritev2", "lseek", "dup", "dup2", "dup3", "fcntl", "flock", "ioctl",
  "fsync", "fdatasync", "sync", "syncfs", "sync_file_range", "fadvise64", "readahead", "fallocate",
  "truncate", "ftruncate", "sendfile", "splice", "tee", "vmsplice", "copy_file_range", "pipe", "pipe2",
];
// biome-ignore format: names packed by group
const FILE_TREE = [
  "stat", "fstat", "lstat", "newfstatat", "statx", "statfs", "fstatfs", "access", "faccessat", "faccessat2",
  "chdir", "fchdir", "getcwd", "getdents", "getdents64", "mkdir", "mkdirat", "rmdir", "mknod", "mknodat",
  "link", "linkat", "symlink", "symlinkat", "unlink", "unlinkat", "rename", "renameat", "renameat2",
  "readlink", "readlinkat", "chmod", "fchmod", "fchmodat", "chown", "fchown", "lchown", "fchownat", "umask",
  "utime", "utimes", "utimensat", "futimesat", "name_to_handle_at",
];
// biome-ignore format: names packed by group
const XATTRS = [
  "getxattr", "lgetxattr", "fgetxattr", "setxattr", "lsetxattr", "fsetxattr",
  "listxattr", "llistxattr", "flistxattr", "removexattr", "lremovexattr", "fremovexattr",
];
// biome-ignore format: names packed by group
const WAITING = [
  "select", "pselect6", "poll", "ppoll", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old",
  "epoll_wait", "epoll_wait_old", "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2",
  "inotify_init", "inotify_init1", "inotify_add_watch", "inotify_rm_watch", "fanotify_mark",
  "futex", "futex_waitv",
];
// biome-ignore format: names packed by group
const TIME = [
  "time", "gettimeofday", "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "times",
  "adjtimex", "clock_adjtime", // reading; setting the clock still needs CAP_SYS_TIME
  "getitimer", "setitimer", "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime", "timer_settime",
  "timerfd_create", "timerfd_settime", "timerfd_gettime",
];
// biome-ignore format: names packed by group
const SOCKETS = [
  "accept", "accept4", "bind", "connect", "listen", "shutdown", "socketpair", "getpeername", "getsockname",
  "getsockopt", "setsockopt", "recvfrom", "recvmsg", "recvmmsg", "sendto", "sendmsg", "sendmmsg",
];
// biome-ignore format: names packed by group
const IPC = [
  "msgget", "msgctl", "msgrcv", "msgsnd", "semget", "semctl", "semop", "semtimedop",
  "shmget", "shmctl", "shmat", "shmdt",
  "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify", "mq_getsetattr",
];
const ASYNC_IO = ["io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents", "io_pgetevents"];
// biome-ignore format: names packed by group
const SCHEDULING = [
  "sched_yield", "sched_getaffinity", "sched_setaffinity", "sched_getattr", "sched_setattr", "sched_getparam",
  "sched_setparam", "sched_getscheduler", "sched_setscheduler", "sched_get_priority_max", "sched_get_priority_min",
  "sched_rr_get_interval", "getpriority", "setpriority", "ioprio_get", "ioprio_set",
  "getrlimit", "setrlimit", "prlimit64", "getrusage", "getcpu",
];
const SYSTEM = ["uname", "sysinfo", "getrandom"];
/** Allowed by Docker, newer than syscalls.ts's header: compileFilter reports them unknown (they get ENOSYS). */
// biome-ignore format: names packed by group
const NEWER_THAN_TABLE = [
  "cachestat", "fchmodat2", "map_shadow_stack", "futex_wake", "futex_wait", "futex_requeue", "statmount",
  "listmount", "mseal", "setxattrat", "getxattrat", "listxattrat", "removexattrat", "uretprobe",
];

const ALLOW: SeccompAction = "SCMP_ACT_ALLOW";
const eq = (index: number, value: number): SeccompArg => ({ index, value, op: "SCMP_CMP_EQ" });
/** CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET, moby's 2114060288. */
const CLONE_NAMESPACE_FLAGS = 0x7e020000;

/** moby's entries in its order (first match wins), resolved for x86_64 and a kernel >= 6.1. */
const DOCKER_ENTRIES: DockerEntry[] = [
  {
    names: [
      ...PROCESSES,
      ...SIGNALS,
      ...CREDENTIALS,
      ...MEMORY,
      ...FILE_IO,
      ...FILE_TREE,
      ...XATTRS,
      ...WAITING,
      ...TIME,
      ...SOCKETS,
      ...IPC,
      ...ASYNC_IO,
      ...SCHEDULING,
      ...SYSTEM,
      ...NEWER_THAN_TABLE,
    ],
    action: ALLOW,
  },
  // moby's "minKernel 4.8": since then ptrace cannot get around seccomp.
  { names: ["process_vm_readv", "process_vm_writev", "ptrace"], action: ALLOW },
  // Every socket family but AF_ALG (38, the kernel's crypto API) and AF_VSOCK (40, the host's sockets).
  { names: ["socket"], action: ALLOW, args: [{ index: 0, value: 38, op: "SCMP_CMP_LT" }] },
  { names: ["socket"], action: ALLOW, args: [eq(0, 39)] },
  { names: ["socket"], action: ALLOW, args: [{ index: 0, value: 40, op: "SCMP_CMP_GT" }] },
  // personality: PER_LINUX, UNAME26, PER_LINUX32, UNAME26|PER_LINUX32, and 0xffffffff (a query).
  { names: ["personality"], action: ALLOW, args: [eq(0, 0)] },
  { names: ["personality"], action: ALLOW, args: [eq(0, 8)] },
  { names: ["personality"], action: ALLOW, args: [eq(0, 131072)] },
  { names: ["personality"], action: ALLOW, args: [eq(0, 131080)] },
  { names: ["personality"], action: ALLOW, args: [eq(0, 4294967295)] },
  // moby's arches amd64 entries (its ppc64le, arm, s390 and riscv64 ones are left out).
  { names: ["arch_prctl"], action: ALLOW },
  { names: ["modify_ldt"], action: ALLOW },
  { names: ["open_by_handle_at"], action: ALLOW, caps: ["cap_dac_read_search"] },
  {
    names: [
      "bpf",
      "clone",
      "clone3",
      "fanotify_init",
      "fsconfig",
      "fsmount",
      "fsopen",
      "fspick",
      "lookup_dcookie",
      "lsm_get_self_attr",
      "lsm_list_modules",
      "lsm_set_self_attr",
      "mount",
      "mount_setattr",
      "move_mount",
      "open_tree",
      "perf_event_open",
      "quotactl",
      "quotactl_fd",
      "setdomainname",
      "sethostname",
      "setns",
      "syslog",
      "umount2",
      "unshare",
    ],
    action: ALLOW,
    caps: ["cap_sys_admin"],
  },
  // Without CAP_SYS_ADMIN: clone without namespace flags, and clone3 (whose flags are in memory,
  // out of a filter's reach) says ENOSYS so that libc falls back to clone.
  {
    names: ["clone"],
    action: ALLOW,
    args: [{ index: 0, value: CLONE_NAMESPACE_FLAGS, op: "SCMP_CMP_MASKED_EQ" }],
    notCaps: ["cap_sys_admin"],
  },
  { names: ["clone3"], action: "SCMP_ACT_ERRNO", errnoRet: ENOSYS, notCaps: ["cap_sys_admin"] },
  { names: ["reboot"], action: ALLOW, caps: ["cap_sys_boot"] },
  { names: ["chroot"], action: ALLOW, caps: ["cap_sys_chroot"] },
  { names: ["delete_module", "init_module", "finit_module"], action: ALLOW, caps: ["cap_sys_module"] },
  { names: ["acct"], action: ALLOW, caps: ["cap_sys_pacct"] },
  {
    names: ["kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace"],
    action: ALLOW,
    caps: ["cap_sys_ptrace"],
  },
  { names: ["iopl", "ioperm"], action: ALLOW, caps: ["cap_sys_rawio"] },
  { names: ["settimeofday", "clock_settime"], action: ALLOW, caps: ["cap_sys_time"] },
  { names: ["vhangup"], action: ALLOW, caps: ["cap_sys_tty_config"] },
  {
    names: ["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"],
    action: ALLOW,
    caps: ["cap_sys_nice"],
  },
  { names: ["syslog"], action: ALLOW, caps: ["cap_syslog"] },
  { names: ["bpf"], action: ALLOW, caps: ["cap_bpf"] },
  { names: ["perf_event_open"], action: ALLOW, caps: ["cap_perfmon"] },
];

/**
 * Docker's default profile for a container with capabilities caps
 * ("cap_sys_admin", as capsh prints them): EPERM for what it does not list.
 * Its architectures say x86_64 only: Docker's also lists x86 and x32, which
 * our filter stops (see the top of this file).
 */
export function defaultProfile(caps: readonly string[]): SeccompProfile {
  const have = new Set(caps.map((c) => c.toLowerCase()));
  const syscalls: SeccompSyscall[] = [];
  for (const { caps: needs = [], notCaps = [], ...entry } of DOCKER_ENTRIES) {
    if (!needs.every((c) => have.has(c)) || notCaps.some((c) => have.has(c))) continue;
    syscalls.push({
      ...entry,
      names: [...entry.names],
      ...(entry.args && { args: entry.args.map((a) => ({ ...a })) }),
    });
  }
  return {
    defaultAction: "SCMP_ACT_ERRNO",
    defaultErrnoRet: EPERM,
    architectures: ["SCMP_ARCH_X86_64"],
    syscalls,
  };
}
