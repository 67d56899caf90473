// minc-dens, the dens network: the pure parts (port maps, leases, rules),
// then the real thing on this host: a bridge, veth pairs into network
// namespaces made here, leases, port maps reached through 127.0.0.1.
// Traffic goes only to loopback and to addresses inside our namespaces.
//
// The bridge, the shared rules and the host's lease file are the host's:
// other containers (a user's, other test files') come and go on them while
// this runs. What is checked is what this file made, by its names; ports are
// picked free; and minc-dens stop, which removes everything of everyone,
// runs only when nothing else is on the network, checked under minc-dens's
// own lock.
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createSocket } from "node:dgram";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { after, before, describe, test } from "node:test";
import {
  BRIDGE,
  ExhaustedError,
  allocate,
  checkContainerIp,
  checkId,
  formatLeases,
  hookRules,
  hooksIn,
  mappedPorts,
  parseLeases,
  parseListing,
  parsePortMap,
  portRules,
  release,
  rulesOf,
  splitRule,
  tagOf,
  vethName,
  type Lease,
} from "../lib/net/dens.ts";
import { MincError } from "../lib/core/fail.ts";
import { PATIENCE, REPO, freePort, hasTool, rootfs, start, waitFor } from "./helpers.ts";

const DENS = `${REPO}/libexec/minc-dens`;
const NODE = process.execPath;
const LEASE = "/var/run/minc.lease";
const LOCK = "/var/run/minc-dens.lock";

// ---- the pure parts ----

function status(f: () => unknown): number | undefined {
  try {
    f();
  } catch (e) {
    return e instanceof MincError ? e.status : -1;
  }
  return undefined;
}

describe("port maps", () => {
  test("HOSTPORT[:PORT[:PROTO]]: PORT defaults to HOSTPORT, PROTO to tcp", () => {
    assert.deepEqual(parsePortMap("80"), { hostPort: 80, port: 80, proto: "tcp" });
    assert.deepEqual(parsePortMap("8080:80"), { hostPort: 8080, port: 80, proto: "tcp" });
    assert.deepEqual(parsePortMap("5353:53:udp"), { hostPort: 5353, port: 53, proto: "udp" });
    assert.deepEqual(parsePortMap("65535:1:tcp"), { hostPort: 65535, port: 1, proto: "tcp" });
  });
  test("bad maps are usage errors (exit 2)", () => {
    for (const bad of [
      "",
      "0",
      "65536",
      "-1",
      "+80",
      "8o",
      "80:",
      ":80",
      "80:0",
      "80:80:",
      "80:80:sctp",
      "80:80:TCP",
      "1:2:tcp:4",
      "99999999",
    ]) {
      assert.equal(
        status(() => parsePortMap(bad)),
        2,
        `accepted ${JSON.stringify(bad)}`,
      );
    }
  });
});

describe("names and addresses", () => {
  test("the host end of a veth: at most 15 characters, stable, different per id", () => {
    const ids = ["minc1234-AbCdEf", "minc1234-AbCdEg", "minc4194303-zzzzzz", "x".repeat(200)];
    const names = ids.map(vethName);
    for (const n of names) assert.match(n, /^mincv[0-9a-f]{8}$/);
    assert.equal(new Set(names).size, ids.length);
    assert.equal(vethName(ids[0]), names[0]);
  });
  test("ids and addresses are checked", () => {
    assert.equal(checkId("minc1234-AbCdEf"), "minc1234-AbCdEf");
    for (const bad of ["", "a b", "a/b", "-x", 'a"b', "x".repeat(201)])
      assert.equal(
        status(() => checkId(bad)),
        2,
        bad,
      );
    assert.equal(checkContainerIp("192.168.139.254"), "192.168.139.254");
    for (const bad of ["192.168.139.1", "192.168.139.255", "192.168.140.2", "10.0.0.2", "192.168.139.", "x"]) {
      assert.equal(
        status(() => checkContainerIp(bad)),
        2,
        bad,
      );
    }
  });
});

describe("leases", () => {
  const lease = (host: number, id: string, netns = id): Lease => ({ ip: `192.168.139.${host}`, id, netns });
  const always = (): boolean => true;

  test("the lowest free address; the file keeps one line per lease", () => {
    const a = allocate([lease(2, "a"), lease(4, "c")], "d", "nsd", always);
    assert.equal(a.ip, "192.168.139.3");
    assert.equal(formatLeases(a.leases), "192.168.139.2 a a\n192.168.139.4 c c\n192.168.139.3 d nsd\n");
    assert.deepEqual(parseLeases(formatLeases(a.leases)), a.leases);
    assert.deepEqual(a.dropped, []);
  });
  test("a lease whose netns is gone is stale: dropped, its address reused", () => {
    const a = allocate([lease(2, "a"), lease(3, "dead")], "new", "nsnew", (l) => l.id !== "dead");
    assert.equal(a.ip, "192.168.139.3");
    assert.deepEqual(
      a.dropped.map((l) => l.id),
      ["dead"],
    );
    assert.deepEqual(
      a.leases.map((l) => l.id),
      ["a", "new"],
    );
  });
  test("an id leased again gives up its old lease", () => {
    const a = allocate([lease(2, "a"), lease(3, "b")], "a", "nsa2", always);
    assert.equal(a.ip, "192.168.139.2");
    assert.deepEqual(
      a.leases.map((l) => `${l.id} ${l.netns}`),
      ["b b", "a nsa2"],
    );
  });
  test("the shell MINCS's lines (ADDR/24 IFNAME) are read as leases that never go stale", () => {
    const leases = parseLeases("192.168.139.2/24 veth0-x\n\ngarbage\n192.168.139.3 b nsb\n");
    assert.deepEqual(leases, [lease(2, "veth0-x", "-"), lease(3, "b", "nsb")]);
    assert.equal(allocate(leases, "c", "nsc", () => false).ip, "192.168.139.3");
  });
  test("exhaustion: all of .2-.254 held by live leases is an error with exit 1", () => {
    const full = Array.from({ length: 253 }, (_, i) => lease(i + 2, `c${i}`));
    assert.throws(
      () => allocate(full, "one-more", "ns", always),
      (e: unknown) =>
        e instanceof ExhaustedError && e.status === 1 && /no free address in 192\.168\.139\.0\/24/.test(e.message),
    );
    assert.equal(allocate(full, "one-more", "ns", (l) => l.id !== "c100").ip, "192.168.139.102");
  });
  test("release drops only that id", () => {
    assert.deepEqual(
      release([lease(2, "a"), lease(3, "ab")], "a").map((l) => l.id),
      ["ab"],
    );
  });
});

describe("iptables rules", () => {
  const listing = [
    "-P FORWARD ACCEPT",
    "-N MINCS_DNAT",
    "-A PREROUTING -m addrtype --dst-type LOCAL -j MINCS_DNAT",
    "-A PREROUTING -j DOCKER",
    '-A MINCS_DNAT -p tcp -m tcp --dport 80 -m comment --comment "minc:a" -j DNAT --to-destination 192.168.139.2:80',
    '-A MINCS_DNAT -p udp -m udp --dport 53 -m comment --comment "minc:ab" -j DNAT --to-destination 192.168.139.3:53',
    '-A OTHER -m comment --comment "minc:a" -j ACCEPT',
  ].join("\n");
  const rules = parseListing("nat", listing);

  test("iptables -S lines split like the shell would", () => {
    assert.deepEqual(splitRule('-A X -m comment --comment "a \\"b\\" c" -j Y'), [
      "-A",
      "X",
      "-m",
      "comment",
      "--comment",
      'a "b" c',
      "-j",
      "Y",
    ]);
    assert.deepEqual(splitRule('--comment ""'), ["--comment", ""]);
  });
  test("a container's rules: tagged with exactly its id, in our chains only", () => {
    assert.deepEqual(
      rulesOf(rules, "a").map((r) => r.args.join(" ")),
      ["-p tcp -m tcp --dport 80 -m comment --comment minc:a -j DNAT --to-destination 192.168.139.2:80"],
    );
    assert.equal(tagOf(rulesOf(rules, "ab")[0]), "ab");
    assert.deepEqual(rulesOf(rules, "b"), []);
  });
  test("hooks: the jumps into our chains, not other rules of the built-in chains", () => {
    assert.deepEqual(
      hooksIn(rules).map((r) => r.chain),
      ["PREROUTING"],
    );
    assert.equal(hookRules().length, 5);
  });
  test("a port map: DNAT in nat, ACCEPT in filter, both tagged; what is mapped can be read back", () => {
    const [dnat, accept] = portRules("x", "192.168.139.9", parsePortMap("18080:80"));
    assert.equal(
      dnat.args.join(" "),
      "-p tcp -m tcp --dport 18080 -m comment --comment minc:x -j DNAT --to-destination 192.168.139.9:80",
    );
    assert.equal(
      accept.args.join(" "),
      `-d 192.168.139.9/32 -o ${BRIDGE} -p tcp -m tcp --dport 80 -m comment --comment minc:x -j ACCEPT`,
    );
    assert.deepEqual(
      mappedPorts([dnat, ...rules]).map((m) => `${m.hostPort}/${m.proto} ${m.to} ${m.id}`),
      ["18080/tcp 192.168.139.9:80 x", "80/tcp 192.168.139.2:80 a", "53/udp 192.168.139.3:53 ab"],
    );
  });
});

// ---- the real thing ----

function cannotNet(): string | undefined {
  if (process.getuid?.() !== 0) return "needs root";
  for (const tool of ["ip", "iptables", "iptables-save", "flock"]) if (!hasTool(tool)) return `needs ${tool}`;
  if (!existsSync(DENS)) return `needs ${DENS} (run node build.mjs)`;
  return undefined;
}

const skip = cannotNet();
if (skip) console.log(`# dens: skipping the tests on the host: ${skip}`);

interface Result {
  status: number | null;
  stdout: string;
  stderr: string;
}

function dens(args: string[], env: NodeJS.ProcessEnv = {}): Result {
  const r = spawnSync(DENS, args, {
    encoding: "utf8",
    env: { ...process.env, MINC_DEBUG: "", ...env },
    timeout: 2 * PATIENCE,
  }); // (past its own 60 s wait for the lock)
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function densAsync(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Result> {
  return new Promise((resolve, reject) => {
    const c = spawn(DENS, args, { env: { ...process.env, MINC_DEBUG: "", ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    c.stdout.on("data", (d) => {
      stdout += d;
    });
    c.stderr.on("data", (d) => {
      stderr += d;
    });
    c.on("error", reject);
    c.on("close", (status) => resolve({ status, stdout, stderr }));
  });
}

function sh(argv: string[], timeout = 10_000): Result {
  const r = spawnSync(argv[0], argv.slice(1), { encoding: "utf8", timeout });
  return { status: r.status, stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
}

function ok(argv: string[]): string {
  const r = sh(argv);
  assert.equal(r.status, 0, `${argv.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

function save(iptables = "iptables", table?: string): string {
  return sh([`${iptables}-save`, ...(table ? ["-t", table] : [])]).stdout;
}

const tagged = (text: string, id: string): boolean =>
  new RegExp(`minc:${id.replace(/[.]/g, "\\.")}(["\\s]|$)`, "m").test(text);
const leaseLines = (file = LEASE): string[] =>
  existsSync(file) ? readFileSync(file, "utf8").split("\n").filter(Boolean) : [];
const links = (): string[] => readdirSync("/sys/class/net");

// Names made of our PID: another run of these tests cannot clash with ours.
const made: { netns: string; id: string }[] = [];
/** Every container id and netns name this file ever made (made is emptied as they go). */
const ourIds = new Set<string>();
const ourNetnses = new Set<string>();
let serial = 0;
function newContainer(): { netns: string; id: string } {
  serial += 1;
  const c = { netns: `mdt${process.pid}-${serial}`, id: `mincdt${process.pid}-${serial}` };
  ourIds.add(c.id);
  ourNetnses.add(c.netns);
  ok(["ip", "netns", "add", c.netns]);
  made.push(c);
  return c;
}

const servers: ChildProcess[] = [];

/** A server inside a netns: each TCP connection or UDP datagram gets REPLY and the peer's address. */
function serve(netns: string, proto: "tcp" | "udp", port: number, reply: string): Promise<ChildProcess> {
  const script =
    proto === "tcp"
      ? `require("net").createServer((c) => c.end(${JSON.stringify(reply)} + " " + c.remoteAddress + "\\n")).listen(${port}, "0.0.0.0", () => console.log("ready"))`
      : `const s = require("dgram").createSocket("udp4"); s.on("message", (m, r) => s.send(${JSON.stringify(reply)} + " " + r.address + " " + m, r.port, r.address)); s.bind(${port}, "0.0.0.0", () => console.log("ready"))`;
  const child = spawn("ip", ["netns", "exec", netns, NODE, "-e", script], { stdio: ["ignore", "pipe", "inherit"] });
  servers.push(child);
  return new Promise((resolve, reject) => {
    child.stdout!.on("data", (d) => {
      if (String(d).includes("ready")) resolve(child);
    });
    child.on("exit", (code) => reject(new Error(`server in ${netns} exited (${code})`)));
  });
}

function tcpGet(host: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port, timeout: 3000 });
    let data = "";
    s.on("data", (d) => {
      data += d;
    });
    s.on("end", () => resolve(data));
    s.on("timeout", () => {
      s.destroy();
      reject(new Error(`${host}:${port}: timed out`));
    });
    s.on("error", reject);
  });
}

function udpAsk(host: string, port: number, message: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = createSocket("udp4");
    const timer = setTimeout(() => {
      s.close();
      reject(new Error(`${host}:${port}/udp: no answer`));
    }, 3000);
    s.on("message", (m) => {
      clearTimeout(timer);
      s.close();
      resolve(String(m));
    });
    s.send(message, port, host);
  });
}

/**
 * What is on the dens network, or on its way to it, that is not this
 * file's: live leases (a lease of the shell MINCS never goes stale), veths,
 * and network namespaces (a container makes its own before minc-dens add,
 * and another test of the dens network makes its own; any other counts too,
 * to be safe).
 */
function othersOnTheNetwork(): string[] {
  const leases = parseLeases(existsSync(LEASE) ? readFileSync(LEASE, "utf8") : "")
    .filter((l) => !ourIds.has(l.id) && (l.netns === "-" || existsSync(`/var/run/netns/${l.netns}`)))
    .map((l) => `lease ${l.ip} ${l.id}`);
  const ourVeths = new Set([...ourIds].map(vethName));
  const veths = links()
    .filter((l) => /^mincv[0-9a-f]{8}$/.test(l) && !ourVeths.has(l))
    .map((l) => `veth ${l}`);
  const netnses = (existsSync("/var/run/netns") ? readdirSync("/var/run/netns") : [])
    .filter((n) => !ourNetnses.has(n) && !leftByAnEarlierRun(n))
    .map((n) => `netns ${n}`);
  return [...leases, ...veths, ...netnses];
}

/** A netns of this file's (mdtPID-N) whose test process is gone: no one's. */
function leftByAnEarlierRun(netns: string): boolean {
  const pid = /^mdt(\d+)-\d+$/.exec(netns)?.[1];
  return pid !== undefined && Number(pid) !== process.pid && !existsSync(`/proc/${pid}`);
}

/**
 * Hold minc-dens's own lock (flock(1) on its file, as minc-dens takes it):
 * while it is held, no minc-dens changes the bridge, the rules or the
 * leases. Returns its release. (If this process dies, cat reads the end of
 * its stdin and the lock goes.)
 */
async function holdDensLock(): Promise<() => Promise<void>> {
  const holder = start("flock", ["-w", String(PATIENCE / 1000), LOCK, "sh", "-c", "echo locked; exec cat >/dev/null"], {
    stdio: ["pipe", "pipe", "pipe"],
  });
  await holder.printed("locked");
  return async () => {
    holder.child.stdin!.end();
    assert.equal(await holder.exit(), 0, holder.stderr());
  };
}

/** The processes waiting for minc-dens's lock (the "->" lines of /proc/locks on its inode). */
function lockWaiters(): number[] {
  const inode = statSync(LOCK).ino;
  return readFileSync("/proc/locks", "utf8")
    .split("\n")
    .flatMap((l) => {
      const m = /->\s+FLOCK\s+\S+\s+\S+\s+(\d+)\s+[0-9a-f]+:[0-9a-f]+:(\d+)\s/.exec(l);
      return m && Number(m[2]) === inode ? [Number(m[1])] : [];
    });
}

function parentOf(pid: number): number | undefined {
  try {
    return Number(/^PPid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]);
  } catch {
    return undefined; // gone
  }
}

/**
 * minc-dens stop, unless something else is on the dens network: stop removes
 * the bridge and every rule, everyone's. That is checked under minc-dens's
 * lock, with the stop already waiting for it, so that no container comes
 * onto the bridge between the check and the stop (one on its way has its
 * netns already). `afterwards` runs under the lock again after the stop, if
 * still nothing else came onto the network (the checks of what stop left,
 * ip_forward put back).
 * Returns why it did not stop, or did not run `afterwards`; undefined if it did both.
 */
async function stopIfAlone(env: NodeJS.ProcessEnv = {}, afterwards?: () => void): Promise<string | undefined> {
  let release = await holdDensLock();
  const stopper = start(DENS, ["stop"], { env: { ...process.env, MINC_DEBUG: "", ...env }, detached: true });
  const pid = stopper.child.pid!;
  let others: string[] | undefined;
  try {
    await waitFor("minc-dens stop to wait for the lock", () => lockWaiters().some((w) => parentOf(w) === pid), {
      saw: () => `waiting: ${lockWaiters().join(" ")}; stop: ${stopper.stderr()}`,
    });
    others = othersOnTheNetwork();
  } finally {
    // Not checked (the wait failed) or not alone: the stop must not run.
    if (others?.length !== 0) process.kill(-pid, "SIGKILL"); // (minc-dens and its flock, still waiting)
    await release();
  }
  if (others.length) {
    await stopper.exit();
    return `not stopped: something else is on the dens network: ${others.join(", ")}`;
  }
  assert.equal(await stopper.exit(), 0, stopper.stderr());
  assert.equal(stopper.stderr(), "", "minc-dens stop warned");
  if (!afterwards) return undefined;
  release = await holdDensLock();
  try {
    const came = othersOnTheNetwork();
    if (came.length)
      return `stopped, but something came onto the dens network right after, so what stop left cannot be checked: ${came.join(", ")}`;
    afterwards();
  } finally {
    await release();
  }
  return undefined;
}

async function cleanUp(iptables = "iptables"): Promise<void> {
  for (const s of servers.splice(0)) s.kill("SIGKILL");
  const env = { MINC_DENS_IPTABLES: iptables };
  for (const c of made.splice(0)) {
    dens(["del", c.netns, c.id], env);
    sh(["ip", "netns", "del", c.netns]);
  }
  // minc-dens leaves ip_forward on (other things may rely on it); the tests leave it as they found it.
  const skipped = await stopIfAlone(env, () => writeFileSync(FORWARD, ipForwardBefore));
  if (skipped) console.log(`# dens: minc-dens stop (${iptables}) at the end: ${skipped}`);
}

const FORWARD = "/proc/sys/net/ipv4/ip_forward";
const ipForwardBefore = existsSync(FORWARD) ? readFileSync(FORWARD, "utf8") : "";

describe("minc-dens on the host", { skip }, () => {
  let busybox = "";
  before(() => {
    busybox = `${rootfs()}/bin/busybox`;
  });
  after(() => cleanUp());
  // Host ports for the maps, free when the tests start.
  let webPort = 0;
  let dnsPort = 0;
  let otherPort = 0;
  before(async () => {
    webPort = await freePort();
    dnsPort = await freePort("udp");
    otherPort = await freePort();
  });

  let a = { netns: "", id: "" };
  let b = { netns: "", id: "" };
  let ipA = "";
  let ipB = "";

  test("add: two containers get different addresses, and reach each other and the bridge", () => {
    a = newContainer();
    b = newContainer();
    const ra = dens(["add", a.netns, a.id]);
    assert.equal(ra.status, 0, ra.stderr);
    const rb = dens(["add", b.netns, b.id]);
    assert.equal(rb.status, 0, rb.stderr);
    assert.match(ra.stdout, /^192\.168\.139\.\d+\n$/);
    assert.match(rb.stdout, /^192\.168\.139\.\d+\n$/);
    ipA = ra.stdout.trim();
    ipB = rb.stdout.trim();
    assert.notEqual(ipA, ipB);
    assert.equal(ra.stderr + rb.stderr, "");

    // The host end is on the bridge; the other is eth0 in the netns, with the address and the default route.
    assert.match(ok(["ip", "-o", "link", "show", vethName(a.id)]), new RegExp(`master ${BRIDGE} .*state UP`));
    assert.match(
      ok(["ip", "-n", a.netns, "-o", "-4", "addr", "show", "dev", "eth0"]),
      new RegExp(`inet ${ipA.replace(/\./g, "\\.")}/24`),
    );
    assert.match(ok(["ip", "-n", a.netns, "route"]), /^default via 192\.168\.139\.1 dev eth0/m);
    assert.match(ok(["ip", "-n", a.netns, "-o", "link", "show", "lo"]), /state UNKNOWN|,UP/);
    assert.ok(leaseLines().includes(`${ipA} ${a.id} ${a.netns}`), leaseLines().join("\n"));
    assert.ok(leaseLines().includes(`${ipB} ${b.id} ${b.netns}`));

    for (const [from, to] of [
      [a.netns, ipB],
      [b.netns, ipA],
      [a.netns, "192.168.139.1"],
      [b.netns, "192.168.139.1"],
    ]) {
      const r = sh(["ip", "netns", "exec", from, busybox, "ping", "-c", "1", "-W", "3", to]);
      assert.equal(r.status, 0, `ping ${to} from ${from}: ${r.stdout}${r.stderr}`);
    }
  });

  test("up is idempotent: every hook and shared rule exactly once", () => {
    assert.equal(dens(["up"]).status, 0);
    assert.equal(dens(["up"]).status, 0);
    const filter = save("iptables", "filter").split("\n");
    const nat = save("iptables", "nat").split("\n");
    const count = (lines: string[], line: string): number => lines.filter((l) => l === line).length;
    assert.equal(count(filter, "-A FORWARD -j MINCS_FORWARD"), 1);
    assert.equal(count(filter, `-A MINCS_FORWARD -i ${BRIDGE} -j ACCEPT`), 1);
    assert.equal(count(nat, "-A PREROUTING -m addrtype --dst-type LOCAL -j MINCS_DNAT"), 1);
    assert.equal(count(nat, "-A OUTPUT -m addrtype --dst-type LOCAL -j MINCS_DNAT"), 1);
    assert.equal(count(nat, "-A POSTROUTING -j MINCS_POSTROUTING"), 1);
    assert.equal(count(nat, `-A MINCS_POSTROUTING -s 192.168.139.0/24 ! -o ${BRIDGE} -j MASQUERADE`), 1);
    assert.equal(count(nat, `-A MINCS_POSTROUTING -s 127.0.0.0/8 -o ${BRIDGE} -j MASQUERADE`), 1);
    assert.equal(readFileSync("/proc/sys/net/ipv4/ip_forward", "utf8").trim(), "1");
    assert.equal(readFileSync(`/proc/sys/net/ipv4/conf/${BRIDGE}/route_localnet`, "utf8").trim(), "1");
  });

  test("map PORT:80: the host reaches the container through 127.0.0.1, seen as the bridge's address", async () => {
    await serve(b.netns, "tcp", 80, "hello from b");
    const r = dens(["map", b.id, ipB, `${webPort}:80`]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(await tcpGet("127.0.0.1", webPort), "hello from b 192.168.139.1\n");
    assert.match(
      save("iptables", "nat"),
      new RegExp(
        `-A MINCS_DNAT -p tcp -m tcp --dport ${webPort} -m comment --comment "?minc:${b.id}"? -j DNAT --to-destination ${ipB}:80`,
      ),
    );
    assert.match(
      save("iptables", "filter"),
      new RegExp(
        `-A MINCS_FORWARD -d ${ipB}/32 -o ${BRIDGE} -p tcp -m tcp --dport 80 -m comment --comment "?minc:${b.id}"? -j ACCEPT`,
      ),
    );
    // Mapping it again changes nothing.
    assert.equal(dens(["map", b.id, ipB, `${webPort}:80`]).status, 0);
    assert.equal(
      save("iptables", "nat")
        .split("\n")
        .filter((l) => l.includes(`--dport ${webPort} `)).length,
      1,
    );
  });

  test("map: a container reaches a mapped port of another and of itself through the bridge's address (PREROUTING, hairpin)", () => {
    for (const from of [a.netns, b.netns]) {
      const r = sh(["ip", "netns", "exec", from, busybox, "nc", "-w", "3", "192.168.139.1", String(webPort)]);
      assert.equal(r.stdout, "hello from b 192.168.139.1\n", `from ${from}: ${r.stderr}`);
    }
  });

  test("map udp: PORT:53:udp answers through 127.0.0.1", async () => {
    await serve(a.netns, "udp", 53, "pong from a");
    const r = dens(["map", a.id, ipA, `${dnsPort}:53:udp`]);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(await udpAsk("127.0.0.1", dnsPort, "ping"), "pong from a 192.168.139.1 ping");
  });

  test("map: bad arguments are one line and exit 2; a host port taken by another container is exit 1; nothing is added", () => {
    // (Rules of other containers come and go meanwhile: not counted.)
    const othersRule = (l: string): boolean => [...l.matchAll(/minc:([\w.-]+)/g)].some((m) => !ourIds.has(m[1]));
    const ruleLines = (): string =>
      (save("iptables", "nat") + save("iptables", "filter"))
        .split("\n")
        .filter((l) => l.startsWith("-A") && !othersRule(l))
        .join("\n");
    const p = otherPort;
    const before = ruleLines();
    const cases: [string[], RegExp][] = [
      [["map", b.id, ipB, "0"], /HOSTPORT must be a number from 1 to 65535/],
      [["map", b.id, ipB, `${p}:70000`], /PORT must be a number/],
      [["map", b.id, ipB, `${p}:80:sctp`], /PROTO must be tcp or udp/],
      [["map", b.id, ipB, `${p}:80`, String(p)], /mapped twice/],
      [["map", b.id, "10.0.0.1", `${p}:80`], /bad address/],
      [["map", b.id, ipA, `${p}:80`], /has the address/],
      [["map", b.id, ipB], /usage/],
      [["add", a.netns], /usage/],
      [["add", "no-such-netns-here", "x"], /no network namespace no-such-netns-here/],
      [["del", a.netns, "bad id"], /bad container id/],
      [["frob"], /unknown subcommand "frob"/],
      [[], /usage/],
    ];
    for (const [args, message] of cases) {
      const r = dens(args);
      assert.equal(r.status, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, message);
      assert.equal(r.stderr.trimEnd().split("\n").length, 1, r.stderr);
    }
    const taken = dens(["map", a.id, ipA, `${webPort}:80`]);
    assert.equal(taken.status, 1);
    assert.match(
      taken.stderr,
      new RegExp(`host port ${webPort}/tcp is already mapped to ${ipB}:80 \\(container ${b.id}\\)`),
    );
    assert.equal(ruleLines(), before);
  });

  test("MINC_DEBUG=1: each command is a + line after a # comment; without it, nothing on stderr", () => {
    const c = newContainer();
    const r = dens(["add", c.netns, c.id], { MINC_DEBUG: "1" });
    assert.equal(r.status, 0, r.stderr);
    const lines = r.stderr.trimEnd().split("\n");
    assert.match(lines[0], /^# ==== minc-dens: phase 3\/5: new namespaces ====$/);
    assert.match(lines[1], /^# /);
    for (const l of lines) assert.match(l, /^[#+] /);
    for (const cmd of [
      "flock -w 60 3",
      `ip link add ${vethName(c.id)} type veth peer name eth0 netns ${c.netns}`,
      `ip -n ${c.netns} route add default via 192.168.139.1`,
    ]) {
      assert.ok(lines.includes(`+ ${cmd}`), `no "+ ${cmd}" in\n${r.stderr}`);
    }
    const quiet = dens(["del", c.netns, c.id]);
    assert.equal(quiet.status, 0);
    assert.equal(quiet.stderr, "");
  });

  test("a container cannot reach the host's 127.0.0.1 (route_localnet on the bridge would let it)", async () => {
    // A host service listening on 127.0.0.1 only, and a container that routes 127.0.0.0/8 to the host.
    // After its datagram to that service, the container sends one to the host's address on the
    // bridge, which must arrive: once it has and the first has been dropped, the first cannot come.
    const bind = async (
      address: string,
      got: string[],
    ): Promise<{ socket: ReturnType<typeof createSocket>; port: number }> => {
      const socket = createSocket("udp4");
      socket.on("message", (m) => got.push(String(m)));
      await new Promise<void>((res) => socket.bind(0, address, res));
      return { socket, port: socket.address().port };
    };
    const got: string[] = [];
    const seen: string[] = [];
    const local = await bind("127.0.0.1", got);
    const bridge = await bind("192.168.139.1", seen);
    // (With iptables-legacy's MINCS chains on the host too, left by its test below, either may drop it.)
    const dropped = (): number =>
      ["iptables", "iptables-legacy"].reduce((sum, iptables) => {
        const listed = hasTool(iptables)
          ? sh([iptables, "-w", "-t", "filter", "-L", "MINCS_INPUT", "-v", "-n", "-x"])
          : undefined;
        const line = listed?.status === 0 ? listed.stdout.split("\n").find((l) => l.includes("DROP")) : undefined;
        return sum + Number(line?.trim().split(/\s+/)[0] ?? 0);
      }, 0);
    try {
      ok(["ip", "-n", a.netns, "route", "del", "local", "127.0.0.0/8", "dev", "lo", "table", "local"]);
      ok(["ip", "-n", a.netns, "route", "del", "local", "127.0.0.1", "dev", "lo", "table", "local"]);
      ok(["ip", "-n", a.netns, "route", "add", "127.0.0.0/8", "via", "192.168.139.1", "dev", "eth0"]);
      const before = dropped();
      ok([
        "ip",
        "netns",
        "exec",
        a.netns,
        NODE,
        "-e",
        `const s = require("dgram").createSocket("udp4"); s.send("secret?", ${local.port}, "127.0.0.1", () => s.send("after", ${bridge.port}, "192.168.139.1", () => s.close()))`,
      ]);
      await waitFor("the second datagram, to the bridge's address", () => seen.includes("after"), {
        saw: () => `on the bridge's address: ${seen.join(" ")}; on 127.0.0.1: ${got.join(" ")}`,
      });
      await waitFor("the first datagram to be dropped, or to arrive", () => got.length > 0 || dropped() > before, {
        saw: () =>
          `DROP count ${dropped()} (was ${before}): the datagram did not even reach the host, the test proves nothing`,
      });
      await new Promise((res) => setImmediate(res)); // (one more turn: a datagram read with the second is handled)
      assert.deepEqual(got, [], "the container reached a service on the host's 127.0.0.1");
    } finally {
      local.socket.close();
      bridge.socket.close();
    }
  });

  test("a failed add undoes itself, and deletes nothing it did not make", () => {
    const c = newContainer();
    const taken = vethName(c.id);
    ok(["ip", "link", "add", taken, "type", "veth", "peer", "name", `mdtp${process.pid}`.slice(0, 15)]);
    try {
      const r = dens(["add", c.netns, c.id]);
      assert.equal(r.status, 1);
      assert.equal(r.stdout, "");
      assert.match(r.stderr, /failed: ip link add/);
      assert.ok(!leaseLines().some((l) => l.includes(c.id)), "the lease stayed");
      assert.ok(links().includes(taken), "it deleted an interface it did not make");
    } finally {
      sh(["ip", "link", "del", taken]);
    }
  });

  test("del: the veth, the lease and every rule of both go; the bridge and shared rules stay; del again is fine", () => {
    for (const c of [a, b]) {
      const r = dens(["del", c.netns, c.id]);
      assert.equal(r.status, 0, r.stderr);
    }
    for (const c of [a, b]) {
      assert.ok(!links().includes(vethName(c.id)), `veth of ${c.id} left`);
      assert.ok(!leaseLines().some((l) => l.split(" ")[1] === c.id), `lease of ${c.id} left`);
      assert.ok(!tagged(save(), c.id), `a rule of ${c.id} left in iptables-save`);
      assert.ok(!tagged(save("iptables", "nat"), c.id), `a rule of ${c.id} left in iptables-save -t nat`);
      assert.ok(!tagged(save("iptables", "filter"), c.id));
      assert.equal(dens(["del", c.netns, c.id]).status, 0);
    }
    assert.ok(links().includes(BRIDGE));
    assert.match(save("iptables", "nat"), /-A POSTROUTING -j MINCS_POSTROUTING/);
    // And with the netns gone too (a cleanup chain after a failure): still fine.
    sh(["ip", "netns", "del", a.netns]);
    assert.equal(dens(["del", a.netns, a.id]).status, 0);
  });

  test("a lease whose netns is gone is reused, and its port map goes with it", async () => {
    // A lease file of this test's own (MINC_DENS_LEASE): on the host's, another container starting
    // meanwhile would take the address freed here. Its .2-.249 are held by lines that never go stale
    // (the shell MINCS's form), so that the addresses given here, from .250 up, are no other
    // container's on the bridge (those lease from the host's file, lowest first).
    const dead = newContainer(); // (first: while a netns of ours is there, no other test of the dens network stops it)
    assert.equal(dens(["up"]).status, 0); // (an up that makes the bridge starts the lease file anew)
    const dir = mkdtempSync("/tmp/minc-dens-test-");
    const file = `${dir}/lease`;
    const env = { MINC_DENS_LEASE: file };
    writeFileSync(file, Array.from({ length: 248 }, (_, i) => `192.168.139.${i + 2}/24 held${i + 2}\n`).join(""));
    try {
      const added = dens(["add", dead.netns, dead.id], env);
      assert.equal(added.status, 0, added.stderr);
      const ip = added.stdout.trim();
      assert.equal(ip, "192.168.139.250");
      assert.equal(dens(["map", dead.id, ip, `${await freePort()}:80`], env).status, 0);
      ok(["ip", "netns", "del", dead.netns]); // the container died without del
      // The veth goes with its netns (the kernel tears the netns down in the background).
      await waitFor(`the veth of ${dead.id} to go with its netns`, () => !links().includes(vethName(dead.id)), {
        saw: () => links().join(" "),
      });
      const next = newContainer();
      const r = dens(["add", next.netns, next.id], env);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout.trim(), ip);
      assert.ok(!leaseLines(file).some((l) => l.includes(dead.id)));
      assert.ok(!tagged(save("iptables", "nat"), dead.id), "the dead container's DNAT would reach the new one");
      // Ten in a row: add and del reuse the same address.
      const addresses = new Set<string>();
      for (let i = 0; i < 10; i++) {
        const c = newContainer();
        const ra = dens(["add", c.netns, c.id], env);
        assert.equal(ra.status, 0, ra.stderr);
        addresses.add(ra.stdout.trim());
        assert.equal(dens(["del", c.netns, c.id], env).status, 0);
      }
      assert.deepEqual([...addresses], ["192.168.139.251"]);
      assert.equal(dens(["del", next.netns, next.id], env).status, 0);
      assert.equal(leaseLines(file).filter((l) => !/ held\d+ /.test(`${l} `)).length, 0, leaseLines(file).join("\n"));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("8 concurrent adds (from no bridge at all) get 8 distinct addresses and one set of rules; 8 concurrent dels leave nothing", async (t) => {
    const notStopped = await stopIfAlone();
    if (notStopped) t.diagnostic(`the adds start with the bridge up, not from no bridge at all: ${notStopped}`);
    const cs = Array.from({ length: 8 }, () => newContainer());
    const added = await Promise.all(cs.map((c) => densAsync(["add", c.netns, c.id])));
    for (const r of added) assert.equal(r.status, 0, r.stderr);
    const rules = (save("iptables", "filter") + save("iptables", "nat")).split("\n");
    for (const hook of hookRules()) {
      const line = `-A ${hook.chain} ${hook.args.join(" ")}`;
      assert.equal(rules.filter((l) => l === line).length, 1, line);
    }
    assert.equal(rules.filter((l) => l.startsWith("-A MINCS_POSTROUTING")).length, 3);
    const ips = added.map((r) => r.stdout.trim());
    assert.equal(new Set(ips).size, 8, ips.join(" "));
    for (const [i, c] of cs.entries()) assert.ok(leaseLines().includes(`${ips[i]} ${c.id} ${c.netns}`));
    const deleted = await Promise.all(cs.map((c) => densAsync(["del", c.netns, c.id])));
    for (const r of deleted) assert.equal(r.status, 0, r.stderr);
    for (const c of cs) {
      assert.ok(!links().includes(vethName(c.id)));
      assert.ok(!leaseLines().some((l) => l.includes(c.id)));
    }
  });

  test("exhaustion: exit 1 with a clear error, nothing made (a full lease file of live leases, MINC_DENS_LEASE)", () => {
    const c = newContainer();
    const dir = mkdtempSync("/tmp/minc-dens-test-");
    try {
      const file = `${dir}/lease`;
      const full = Array.from({ length: 253 }, (_, i) => `192.168.139.${i + 2} other${i} ${c.netns}\n`).join("");
      writeFileSync(file, full);
      const r = dens(["add", c.netns, c.id], { MINC_DENS_LEASE: file });
      assert.equal(r.status, 1);
      assert.equal(r.stdout, "");
      assert.match(
        r.stderr,
        /^minc-dens: no free address in 192\.168\.139\.0\/24: all 253 of 253 are leased to running containers\n$/,
      );
      assert.equal(readFileSync(file, "utf8"), full);
      assert.ok(!links().includes(vethName(c.id)));
      assert.equal(
        ok(["ip", "-n", c.netns, "-o", "link"]).split("\n").filter(Boolean).length,
        1,
        "only lo in the netns",
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("stop: the bridge, every MINCS chain and the lease file go; stop again is fine", async (t) => {
    for (const c of made.splice(0)) {
      dens(["del", c.netns, c.id]);
      sh(["ip", "netns", "del", c.netns]);
    }
    const skipped = await stopIfAlone({}, () => {
      assert.ok(!links().includes(BRIDGE));
      assert.deepEqual(
        links().filter((l) => l.startsWith("mincv")),
        [],
      );
      assert.doesNotMatch(save(), /MINCS|minc:/);
      assert.doesNotMatch(save("iptables", "nat"), /MINCS|minc:/);
      assert.ok(!existsSync(LEASE));
    });
    if (skipped) {
      t.skip(skipped);
      return;
    }
    const again = await stopIfAlone();
    if (again) t.diagnostic(`stop again: ${again}`);
  });
});

describe("minc-dens with iptables-legacy", {
  skip: skip ?? (hasTool("iptables-legacy") ? undefined : "needs iptables-legacy"),
}, () => {
  const env = { MINC_DENS_IPTABLES: "iptables-legacy" };
  after(() => cleanUp("iptables-legacy"));

  test("add, map through 127.0.0.1, del and stop work the same", async (t) => {
    const c = newContainer();
    const port = await freePort();
    const r = dens(["add", c.netns, c.id], env);
    assert.equal(r.status, 0, r.stderr);
    const ip = r.stdout.trim();
    await serve(c.netns, "tcp", 80, "legacy");
    assert.equal(dens(["map", c.id, ip, `${port}:80`], env).status, 0);
    assert.equal(dens(["up"], env).status, 0);
    assert.equal(await tcpGet("127.0.0.1", port), "legacy 192.168.139.1\n");
    const rules = save("iptables-legacy");
    assert.ok(tagged(rules, c.id));
    assert.equal(rules.split("\n").filter((l) => l === "-A FORWARD -j MINCS_FORWARD").length, 1);
    assert.equal(dens(["del", c.netns, c.id], env).status, 0);
    assert.ok(!tagged(save("iptables-legacy"), c.id));
    assert.ok(!tagged(save("iptables-legacy", "nat"), c.id));
    for (const s of servers.splice(0)) s.kill("SIGKILL");
    for (const m of made.splice(0)) sh(["ip", "netns", "del", m.netns]);
    const skipped = await stopIfAlone(env, () => {
      assert.doesNotMatch(save("iptables-legacy") + save("iptables-legacy", "nat"), /MINCS|minc:/);
      assert.ok(!links().includes(BRIDGE));
    });
    if (skipped) t.diagnostic(`stop: ${skipped}`);
  });
});
