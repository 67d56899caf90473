// The pure part of minc-dens (the "dens" network: a bridge, a veth pair per
// container, leased addresses and iptables rules in the project's own
// chains): names, port maps, leases and rule specs, with no side effects so
// that they can be unit-tested. libexec/minc-dens.ts runs the commands.
import { MincError, usageError } from "../core/fail.ts";
import { shortHash } from "../core/hash.ts";

/** The bridge every dens container is plugged into, and its network. */
export const BRIDGE = "mincbr0";
export const NET_PREFIX = "192.168.139";
export const SUBNET = `${NET_PREFIX}.0/24`;
export const GATEWAY = `${NET_PREFIX}.1`;
/** Host numbers a container may lease: .2 to .254 (.1 is the bridge, .255 broadcast). */
export const FIRST_HOST = 2;
export const LAST_HOST = 254;

/** The project's own chains; everything per container lives in these. */
export const CHAINS = {
  /** filter: what the containers may send to the host itself (not its 127.0.0.1). */
  input: "MINCS_INPUT",
  /** filter: what may be forwarded to and from the bridge. */
  forward: "MINCS_FORWARD",
  /** nat: DNAT of mapped host ports, for packets from outside (PREROUTING) and from the host itself (OUTPUT). */
  dnat: "MINCS_DNAT",
  /** nat: MASQUERADE of what leaves the bridge network, and of loopback into it. */
  postrouting: "MINCS_POSTROUTING",
} as const;

export type Table = "filter" | "nat";

/** One iptables rule: the words after `-A CHAIN`, in the order iptables -S prints them. */
export interface Rule {
  table: Table;
  chain: string;
  args: string[];
}

// ---- names ----

const NAME = /^[A-Za-z0-9_][A-Za-z0-9_.:@%+=,-]{0,199}$/;

/** A container id (the basename of its working directory) as minc-dens accepts it. */
export function checkId(id: string | undefined): string {
  if (!id || !NAME.test(id))
    throw usageError(`bad container id ${JSON.stringify(id ?? "")}: use letters, digits and _.:@%+=,- (at most 200)`);
  return id;
}

/** A network namespace name, as `ip netns add` made it (a file under /run/netns). */
export function checkNetns(name: string | undefined): string {
  if (!name || !NAME.test(name) || name.length > 200)
    throw usageError(`bad network namespace name ${JSON.stringify(name ?? "")}`);
  return name;
}

/** An IPv4 address inside the bridge network (a container's). */
export function checkContainerIp(ip: string | undefined): string {
  const m = /^192\.168\.139\.(\d{1,3})$/.exec(ip ?? "");
  const host = m ? Number(m[1]) : NaN;
  if (!(host >= FIRST_HOST && host <= LAST_HOST))
    throw usageError(
      `bad address ${JSON.stringify(ip ?? "")}: a container's address is ${NET_PREFIX}.${FIRST_HOST}-${LAST_HOST}`,
    );
  return `${NET_PREFIX}.${host}`;
}

/**
 * The host end of a container's veth pair. Interface names have at most 15
 * characters and ids may be longer, so the name is "mincv" and a hash of the
 * id: `del` finds it again from the id alone, without remembering anything.
 */
export function vethName(id: string): string {
  return `mincv${shortHash(id)}`;
}

/** The comment that tags every rule of one container, so that `del` finds them all. */
export function tag(id: string): string {
  return `minc:${id}`;
}

// ---- port maps ----

export type Proto = "tcp" | "udp";

export interface PortMap {
  hostPort: number;
  port: number;
  proto: Proto;
}

function parsePort(word: string, what: string, spec: string): number {
  const n = /^\d{1,5}$/.test(word) ? Number(word) : NaN;
  if (!(n >= 1 && n <= 65535))
    throw usageError(`bad port map ${JSON.stringify(spec)}: ${what} must be a number from 1 to 65535`);
  return n;
}

/** HOSTPORT[:PORT[:PROTO]]: PORT defaults to HOSTPORT, PROTO to tcp. */
export function parsePortMap(spec: string): PortMap {
  const parts = spec.split(":");
  if (parts.length > 3) throw usageError(`bad port map ${JSON.stringify(spec)}: use HOSTPORT[:PORT[:PROTO]]`);
  const hostPort = parsePort(parts[0], "HOSTPORT", spec);
  const port = parts.length > 1 ? parsePort(parts[1], "PORT", spec) : hostPort;
  const proto = parts[2] ?? "tcp";
  if (proto !== "tcp" && proto !== "udp")
    throw usageError(`bad port map ${JSON.stringify(spec)}: PROTO must be tcp or udp`);
  return { hostPort, port, proto };
}

export function formatPortMap(m: PortMap): string {
  return `${m.hostPort}:${m.port}:${m.proto}`;
}

// ---- leases: /var/run/minc.lease, one "ADDRESS ID NETNS" per line ----

export interface Lease {
  ip: string;
  id: string;
  /** The container's network namespace; "-" when it has none (never stale then). */
  netns: string;
}

/** Read a lease file; lines it cannot read (the shell MINCS's "ADDR/24 IFNAME") are kept as leases without a netns. */
export function parseLeases(text: string): Lease[] {
  const leases: Lease[] = [];
  for (const line of text.split("\n")) {
    const [addr, id, netns] = line.trim().split(/\s+/);
    if (!addr || !id) continue;
    const ip = addr.replace(/\/\d+$/, "");
    if (!/^\d+\.\d+\.\d+\.\d+$/.test(ip)) continue;
    leases.push({ ip, id, netns: netns ?? "-" });
  }
  return leases;
}

export function formatLeases(leases: readonly Lease[]): string {
  return leases.map((l) => `${l.ip} ${l.id} ${l.netns}\n`).join("");
}

export interface Allocation {
  ip: string;
  /** The lease file's new content: the live leases and the new one. */
  leases: Lease[];
  /** Leases dropped: stale ones (their netns is gone) and an earlier one of the same id. Their rules must go too. */
  dropped: Lease[];
}

/**
 * Lease the lowest free address to ID. A lease is stale when its netns no
 * longer exists (`alive` says); stale leases are dropped and their addresses
 * reused. Throws when every address is held by a live lease.
 */
export function allocate(
  current: readonly Lease[],
  id: string,
  netns: string,
  alive: (l: Lease) => boolean,
): Allocation {
  const dropped = current.filter((l) => l.id === id || (l.netns !== "-" && !alive(l)));
  const kept = current.filter((l) => !dropped.includes(l));
  const used = new Set(kept.map((l) => l.ip));
  for (let host = FIRST_HOST; host <= LAST_HOST; host++) {
    const ip = `${NET_PREFIX}.${host}`;
    if (!used.has(ip)) return { ip, leases: [...kept, { ip, id, netns }], dropped };
  }
  throw new ExhaustedError(kept.length);
}

/** Every address is leased to a running container: exit 1, nothing made. */
export class ExhaustedError extends MincError {
  constructor(inUse: number) {
    super(
      `no free address in ${SUBNET}: all ${inUse} of ${LAST_HOST - FIRST_HOST + 1} are leased to running containers`,
    );
  }
}

export function release(current: readonly Lease[], id: string): Lease[] {
  return current.filter((l) => l.id !== id);
}

// ---- iptables rules ----

/** Chains to make, in order. */
export const OWN_CHAINS: readonly { table: Table; chain: string }[] = [
  { table: "filter", chain: CHAINS.input },
  { table: "filter", chain: CHAINS.forward },
  { table: "nat", chain: CHAINS.dnat },
  { table: "nat", chain: CHAINS.postrouting },
];

/** The rules every container shares, in our own chains. */
export function sharedRules(): Rule[] {
  return [
    // route_localnet (below) lets 127.0.0.0/8 be routed on the bridge, both ways: a container must
    // not reach the host's loopback-only services that way. Only replies (to a port map used through
    // 127.0.0.1) may come in.
    {
      table: "filter",
      chain: CHAINS.input,
      args: [
        "-d",
        "127.0.0.0/8",
        "-i",
        BRIDGE,
        "-m",
        "conntrack",
        "!",
        "--ctstate",
        "RELATED,ESTABLISHED",
        "-j",
        "DROP",
      ],
    },
    // Containers may send anything out (to the world, to each other).
    { table: "filter", chain: CHAINS.forward, args: ["-i", BRIDGE, "-j", "ACCEPT"] },
    // Replies to what they sent may come back in.
    {
      table: "filter",
      chain: CHAINS.forward,
      args: ["-o", BRIDGE, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
    },
    // Outgoing traffic leaves with the host's address (the container's is private).
    { table: "nat", chain: CHAINS.postrouting, args: ["-s", SUBNET, "!", "-o", BRIDGE, "-j", "MASQUERADE"] },
    // A port map used through 127.0.0.1: a loopback source cannot go on a wire, so it becomes the bridge's.
    { table: "nat", chain: CHAINS.postrouting, args: ["-s", "127.0.0.0/8", "-o", BRIDGE, "-j", "MASQUERADE"] },
    // A container using a port map (of itself or another): the reply must come back through the host to be un-DNATed.
    {
      table: "nat",
      chain: CHAINS.postrouting,
      args: ["-s", SUBNET, "-o", BRIDGE, "-m", "conntrack", "--ctstate", "DNAT", "-j", "MASQUERADE"],
    },
  ];
}

/** The jumps from the built-in chains into ours (each inserted first, exactly once). */
export function hookRules(): Rule[] {
  const local = ["-m", "addrtype", "--dst-type", "LOCAL"];
  return [
    { table: "filter", chain: "INPUT", args: ["-j", CHAINS.input] },
    { table: "filter", chain: "FORWARD", args: ["-j", CHAINS.forward] },
    { table: "nat", chain: "PREROUTING", args: [...local, "-j", CHAINS.dnat] },
    { table: "nat", chain: "OUTPUT", args: [...local, "-j", CHAINS.dnat] },
    { table: "nat", chain: "POSTROUTING", args: ["-j", CHAINS.postrouting] },
  ];
}

/** The rules of one port map of container ID at IP: DNAT the host port, and let it through. */
export function portRules(id: string, ip: string, m: PortMap): Rule[] {
  const comment = ["-m", "comment", "--comment", tag(id)];
  return [
    {
      table: "nat",
      chain: CHAINS.dnat,
      args: [
        "-p",
        m.proto,
        "-m",
        m.proto,
        "--dport",
        String(m.hostPort),
        ...comment,
        "-j",
        "DNAT",
        "--to-destination",
        `${ip}:${m.port}`,
      ],
    },
    {
      table: "filter",
      chain: CHAINS.forward,
      args: [
        "-d",
        `${ip}/32`,
        "-o",
        BRIDGE,
        "-p",
        m.proto,
        "-m",
        m.proto,
        "--dport",
        String(m.port),
        ...comment,
        "-j",
        "ACCEPT",
      ],
    },
  ];
}

/** Split a line of `iptables -S` into words, as the shell would (it double-quotes comments). */
export function splitRule(line: string): string[] {
  const words: string[] = [];
  let word = "";
  let inWord = false;
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quoted) {
      if (c === "\\" && i + 1 < line.length) word += line[++i];
      else if (c === '"') quoted = false;
      else word += c;
    } else if (c === '"') {
      quoted = true;
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) words.push(word);
      word = "";
      inWord = false;
    } else {
      word += c;
      inWord = true;
    }
  }
  if (inWord) words.push(word);
  return words;
}

/** The rules listed by `iptables -t TABLE -S` (its -A lines). */
export function parseListing(table: Table, listing: string): Rule[] {
  const rules: Rule[] = [];
  for (const line of listing.split("\n")) {
    const words = splitRule(line);
    if (words[0] === "-A" && words[1]) rules.push({ table, chain: words[1], args: words.slice(2) });
  }
  return rules;
}

/** The chains a listing of `iptables -S` declares (its -N and -P lines). */
export function chainsIn(listing: string): Set<string> {
  const chains = new Set<string>();
  for (const line of listing.split("\n")) {
    const words = splitRule(line);
    if ((words[0] === "-N" || words[0] === "-P") && words[1]) chains.add(words[1]);
  }
  return chains;
}

/** The container id a rule is tagged with, if any. */
export function tagOf(rule: Rule): string | undefined {
  const i = rule.args.indexOf("--comment");
  const comment = i >= 0 ? rule.args[i + 1] : undefined;
  return comment?.startsWith("minc:") ? comment.slice(5) : undefined;
}

/** The rules of container ID in our chains. */
export function rulesOf(rules: readonly Rule[], id: string): Rule[] {
  return rules.filter((r) => isOwnChain(r.chain) && tagOf(r) === id);
}

export function isOwnChain(chain: string): boolean {
  return (Object.values(CHAINS) as string[]).includes(chain);
}

/** Rules in the built-in chains that jump into ours (the hooks, and any duplicate of them). */
export function hooksIn(rules: readonly Rule[]): Rule[] {
  return rules.filter((r) => !isOwnChain(r.chain) && isOwnChain(r.args[r.args.indexOf("-j") + 1] ?? ""));
}

/** What a DNAT rule of ours maps: host port, protocol, destination and owner. */
export interface Mapped {
  hostPort: number;
  proto: string;
  to: string;
  id: string | undefined;
}

export function mappedPorts(rules: readonly Rule[]): Mapped[] {
  const out: Mapped[] = [];
  for (const r of rules) {
    if (r.table !== "nat" || r.chain !== CHAINS.dnat) continue;
    const arg = (name: string): string | undefined => {
      const i = r.args.indexOf(name);
      return i >= 0 ? r.args[i + 1] : undefined;
    };
    const dport = arg("--dport");
    if (!dport) continue;
    out.push({ hostPort: Number(dport), proto: arg("-p") ?? "", to: arg("--to-destination") ?? "", id: tagOf(r) });
  }
  return out;
}

/** The iptables words that add/insert/check/delete a rule. */
export function ruleArgv(iptables: string, op: "-A" | "-I" | "-C" | "-D", rule: Rule): string[] {
  return [iptables, "-w", "-t", rule.table, op, rule.chain, ...rule.args];
}
