// minc-dens: the "dens" network of containers (Docker-like NAT).
//
//   minc-dens up                       make the bridge, forwarding and the shared rules
//   minc-dens add NETNS ID             plug netns NETNS (container ID) in; prints its address
//   minc-dens del NETNS ID             unplug it: its rules, veth and lease go
//   minc-dens map ID IP HOSTPORT[:PORT[:PROTO]]...   publish ports of the container at IP
//   minc-dens stop                     remove everything (the bridge, every rule, the leases)
//
// How container networking works here, piece by piece:
//
// - A bridge, mincbr0, is a virtual Ethernet switch inside the host kernel.
//   The host has an address on it, 192.168.139.1/24, and so is the gateway
//   of the network 192.168.139.0/24 behind it.
// - Each container has its own network namespace (its own interfaces,
//   routes and firewall), made by the caller with `ip netns add`. A veth
//   pair, a virtual cable with two ends, connects it: one end (mincvHASH)
//   stays on the host, plugged into the bridge; the other end is created
//   inside the namespace as eth0, gets the container's address and a default
//   route via 192.168.139.1.
// - Addresses are leased from /var/run/minc.lease, one "ADDRESS ID NETNS"
//   line each. A lease whose namespace is gone is stale (its container died
//   without cleaning up) and its address is given out again.
// - The host routes between the bridge and its other interfaces
//   (ip_forward), and iptables rewrites addresses, in the project's own
//   chains so that all of it can be listed and removed as a unit:
//     filter MINCS_FORWARD      (from FORWARD) lets the containers' traffic
//                               out, replies back in, and mapped ports in;
//     filter MINCS_INPUT        (from INPUT) keeps the containers off the
//                               host's 127.0.0.1 (which route_localnet below
//                               would otherwise open to them);
//     nat MINCS_DNAT            (from PREROUTING and OUTPUT, for packets to a
//                               local address) sends a mapped host port to
//                               the container: DNAT, destination rewritten;
//     nat MINCS_POSTROUTING     (from POSTROUTING) gives what leaves the
//                               containers' network the host's address
//                               (MASQUERADE, source rewritten), and
//                               what enters it from 127.0.0.1 (a port map
//                               used through loopback, with route_localnet
//                               on the bridge) the bridge's.
//   Every rule of one container carries the comment "minc:ID", so `del`
//   finds them all without remembering which ports were mapped.
//
// Several containers may start at once, so every subcommand works under one
// exclusive lock, /var/run/minc-dens.lock. Node has no flock(), so the
// file is opened here and flock(1) is run on that open file (as fd 3): a
// flock lock belongs to the open file, not to the process that took it, so
// it stays held after flock(1) exits, until this process closes the file or
// dies (the kernel then releases it: no stale lock is ever left). That is
// the shell's `exec 3>>LOCK; flock 3` without a second Node process.
import { spawnSync } from "node:child_process";
import {
  closeSync,
  existsSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import {
  BRIDGE,
  CHAINS,
  GATEWAY,
  OWN_CHAINS,
  SUBNET,
  allocate,
  chainsIn,
  checkContainerIp,
  checkId,
  checkNetns,
  formatLeases,
  formatPortMap,
  hookRules,
  hooksIn,
  mappedPorts,
  parseLeases,
  parseListing,
  parsePortMap,
  portRules,
  release,
  ruleArgv,
  rulesOf,
  sharedRules,
  tag,
  vethName,
  type Lease,
  type PortMap,
  type Rule,
  type Table,
} from "../lib/net/dens.ts";
import { MincError, usageError, warn } from "../lib/core/fail.ts";
import { capture, removeFile, run, writeFile } from "../lib/core/run.ts";
import { readSettings } from "../lib/core/settings.ts";
import { phase, quote, quoteAll, shown, step } from "../lib/core/trace.ts";

/** The lease file; MINC_DENS_LEASE points the tests at another (set by main()). */
let LEASE: string;
const LOCK = "/var/run/minc-dens.lock";
/** iptables, iptables-nft or iptables-legacy (MINC_DENS_IPTABLES); the rules are the same (set by main()). */
let IPTABLES: string;
const NETNS_DIR = "/var/run/netns";
const USAGE = "usage: minc-dens up | add NETNS ID | del NETNS ID | map ID IP HOSTPORT[:PORT[:PROTO]]... | stop";

// ---- small helpers: each command shown in the trace like run()'s ----

/** Run a command whose failure is an answer (iptables -C: is the rule there?). */
function succeeds(argv: readonly string[]): boolean {
  shown(quoteAll(argv));
  const r = spawnSync(argv[0], argv.slice(1), { stdio: "ignore" });
  if (r.error) throw new MincError(`cannot run ${argv[0]}: ${r.error.message}`);
  return r.status === 0;
}

function withLock<T>(body: () => T): T {
  step("Take the lock: one minc-dens at a time changes the bridge, the rules and the leases");
  shown(`exec 3>>${quote(LOCK)}`);
  const fd = openSync(LOCK, "a");
  try {
    const argv = ["flock", "-w", "60", "3"];
    shown(quoteAll(argv));
    const r = spawnSync(argv[0], argv.slice(1), { stdio: ["ignore", "inherit", "inherit", fd] });
    if (r.error) throw new MincError(`cannot run flock: ${r.error.message}`);
    if (r.status !== 0) throw new MincError(`could not lock ${LOCK} within 60 s`);
    return body();
  } finally {
    step("Release the lock");
    shown("exec 3>&-");
    closeSync(fd);
  }
}

function iptables(op: "-A" | "-I" | "-D", rule: Rule): void {
  run(ruleArgv(IPTABLES, op, rule));
}

/**
 * iptables -S of one table. Not capture(): iptables-nft warns on every call
 * once anything has used iptables-legacy since boot (its tables stay), and
 * that warning would be noise on each container's start.
 */
function listing(table: Table): string {
  const argv = [IPTABLES, "-w", "-t", table, "-S"];
  shown(quoteAll(argv));
  const r = spawnSync(argv[0], argv.slice(1), { stdio: ["ignore", "pipe", "pipe"], encoding: "utf8" });
  if (r.error) throw new MincError(`cannot run ${argv[0]}: ${r.error.message}`);
  const errors = r.stderr.split("\n").filter((l) => l && !/^# Warning: iptables-legacy tables present/.test(l));
  if (errors.length) process.stderr.write(`${errors.join("\n")}\n`);
  if (r.status !== 0) throw new MincError(`failed: ${quoteAll(argv)} (exit ${r.status ?? r.signal})`);
  return r.stdout;
}

function listRules(): Rule[] {
  return [...parseListing("filter", listing("filter")), ...parseListing("nat", listing("nat"))];
}

function sysfs(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8").trim();
  } catch {
    return undefined;
  }
}

function readLeases(): Lease[] {
  return parseLeases(sysfs(LEASE) ?? "");
}

/** Replace the lease file at once (a new file renamed over it), so a crash never leaves half of it. */
function writeLeases(leases: readonly Lease[]): void {
  const next = `${LEASE}.new`;
  if (leases.length) writeFile(next, formatLeases(leases));
  else {
    shown(`: > ${quote(next)}`);
    writeFileSync(next, "");
  }
  shown(`mv ${quote(next)} ${quote(LEASE)}`);
  renameSync(next, LEASE);
}

function netnsExists(netns: string): boolean {
  return existsSync(`${NETNS_DIR}/${netns}`);
}

const alive = (l: Lease): boolean => l.netns === "-" || netnsExists(l.netns);

// ---- up: the bridge, forwarding, the chains ----

/** Make the bridge and give it the gateway address; true if it was new. */
function makeBridge(): boolean {
  step(`The bridge ${BRIDGE}, a virtual switch for the containers, with the gateway address ${GATEWAY}/24`);
  let made = false;
  if (!existsSync(`/sys/class/net/${BRIDGE}`)) {
    run(["ip", "link", "add", BRIDGE, "type", "bridge"]);
    made = true;
  }
  const addresses = capture(["ip", "-4", "-o", "addr", "show", "dev", BRIDGE]);
  if (!addresses.includes(` ${GATEWAY}/24 `)) run(["ip", "addr", "add", `${GATEWAY}/24`, "dev", BRIDGE]);
  const flags = Number(sysfs(`/sys/class/net/${BRIDGE}/flags`) ?? "0");
  if (!(flags & 1)) run(["ip", "link", "set", BRIDGE, "up"]);
  return made;
}

function enableForwarding(): void {
  const forward = "/proc/sys/net/ipv4/ip_forward";
  if (sysfs(forward) !== "1") {
    step("Let the host route packets between the bridge and its other interfaces");
    writeFile(forward, "1\n");
  }
  const localnet = `/proc/sys/net/ipv4/conf/${BRIDGE}/route_localnet`;
  if (sysfs(localnet) !== "1") {
    step("Let 127.0.0.1 be routed to the bridge: a port map used through loopback");
    writeFile(localnet, "1\n");
  }
}

function makeChains(): void {
  step(
    `Our own chains ${Object.values(CHAINS).join(", ")}: the shared rules in them, then one jump into each from the built-in chain`,
  );
  const listed = { filter: listing("filter"), nat: listing("nat") };
  const rules = [...parseListing("filter", listed.filter), ...parseListing("nat", listed.nat)];
  const fresh = new Set<string>();
  for (const { table, chain } of OWN_CHAINS) {
    if (chainsIn(listed[table]).has(chain)) continue;
    run([IPTABLES, "-w", "-t", table, "-N", chain]);
    fresh.add(chain);
  }
  const same = (a: Rule, b: Rule): boolean =>
    a.table === b.table && a.chain === b.chain && quoteAll(a.args) === quoteAll(b.args);
  for (const rule of sharedRules()) {
    // Found in the listing, or (if this iptables prints it differently) by iptables -C itself.
    if (fresh.has(rule.chain) || !(rules.some((r) => same(r, rule)) || succeeds(ruleArgv(IPTABLES, "-C", rule)))) {
      iptables("-A", rule);
    }
  }
  // Hooks last, so that no packet meets a half-filled chain. Exactly one each.
  const hooks = hooksIn(rules);
  for (const hook of hookRules()) {
    const target = hook.args[hook.args.length - 1];
    const found = hooks.filter(
      (r) => r.table === hook.table && r.chain === hook.chain && r.args[r.args.length - 1] === target,
    );
    if (found.length === 0) iptables("-I", hook);
    for (const extra of found.slice(1)) iptables("-D", extra);
  }
}

function up(): void {
  if (makeBridge()) {
    step("A new bridge has no container on it: start with no leases");
    writeLeases([]);
  }
  enableForwarding();
  makeChains();
}

// ---- add / del: one container ----

/** Remove every rule tagged with one of these container ids. */
function removeRulesOf(ids: readonly string[], rules?: Rule[]): void {
  if (!ids.length) return;
  if (!rules) {
    step(`Find the rules tagged ${ids.map(tag).join(", ")}`);
    rules = listRules();
  }
  for (const id of ids) {
    const mine = rulesOf(rules, id);
    if (!mine.length) continue;
    step(`Remove the port-map rules of ${id}`);
    for (const rule of mine) iptables("-D", rule);
  }
}

function removeVeth(id: string): void {
  const veth = vethName(id);
  if (!existsSync(`/sys/class/net/${veth}`)) return;
  step(`Remove the veth pair of ${id} (deleting one end deletes both)`);
  run(["ip", "link", "del", veth]);
}

function releaseLease(id: string): void {
  const leases = readLeases();
  const kept = release(leases, id);
  if (kept.length === leases.length) return;
  step(`Free the address leased to ${id}`);
  writeLeases(kept);
}

function leaseAddress(netns: string, id: string): string {
  step(`Lease the lowest free address in ${SUBNET} from ${LEASE} (a lease whose netns is gone is free again)`);
  const a = allocate(readLeases(), id, netns, alive);
  writeLeases(a.leases);
  // A stale container's rules would send its mapped ports to whoever gets its address next.
  removeRulesOf(a.dropped.map((l) => l.id));
  return a.ip;
}

/** Plug the netns in; onVeth is called once the veth pair exists (so a failure undoes it, and only it). */
function plugIn(netns: string, ip: string, id: string, onVeth: () => void): void {
  const veth = vethName(id);
  step(
    `A veth pair, a virtual cable: ${veth} stays on the host, plugged into ${BRIDGE}; its other end is made inside ${netns} as eth0`,
  );
  run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns]);
  onVeth();
  run(["ip", "link", "set", veth, "master", BRIDGE, "up"]);
  step(
    "Hairpin mode: the bridge may send a frame back out of the port it came in by (a container using its own port map)",
  );
  run(["ip", "link", "set", veth, "type", "bridge_slave", "hairpin", "on"]);
  step(`Inside ${netns}: lo and eth0 up, the address ${ip}/24 on eth0, and the default route via the bridge`);
  run(["ip", "-n", netns, "link", "set", "lo", "up"]);
  run(["ip", "-n", netns, "addr", "add", `${ip}/24`, "dev", "eth0"]);
  run(["ip", "-n", netns, "link", "set", "eth0", "up"]);
  run(["ip", "-n", netns, "route", "add", "default", "via", GATEWAY]);
}

function add(netns: string, id: string): void {
  if (!netnsExists(netns))
    throw usageError(`no network namespace ${netns} (make it first with: ip netns add ${netns})`);
  phase(3);
  const ip = withLock(() => {
    up();
    const ip = leaseAddress(netns, id);
    let vethMade = false;
    try {
      plugIn(netns, ip, id, () => {
        vethMade = true;
      });
    } catch (e) {
      step("That failed: undo it");
      if (vethMade) removeVeth(id);
      releaseLease(id);
      throw e;
    }
    return ip;
  });
  writeSync(1, `${ip}\n`); // (synchronous: an EPIPE, minc gone, is then an error main() handles)
}

/** Undo add and map. Each part is tried even if another fails: this runs from a cleanup chain. */
function del(id: string): void {
  withLock(() => {
    let failure: unknown;
    for (const part of [() => removeRulesOf([id]), () => removeVeth(id), () => releaseLease(id)]) {
      try {
        part();
      } catch (e) {
        failure ??= e;
      }
    }
    if (failure) throw failure;
  });
}

// ---- map: publish ports ----

function map(id: string, ip: string, maps: PortMap[]): void {
  phase(3);
  withLock(() => {
    up();
    step(`Is a host port of ${maps.map(formatPortMap).join(", ")} mapped already?`);
    const leases = readLeases();
    const own = leases.find((l) => l.id === id);
    if (own && own.ip !== ip) throw usageError(`${id} has the address ${own.ip}, not ${ip}`);
    const rules = listRules();
    const live = new Set(leases.filter(alive).map((l) => l.id));
    const todo: PortMap[] = [];
    const stale = new Set<string>();
    for (const m of maps) {
      const taken = mappedPorts(rules).find((x) => x.hostPort === m.hostPort && x.proto === m.proto);
      if (!taken) todo.push(m);
      else if (taken.id === id && taken.to === `${ip}:${m.port}`)
        continue; // mapped by an earlier call
      else if (taken.id && taken.id !== id && !live.has(taken.id)) {
        stale.add(taken.id);
        todo.push(m);
      } else {
        throw new MincError(
          `host port ${m.hostPort}/${m.proto} is already mapped to ${taken.to}${taken.id ? ` (container ${taken.id})` : ""}`,
        );
      }
    }
    if (stale.size) {
      step(`Mapped by containers that are gone: ${[...stale].join(", ")}`);
      removeRulesOf([...stale], rules);
    }
    for (const m of todo) {
      step(`Map host port ${m.hostPort}/${m.proto} to ${ip}:${m.port}: DNAT it, and let it through to the bridge`);
      for (const rule of portRules(id, ip, m)) iptables("-A", rule);
    }
  });
}

// ---- stop: remove everything ----

function stop(): void {
  withLock(() => {
    const live = readLeases().filter(alive);
    if (live.length) warn(`containers still on ${BRIDGE} lose their network: ${live.map((l) => l.id).join(" ")}`);
    step("Remove the jumps into our chains, then the chains with all their rules");
    const listed = { filter: listing("filter"), nat: listing("nat") };
    const rules = [...parseListing("filter", listed.filter), ...parseListing("nat", listed.nat)];
    for (const hook of hooksIn(rules)) iptables("-D", hook);
    for (const { table, chain } of OWN_CHAINS) {
      if (!chainsIn(listed[table]).has(chain)) continue;
      run([IPTABLES, "-w", "-t", table, "-F", chain]);
      run([IPTABLES, "-w", "-t", table, "-X", chain]);
    }
    const veths = readdirSync("/sys/class/net").filter((n) => /^mincv[0-9a-f]{8}$/.test(n));
    if (veths.length) step("Remove the veth pairs of containers still plugged in");
    for (const veth of veths) run(["ip", "link", "del", veth]);
    if (existsSync(`/sys/class/net/${BRIDGE}`)) {
      step(`Remove the bridge ${BRIDGE}`);
      run(["ip", "link", "del", BRIDGE]);
    }
    const files = [LEASE, `${LEASE}.new`].filter((f) => existsSync(f));
    if (files.length) step("Remove the leases");
    for (const f of files) removeFile(f);
  });
}

// ---- the command line ----

function argc(args: string[], n: number): void {
  if (args.length !== n) throw usageError(USAGE);
}

export function main(argv: string[], env: NodeJS.ProcessEnv): number {
  const settings = readSettings(env);
  LEASE = settings.MINC_DENS_LEASE || "/var/run/minc.lease";
  IPTABLES = settings.MINC_DENS_IPTABLES || "iptables";
  const [cmd, ...args] = argv;
  switch (cmd) {
    case "up":
      argc(args, 0);
      phase(3);
      withLock(up);
      return 0;
    case "add":
      argc(args, 2);
      add(checkNetns(args[0]), checkId(args[1]));
      return 0;
    case "del":
      argc(args, 2);
      checkNetns(args[0]);
      del(checkId(args[1]));
      return 0;
    case "map": {
      if (args.length < 3) throw usageError(USAGE);
      const [id, ip, ...specs] = args;
      const maps = specs.map(parsePortMap);
      const dup = maps.find((m, i) => maps.findIndex((o) => o.hostPort === m.hostPort && o.proto === m.proto) !== i);
      if (dup) throw usageError(`host port ${dup.hostPort}/${dup.proto} is mapped twice`);
      map(checkId(id), checkContainerIp(ip), maps);
      return 0;
    }
    case "stop":
      argc(args, 0);
      stop();
      return 0;
    default:
      throw usageError(cmd === undefined ? USAGE : `unknown subcommand ${JSON.stringify(cmd)}; ${USAGE}`);
  }
}
