// The seccomp compiler: its programs run in a small classic-BPF interpreter
// against what the profile says, syscall by syscall, then in the kernel.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { after, describe, test } from "node:test";
import { DOCKER_DEFAULT_CAPS } from "../lib/confine/caps.ts";
import { mincFilter } from "../lib/confine/filter.ts";
import { mincConfinement } from "../lib/confine/policy.ts";
import { readSettings } from "../lib/core/settings.ts";
import { loaderArgv } from "../lib/confine/loader.ts";
import {
  checkProfile,
  compileFilter,
  defaultProfile,
  type SeccompArg,
  type SeccompProfile,
} from "../lib/confine/seccomp.ts";
import { SYSCALLS_X86_64 } from "../lib/confine/syscalls.ts";
import { cannotBoot, minc, rootfs } from "./helpers.ts";

const DOCKER_CAPS = DOCKER_DEFAULT_CAPS;

// The kernel's values, written again here so that the test does not take the compiler's word.
const AUDIT_ARCH_X86_64 = 0xc000003e;
const AUDIT_ARCH_I386 = 0x40000003;
const KILL_PROCESS = 0x80000000;
const KILL_THREAD = 0;
const TRAP = 0x00030000;
const ERRNO = 0x00050000;
const TRACE = 0x7ff00000;
const LOG = 0x7ffc0000;
const ALLOW = 0x7fff0000;
const ENOSYS = 38;
const U64 = (1n << 64n) - 1n;

type Call = { arch: number; nr: number; args: bigint[] };

/** seccomp_data as the kernel lays it out: nr, arch, instruction pointer, six u64 args. */
function seccompData(call: Call): Buffer {
  const data = Buffer.alloc(64);
  data.writeUInt32LE(call.nr >>> 0, 0);
  data.writeUInt32LE(call.arch >>> 0, 4);
  for (let i = 0; i < 6; i++) data.writeBigUInt64LE(call.args[i] ?? 0n, 16 + 8 * i);
  return data;
}

/** Run a classic BPF program (only the instructions the compiler emits); returns what the kernel would. */
function runFilter(filter: Buffer, call: Call): number {
  const count = filter.length / 8;
  assert.ok(count >= 1 && count <= 4096, `${count} instructions`);
  assert.equal(filter.readUInt16LE((count - 1) * 8), 0x06, "the last instruction returns");
  const data = seccompData(call);
  let a = 0;
  for (let pc = 0, steps = 0; steps <= count; steps++) {
    assert.ok(pc < count, `pc ${pc} runs off the program`);
    const code = filter.readUInt16LE(pc * 8);
    const jt = filter.readUInt8(pc * 8 + 2);
    const jf = filter.readUInt8(pc * 8 + 3);
    const k = filter.readUInt32LE(pc * 8 + 4);
    const cond = (taken: boolean) => pc + 1 + (taken ? jt : jf);
    switch (code) {
      case 0x20: // ld [k]
        assert.ok(k % 4 === 0 && k < 64, `load at ${k}`);
        a = data.readUInt32LE(k);
        pc++;
        break;
      case 0x54: // and #k
        a = (a & k) >>> 0;
        pc++;
        break;
      case 0x05: // ja +k
        pc = pc + 1 + k;
        break;
      case 0x15: // jeq #k
        pc = cond(a === k);
        break;
      case 0x25: // jgt #k
        pc = cond(a > k);
        break;
      case 0x35: // jge #k
        pc = cond(a >= k);
        break;
      case 0x06: // ret #k
        return k;
      default:
        assert.fail(`unexpected opcode 0x${code.toString(16)} at ${pc}`);
    }
  }
  return assert.fail("the program loops");
}

const NAMES = new Map(Object.entries(SYSCALLS_X86_64).map(([name, nr]) => [nr, name]));
const LAST_NR = Math.max(...NAMES.keys());

function argMatches(arg: SeccompArg, value: bigint): boolean {
  const a = BigInt(arg.value);
  switch (arg.op) {
    case "SCMP_CMP_NE":
      return value !== a;
    case "SCMP_CMP_LT":
      return value < a;
    case "SCMP_CMP_LE":
      return value <= a;
    case "SCMP_CMP_EQ":
      return value === a;
    case "SCMP_CMP_GE":
      return value >= a;
    case "SCMP_CMP_GT":
      return value > a;
    case "SCMP_CMP_MASKED_EQ":
      return (value & a) === BigInt(arg.valueTwo ?? 0);
  }
}

function retOf(action: string, data: number | undefined): number {
  const table: Record<string, number> = {
    SCMP_ACT_KILL: KILL_THREAD,
    SCMP_ACT_KILL_THREAD: KILL_THREAD,
    SCMP_ACT_KILL_PROCESS: KILL_PROCESS,
    SCMP_ACT_TRAP: TRAP,
    SCMP_ACT_ERRNO: ERRNO + (data ?? 1),
    SCMP_ACT_TRACE: TRACE + (data ?? 1),
    SCMP_ACT_LOG: LOG,
    SCMP_ACT_ALLOW: ALLOW,
  };
  return table[action];
}

/** What the profile says of a call, read the plain way: first entry that matches, else the default. */
function expected(profile: SeccompProfile, call: Call): number {
  if (call.arch !== AUDIT_ARCH_X86_64) return KILL_PROCESS;
  if (call.nr >= 0x40000000) return ERRNO + ENOSYS;
  const fallback = retOf(profile.defaultAction, profile.defaultErrnoRet);
  if (call.nr > LAST_NR)
    return ["SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE"].includes(profile.defaultAction)
      ? fallback
      : ERRNO + ENOSYS;
  const name = NAMES.get(call.nr);
  for (const entry of profile.syscalls ?? []) {
    if (name === undefined || !entry.names.includes(name)) continue;
    if ((entry.args ?? []).every((arg) => argMatches(arg, call.args[arg.index] ?? 0n)))
      return retOf(entry.action, entry.errnoRet);
  }
  return fallback;
}

/** Argument values that sit on the edges the profiles in this file test. */
const EDGES = [
  0n,
  1n,
  8n,
  37n,
  38n,
  39n,
  40n,
  41n,
  0x11n, // SIGCHLD: fork's clone
  0x10000011n, // CLONE_NEWUSER
  0x7e020000n,
  0x80n,
  131072n,
  131080n,
  0xffffffffn,
  0x100000000n,
  0x1ffffffffn,
  0x100000011n,
  0xfffffffdn,
  U64 - 2n, // -3
  U64,
];

/** Each table syscall with each edge in each argument in turn (the others a busy pattern), and all zeros. */
function* sweep(): Generator<Call> {
  for (const nr of NAMES.keys()) {
    yield { arch: AUDIT_ARCH_X86_64, nr, args: [0n, 0n, 0n, 0n, 0n, 0n] };
    for (let i = 0; i < 6; i++)
      for (const edge of EDGES) {
        const args = [0x5an, 0xffff00000001n, 3n, U64, 0n, 0x100000000n];
        args[i] = edge;
        yield { arch: AUDIT_ARCH_X86_64, nr, args };
      }
  }
}

function checkAll(profile: SeccompProfile, calls: Iterable<Call> = sweep()): number {
  const { filter } = compileFilter(profile);
  let n = 0;
  for (const call of calls) {
    const got = runFilter(filter, call);
    const want = expected(profile, call);
    if (got !== want)
      assert.fail(
        `${NAMES.get(call.nr) ?? call.nr}(${call.args.join(", ")}): 0x${got.toString(16)}, want 0x${want.toString(16)}`,
      );
    n++;
  }
  return n;
}

const nr = (name: string) => SYSCALLS_X86_64[name];
const call = (name: string, ...args: bigint[]): Call => ({ arch: AUDIT_ARCH_X86_64, nr: nr(name), args });
const decide = (profile: SeccompProfile, c: Call) => runFilter(compileFilter(profile).filter, c);

describe("the syscall table", () => {
  test("has the header's syscalls, up to the newest", () => {
    assert.equal(nr("read"), 0);
    assert.equal(nr("execve"), 59);
    assert.equal(nr("keyctl"), 250);
    assert.equal(nr("clone3"), 435);
    assert.equal(nr("set_mempolicy_home_node"), 450);
    assert.equal(Object.keys(SYSCALLS_X86_64).length, 362);
    assert.equal(new Set(Object.values(SYSCALLS_X86_64)).size, 362, "numbers are distinct");
  });
});

describe("Docker's default profile, in the interpreter", () => {
  test("every table syscall is decided as the profile says, with Docker's capabilities", () => {
    assert.ok(checkAll(defaultProfile(DOCKER_CAPS)) > 10000);
  });
  test("and with no capability at all", () => {
    checkAll(defaultProfile([]));
  });
  test("and with CAP_SYS_ADMIN and the others moby names (upper case too)", () => {
    checkAll(defaultProfile([...DOCKER_CAPS, "CAP_SYS_ADMIN", "cap_sys_ptrace", "cap_sys_time", "cap_bpf"]));
  });
  test("spot checks against what Docker does", () => {
    const p = defaultProfile(DOCKER_CAPS);
    assert.equal(decide(p, call("execve")), ALLOW);
    assert.equal(decide(p, call("unshare", 0x10000000n)), ERRNO + 1);
    assert.equal(decide(p, call("keyctl", 0n, U64 - 2n)), ERRNO + 1);
    assert.equal(decide(p, call("mount")), ERRNO + 1);
    assert.equal(decide(p, call("chroot")), ALLOW, "cap_sys_chroot is Docker's");
    assert.equal(decide(defaultProfile([]), call("chroot")), ERRNO + 1);
    assert.equal(decide(p, call("clone", 0x1200011n)), ALLOW, "fork");
    assert.equal(decide(p, call("clone", 0x10000011n)), ERRNO + 1, "CLONE_NEWUSER");
    assert.equal(decide(p, call("clone", 0x100000011n)), ALLOW, "the mask is 32 bits");
    assert.equal(decide(p, call("clone3")), ERRNO + ENOSYS);
    assert.equal(decide(defaultProfile(["cap_sys_admin"]), call("clone3")), ALLOW);
    assert.equal(decide(p, call("socket", 2n)), ALLOW);
    assert.equal(decide(p, call("socket", 38n)), ERRNO + 1, "AF_ALG");
    assert.equal(decide(p, call("socket", 40n)), ERRNO + 1, "AF_VSOCK");
    assert.equal(decide(p, call("socket", 0x100000026n)), ALLOW, "the high word counts");
    assert.equal(decide(p, call("personality", 0xffffffffn)), ALLOW);
    assert.equal(decide(p, call("personality", 0x0400000n)), ERRNO + 1, "READ_IMPLIES_EXEC");
    assert.equal(decide(p, call("io_uring_setup")), ERRNO + 1);
  });
  test("names newer than the table are reported, and their numbers say ENOSYS", () => {
    const { unknown } = compileFilter(defaultProfile(DOCKER_CAPS));
    assert.ok(unknown.includes("fchmodat2") && unknown.includes("mseal"), unknown.join(" "));
    assert.ok(unknown.every((n) => !(n in SYSCALLS_X86_64)));
    const p = defaultProfile(DOCKER_CAPS);
    assert.equal(decide(p, { arch: AUDIT_ARCH_X86_64, nr: 452, args: [] }), ERRNO + ENOSYS);
    assert.equal(decide({ defaultAction: "SCMP_ACT_ALLOW" }, { arch: AUDIT_ARCH_X86_64, nr: 452, args: [] }), ALLOW);
  });
  test("fits easily: the default profile compiles to a few hundred instructions at most", () => {
    const count = compileFilter(defaultProfile(DOCKER_CAPS)).filter.length / 8;
    assert.ok(count < 400, `${count}`);
  });
});

describe("argument comparisons on 64-bit values", () => {
  const V = 0x1_0000_0005n; // high word 1, low word 5
  const values = [
    0n,
    5n,
    6n,
    0xffffffffn, // high word below, low word above
    V - 1n,
    V,
    V + 1n,
    0x1_0000_0000n,
    0x1_ffff_ffffn,
    0x2_0000_0000n, // high word above, low word below
    0x2_0000_0005n,
    U64,
  ];
  const ops = ["SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT"] as const;
  for (const op of ops)
    test(`${op} on argument 2 and on argument 5`, () => {
      for (const index of [2, 5]) {
        const profile: SeccompProfile = {
          defaultAction: "SCMP_ACT_ALLOW",
          syscalls: [{ names: ["read"], action: "SCMP_ACT_ERRNO", errnoRet: 7, args: [{ index, value: V, op }] }],
        };
        const calls = values.map((v) => {
          const args = [0n, 0n, 0n, 0n, 0n, 0n];
          args[index] = v;
          return call("read", ...args);
        });
        checkAll(profile, calls);
      }
    });
  test("by hand: the high word decides before the low one", () => {
    const rule = (op: SeccompArg["op"]): SeccompProfile => ({
      defaultAction: "SCMP_ACT_ALLOW",
      syscalls: [{ names: ["read"], action: "SCMP_ACT_KILL_PROCESS", args: [{ index: 0, value: V, op }] }],
    });
    const blocked = (op: SeccompArg["op"], v: bigint) => decide(rule(op), call("read", v)) === KILL_PROCESS;
    assert.equal(blocked("SCMP_CMP_GT", 0xffffffffn), false);
    assert.equal(blocked("SCMP_CMP_GT", 0x2_0000_0000n), true);
    assert.equal(blocked("SCMP_CMP_LT", 0x2_0000_0000n), false);
    assert.equal(blocked("SCMP_CMP_LT", 0xffffffffn), true);
    assert.equal(blocked("SCMP_CMP_EQ", 5n), false, "the low word alone is not equal");
    assert.equal(blocked("SCMP_CMP_NE", 5n), true);
    assert.equal(blocked("SCMP_CMP_GE", V), true);
    assert.equal(blocked("SCMP_CMP_LE", V + 1n), false);
  });
  test("SCMP_CMP_MASKED_EQ masks both words", () => {
    const profile: SeccompProfile = {
      defaultAction: "SCMP_ACT_ERRNO",
      syscalls: [
        {
          names: ["write"],
          action: "SCMP_ACT_ALLOW",
          args: [
            { index: 1, value: 0xff00_0000_0000_ff00n, valueTwo: 0x1200_0000_0000_3400n, op: "SCMP_CMP_MASKED_EQ" },
          ],
        },
      ],
    };
    const vs = [
      0x1200_0000_0000_3400n,
      0x12ff_ffff_ffff_34ffn,
      0x1300_0000_0000_3400n,
      0x1200_0000_0000_3500n,
      0n,
      U64,
    ];
    checkAll(
      profile,
      vs.map((v) => call("write", 0n, v)),
    );
    assert.equal(decide(profile, call("write", 0n, 0x12ff_ffff_ffff_34ffn)), ALLOW);
    assert.equal(decide(profile, call("write", 0n, 0x1300_0000_0000_3400n)), ERRNO + 1);
  });
  test("several args in one entry are ANDed; several entries: the first that matches decides", () => {
    const profile: SeccompProfile = {
      defaultAction: "SCMP_ACT_ERRNO",
      defaultErrnoRet: 13,
      syscalls: [
        {
          names: ["openat"],
          action: "SCMP_ACT_ERRNO",
          errnoRet: 30,
          args: [
            { index: 2, value: 3n, op: "SCMP_CMP_MASKED_EQ", valueTwo: 1n },
            { index: 0, value: 100n, op: "SCMP_CMP_GE" },
            { index: 0, value: 200n, op: "SCMP_CMP_LE" },
          ],
        },
        {
          names: ["openat", "close"],
          action: "SCMP_ACT_TRACE",
          errnoRet: 9,
          args: [{ index: 0, value: 150n, op: "SCMP_CMP_EQ" }],
        },
        { names: ["openat"], action: "SCMP_ACT_ALLOW" },
        { names: ["openat"], action: "SCMP_ACT_KILL" }, // never first
        { names: ["close"], action: "SCMP_ACT_LOG", args: [{ index: 0, value: 1n, op: "SCMP_CMP_GT" }] },
        { names: ["close"], action: "SCMP_ACT_TRAP" },
      ],
    };
    const calls: Call[] = [];
    for (const fd of [0n, 1n, 2n, 99n, 100n, 150n, 200n, 201n, 0x1_0000_0096n])
      for (const flags of [0n, 1n, 2n, 3n, 0x1_0000_0001n])
        calls.push(call("openat", fd, 0n, flags), call("close", fd));
    checkAll(profile, calls);
    checkAll(profile);
    assert.equal(decide(profile, call("openat", 150n, 0n, 1n)), ERRNO + 30);
    assert.equal(decide(profile, call("openat", 150n, 0n, 2n)), TRACE + 9);
    assert.equal(decide(profile, call("openat", 250n, 0n, 1n)), ALLOW);
    assert.equal(decide(profile, call("close", 150n)), TRACE + 9);
    assert.equal(decide(profile, call("close", 0n)), TRAP);
    assert.equal(decide(profile, call("read")), ERRNO + 13, "defaultErrnoRet");
  });
  test("each action's return, errnoRet, and EPERM when an ERRNO or TRACE has none", () => {
    const actions = [
      ["SCMP_ACT_KILL", KILL_THREAD],
      ["SCMP_ACT_KILL_THREAD", KILL_THREAD],
      ["SCMP_ACT_KILL_PROCESS", KILL_PROCESS],
      ["SCMP_ACT_TRAP", TRAP],
      ["SCMP_ACT_ERRNO", ERRNO + 1],
      ["SCMP_ACT_TRACE", TRACE + 1],
      ["SCMP_ACT_LOG", LOG],
      ["SCMP_ACT_ALLOW", ALLOW],
    ] as const;
    for (const [action, ret] of actions) {
      const other = action === "SCMP_ACT_ALLOW" ? "SCMP_ACT_LOG" : "SCMP_ACT_ALLOW";
      assert.equal(decide({ defaultAction: other, syscalls: [{ names: ["uname"], action }] }, call("uname")), ret);
      assert.equal(decide({ defaultAction: action }, call("uname")), ret, `default ${action}`);
    }
    assert.equal(decide({ defaultAction: "SCMP_ACT_TRACE", defaultErrnoRet: 4242 }, call("uname")), TRACE + 4242);
  });
});

describe("long programs", () => {
  test("more than 300 entries with args: long jumps stay right", () => {
    const names = Object.keys(SYSCALLS_X86_64).slice(0, 340);
    const profile: SeccompProfile = {
      defaultAction: "SCMP_ACT_ERRNO",
      syscalls: names.map((name, i) => ({
        names: [name],
        action: i % 3 ? "SCMP_ACT_ALLOW" : "SCMP_ACT_ERRNO",
        errnoRet: i % 3 ? undefined : 1 + (i % 100),
        args: [{ index: i % 6, value: BigInt(i) << BigInt(i % 40), op: i % 2 ? "SCMP_CMP_LE" : "SCMP_CMP_NE" }],
      })),
    };
    const { filter } = compileFilter(profile);
    const count = filter.length / 8;
    assert.ok(count > 1000, `${count} instructions`);
    let relays = 0;
    for (let pc = 0; pc < count; pc++) if (filter.readUInt16LE(pc * 8) === 0x05) relays++;
    assert.ok(relays > 0, "some jumps go through BPF_JA");
    checkAll(profile);
  });
  test("300 entries for one syscall", () => {
    const profile: SeccompProfile = {
      defaultAction: "SCMP_ACT_KILL_PROCESS",
      syscalls: [
        ...Array.from({ length: 300 }, (_, i) => ({
          names: ["ioctl"],
          action: "SCMP_ACT_ERRNO" as const,
          errnoRet: 1 + i,
          args: [{ index: 1, value: BigInt(i * 7), op: "SCMP_CMP_EQ" as const }],
        })),
        { names: ["read", "write", "exit_group"], action: "SCMP_ACT_ALLOW" },
      ],
    };
    const calls = Array.from({ length: 2200 }, (_, i) => call("ioctl", 0n, BigInt(i)));
    checkAll(profile, calls);
    checkAll(profile);
    assert.equal(decide(profile, call("ioctl", 0n, 2093n)), ERRNO + 300);
    assert.equal(decide(profile, call("ioctl", 0n, 2094n)), KILL_PROCESS);
  });
  test("past the kernel's 4096 instructions, one clear error", () => {
    const args = [0, 1, 2, 3, 4, 5].map((index) => ({ index, value: 7n, op: "SCMP_CMP_GT" as const }));
    const profile: SeccompProfile = {
      defaultAction: "SCMP_ACT_ALLOW",
      syscalls: Array.from({ length: 200 }, () => ({ names: ["read"], action: "SCMP_ACT_KILL" as const, args })),
    };
    assert.throws(
      () => compileFilter(profile),
      /seccomp profile: its filter has \d+ instructions, more than the kernel's 4096/,
    );
  });
});

describe("other ABIs", () => {
  const allowAll: SeccompProfile = { defaultAction: "SCMP_ACT_ALLOW" };
  test("i386 syscalls kill the process, whatever the profile", () => {
    for (const p of [allowAll, defaultProfile(DOCKER_CAPS)])
      for (const n of [0, 1, 11, 102, 0x40000000])
        assert.equal(decide(p, { arch: AUDIT_ARCH_I386, nr: n, args: [] }), KILL_PROCESS);
  });
  test("x32 syscalls (bit 30) say ENOSYS, also where the x86_64 one is allowed", () => {
    for (const p of [allowAll, defaultProfile(DOCKER_CAPS)])
      for (const n of [0, 59, 512, 545, 0x3fffffff])
        assert.equal(decide(p, { arch: AUDIT_ARCH_X86_64, nr: 0x40000000 + n, args: [] }), ERRNO + ENOSYS);
    assert.equal(decide(allowAll, { arch: AUDIT_ARCH_X86_64, nr: 0xffffffff, args: [] }), ERRNO + ENOSYS);
  });
});

describe("checkProfile", () => {
  const ok = { defaultAction: "SCMP_ACT_ERRNO" };
  const entry = (more: object) => ({ ...ok, syscalls: [{ names: ["read"], action: "SCMP_ACT_ALLOW" }, more] });
  const arg = (more: object) => entry({ names: ["read"], action: "SCMP_ACT_ALLOW", args: [more] });
  const cases: [unknown, RegExp][] = [
    [null, /^linux\.seccomp: null is not an object$/],
    [{}, /^linux\.seccomp\.defaultAction: missing/],
    [{ defaultAction: "SCMP_ACT_FOO" }, /^linux\.seccomp\.defaultAction: unknown action "SCMP_ACT_FOO"$/],
    [{ defaultAction: "SCMP_ACT_NOTIFY" }, /^linux\.seccomp\.defaultAction: SCMP_ACT_NOTIFY needs a seccomp agent/],
    [{ ...ok, defaultErrnoRet: -1 }, /^linux\.seccomp\.defaultErrnoRet: -1 is not an unsigned integer$/],
    [{ ...ok, defaultErrnoRet: 5000 }, /^linux\.seccomp\.defaultErrnoRet: 5000 is above 4095$/],
    [
      { defaultAction: "SCMP_ACT_ALLOW", defaultErrnoRet: 1 },
      /^linux\.seccomp\.defaultErrnoRet: SCMP_ACT_ALLOW takes no errno/,
    ],
    [
      { ...ok, architectures: ["SCMP_ARCH_AARCH64"] },
      /^linux\.seccomp\.architectures\[0\]: SCMP_ARCH_AARCH64 cannot run/,
    ],
    [{ ...ok, architectures: ["x86_64"] }, /^linux\.seccomp\.architectures\[0\]: unknown architecture "x86_64"$/],
    [
      { ...ok, flags: ["SECCOMP_FILTER_FLAG_LOG"] },
      /^linux\.seccomp\.flags\[0\]: SECCOMP_FILTER_FLAG_LOG cannot be applied/,
    ],
    [
      { ...ok, flags: ["SECCOMP_FILTER_FLAG_NEW"] },
      /^linux\.seccomp\.flags\[0\]: unknown flag "SECCOMP_FILTER_FLAG_NEW"$/,
    ],
    [
      { ...ok, flags: "SECCOMP_FILTER_FLAG_TSYNC" },
      /^linux\.seccomp\.flags: "SECCOMP_FILTER_FLAG_TSYNC" is not an array$/,
    ],
    [{ ...ok, listenerPath: "/run/agent.sock" }, /^linux\.seccomp\.listenerPath: minc runs no seccomp agent/],
    [{ ...ok, listenerMetadata: "x" }, /^linux\.seccomp\.listenerMetadata: minc runs no seccomp agent/],
    [{ ...ok, archMap: [] }, /^linux\.seccomp\.archMap: a field of Docker's profile format/],
    [{ ...ok, defaultaction: "x" }, /^linux\.seccomp\.defaultaction: unknown field$/],
    [entry({ names: [], action: "SCMP_ACT_ALLOW" }), /^linux\.seccomp\.syscalls\[1\]\.names: empty/],
    [
      entry({ names: ["read", 3], action: "SCMP_ACT_ALLOW" }),
      /^linux\.seccomp\.syscalls\[1\]\.names\[1\]: 3 is not a non-empty string$/,
    ],
    [
      entry({ names: ["read"], action: "SCMP_ACT_FOO" }),
      /^linux\.seccomp\.syscalls\[1\]\.action: unknown action "SCMP_ACT_FOO"$/,
    ],
    [entry({ names: ["read"] }), /^linux\.seccomp\.syscalls\[1\]\.action: missing/],
    [
      entry({ names: ["read"], action: "SCMP_ACT_NOTIFY" }),
      /^linux\.seccomp\.syscalls\[1\]\.action: SCMP_ACT_NOTIFY needs/,
    ],
    [
      entry({ names: ["read"], action: "SCMP_ACT_LOG", errnoRet: 1 }),
      /^linux\.seccomp\.syscalls\[1\]\.errnoRet: SCMP_ACT_LOG takes no errno/,
    ],
    [
      entry({ name: "read", action: "SCMP_ACT_ALLOW" }),
      /^linux\.seccomp\.syscalls\[1\]\.name: a field of Docker's profile format/,
    ],
    [
      entry({ names: ["read"], action: "SCMP_ACT_ALLOW", includes: {} }),
      /^linux\.seccomp\.syscalls\[1\]\.includes: a field of Docker's/,
    ],
    [
      arg({ index: 6, value: 0, op: "SCMP_CMP_EQ" }),
      /^linux\.seccomp\.syscalls\[1\]\.args\[0\]\.index: 6 is past the last argument \(5\)$/,
    ],
    [arg({ value: 0, op: "SCMP_CMP_EQ" }), /^linux\.seccomp\.syscalls\[1\]\.args\[0\]\.index: missing/],
    [
      arg({ index: 0, value: 0, op: "SCMP_CMP_IN" }),
      /^linux\.seccomp\.syscalls\[1\]\.args\[0\]\.op: unknown operator "SCMP_CMP_IN"$/,
    ],
    [
      arg({ index: 0, value: -1, op: "SCMP_CMP_EQ" }),
      /^linux\.seccomp\.syscalls\[1\]\.args\[0\]\.value: -1 is not an unsigned integer$/,
    ],
    [
      arg({ index: 0, value: 2 ** 60, op: "SCMP_CMP_EQ" }),
      /^linux\.seccomp\.syscalls\[1\]\.args\[0\]\.value: \d+ is above 2\^53/,
    ],
    [
      arg({ index: 0, value: 1n << 64n, op: "SCMP_CMP_EQ" }),
      /\.args\[0\]\.value: 18446744073709551616 is not an unsigned 64-bit integer$/,
    ],
    [
      arg({ index: 0, value: 1, valueTwo: 2, op: "SCMP_CMP_EQ" }),
      /\.args\[0\]\.valueTwo: SCMP_CMP_EQ has no second value/,
    ],
    [
      arg({ index: 0, value: 1, op: "SCMP_CMP_EQ", comment: "x" }),
      /^linux\.seccomp\.syscalls\[1\]\.args\[0\]\.comment: a field of Docker's/,
    ],
  ];
  test("each malformed profile gives one line that names the field", () => {
    for (const [profile, message] of cases) {
      assert.throws(
        () => checkProfile(profile),
        (e: Error) => {
          assert.match(e.message, message);
          assert.ok(!e.message.includes("\n"), e.message);
          assert.equal((e as Error & { status?: number }).status, 2, "a usage error");
          return true;
        },
        String(message),
      );
    }
  });
  test("the accepted ones, with the caller's prefix", () => {
    assert.throws(() => checkProfile({}, "seccomp.json"), /: seccomp\.json\.defaultAction: missing/);
    const p = checkProfile({
      ...ok,
      defaultErrnoRet: 38,
      architectures: ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
      flags: ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
      syscalls: [
        { names: ["read"], action: "SCMP_ACT_ALLOW", args: [{ index: 0, value: 1, valueTwo: 0, op: "SCMP_CMP_EQ" }] },
      ],
    });
    assert.equal(p.defaultErrnoRet, 38);
    assert.deepEqual(checkProfile(defaultProfile(DOCKER_CAPS)), defaultProfile(DOCKER_CAPS));
  });
  test("compileFilter checks too, and reports names not in the table", () => {
    assert.throws(() => compileFilter({ defaultAction: "SCMP_ACT_NOTIFY" }), /defaultAction: SCMP_ACT_NOTIFY/);
    const { unknown } = compileFilter({
      defaultAction: "SCMP_ACT_ALLOW",
      syscalls: [{ names: ["chown32", "read", "toString", "chown32"], action: "SCMP_ACT_KILL" }],
    });
    assert.deepEqual(unknown, ["chown32", "toString"]);
  });
});

describe("in the kernel, through lib/confine/loader.ts", () => {
  const dir = mkdtempSync("/tmp/minc-seccomp-");
  after(() => rmSync(dir, { recursive: true, force: true }));
  const filterFile = (name: string, profile: SeccompProfile) => {
    const file = `${dir}/${name}.bpf`;
    writeFileSync(file, compileFilter(profile).filter);
    return file;
  };
  const docker = filterFile("docker", defaultProfile(DOCKER_CAPS));
  const under = (filter: string, ...command: string[]) => {
    const [program, ...args] = [...loaderArgv(filter), ...command];
    return spawnSync(program, args, { encoding: "utf8" });
  };
  test("Docker's profile: a shell and the usual tools work", () => {
    for (const command of [
      ["sh", "-c", "true"],
      ["ls", "/"],
      ["cat", "/etc/hostname"],
      ["perl", "-e", "1"],
      ["capsh", "--print"],
    ]) {
      const r = under(docker, ...command);
      assert.equal(r.status, 0, `${command.join(" ")}: ${r.stderr}`);
    }
    const r = under(docker, "sh", "-c", "cat /etc/hostname | wc -l; ls / >/dev/null && echo listed");
    assert.equal(r.stdout, "1\nlisted\n", r.stderr);
  });
  test("Docker's profile: no user namespace, no keyring", () => {
    const r = under(docker, "unshare", "-U", "true");
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /Operation not permitted/);
    // KEYCTL_GET_KEYRING_ID (0) of KEY_SPEC_SESSION_KEYRING (-3)
    const k = under(docker, "perl", "-e", 'my $r = syscall(250, 0, -3, 0); print "$r ", $!+0, "\\n"');
    assert.equal(k.stdout, "-1 1\n", k.stderr);
  });
  test("an errnoRet of 38 makes uname say ENOSYS", () => {
    const filter = filterFile("uname", {
      defaultAction: "SCMP_ACT_ALLOW",
      syscalls: [{ names: ["uname"], action: "SCMP_ACT_ERRNO", errnoRet: 38 }],
    });
    const r = under(filter, "uname");
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /Function not implemented/);
    assert.equal(under(filter, "true").status, 0);
    assert.equal(under(filterFile("all", { defaultAction: "SCMP_ACT_ALLOW" }), "uname").stdout, "Linux\n");
  });
  test("a long program (relayed jumps) is taken, and its last rules still apply", () => {
    const profile: SeccompProfile = {
      defaultAction: "SCMP_ACT_ALLOW",
      syscalls: Object.keys(SYSCALLS_X86_64).map((name) => ({
        names: [name],
        action: "SCMP_ACT_ERRNO",
        errnoRet: 33, // EDOM
        args: [{ index: 0, value: 0xdead_0000_0007n, op: "SCMP_CMP_EQ" }],
      })),
    };
    const filter = filterFile("long", profile);
    assert.ok(compileFilter(profile).filter.length / 8 > 2000);
    const r = under(
      filter,
      "perl",
      "-e",
      'print syscall(110, 0xdead00000007), " ", $!+0, " ", syscall(110, 7) > 0, "\\n"',
    );
    assert.equal(r.stdout, "-1 33 1\n", r.stderr);
  });
});

describe("the filter of minc's default container", { skip: cannotBoot() }, () => {
  for (const [name, options, netns] of [
    ["on the host's network", [], ""],
    ["with a network of its own", ["--net", "raw"], "minc1"],
  ] as const) {
    test(`${name}: the default profile's, compiled (the one build.mjs put into the bundle is not stale)`, () => {
      const r = minc(["--debug", ...options, "-r", rootfs(), "true"]);
      assert.equal(r.status, 0, r.stderr);
      const shown = /^\+ echo ([A-Za-z0-9+/=]+) \| base64 -d > \S+\/seccomp\.bpf$/m.exec(r.stderr)?.[1];
      const compiled = mincFilter(mincConfinement(readSettings({ MINC_NETNS: netns }))).toString("base64");
      assert.equal(shown, compiled, "the filter minc wrote is not the default profile's");
    });
  }
});
