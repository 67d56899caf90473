// minc --net raw|dens and --port: real namespaces, a real bridge, real NAT.
// Traffic goes only to 127.0.0.1 and to addresses of namespaces made here.
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { after, describe, test } from "node:test";
import { MINC, cannotBoot, cleanEnv, hasTool, leftovers, minc, netLeftovers, rootfs, settled, sleep } from "./helpers.ts";

const missing = ["ip", "iptables", "nsenter"].filter((t) => !hasTool(t));
const skip = cannotBoot() ?? (missing.length ? `needs ${missing.join(", ")}` : undefined);

const before = new Set(netLeftovers());

describe("networking", { skip }, () => {
  after(() => {
    assert.deepEqual(netLeftovers().filter((x) => !before.has(x)), [], "the network kept something of a container");
    assert.deepEqual(leftovers(), []);
  });

  test("--net raw: only lo, up", () => {
    const r = minc(["--net", "raw", "-r", rootfs(), "ip", "-o", "link"]);
    assert.equal(r.status, 0, r.stderr);
    const links = r.stdout.trim().split("\n");
    assert.equal(links.length, 1, r.stdout);
    assert.match(links[0], /^1: lo: <LOOPBACK,UP/);
    const bare = minc(["-n", "-r", rootfs(), "cat", "/etc/hosts"]);
    assert.equal(bare.status, 0, bare.stderr);
  });

  test("--net raw,IFNAME moves a host interface in", () => {
    // One end of a veth pair stands for the host's interface (a virtual one goes with the namespace).
    assert.equal(spawnSync("ip", ["link", "add", "minctest0", "type", "veth", "peer", "name", "minctest1"]).status, 0);
    try {
      const r = minc(["--net", "raw,minctest0", "-r", rootfs(), "ip", "-o", "link"]);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /minctest0/);
      assert.equal(r.stdout.trim().split("\n").length, 2, r.stdout);
    } finally {
      spawnSync("ip", ["link", "del", "minctest1"], { stdio: "ignore" });
    }
  });

  test("--net dens: an address on 192.168.139.0/24, a default route, and /etc/hosts naming it", () => {
    const r = minc(["--net", "dens", "--name", "den", "-r", rootfs(), "sh", "-c", "ip -o -4 addr show eth0; ip route; cat /etc/hosts; ping -c1 -W2 192.168.139.1 >/dev/null && echo gateway-ok"]);
    assert.equal(r.status, 0, r.stderr);
    const ip = /inet (192\.168\.139\.\d+)\/24/.exec(r.stdout)?.[1];
    assert.ok(ip, r.stdout);
    assert.match(r.stdout, /^default via 192\.168\.139\.1 dev eth0/m);
    assert.match(r.stdout, new RegExp(`^${ip.replace(/\./g, "\\.")}\\s+den$`, "m"));
    assert.match(r.stdout, /gateway-ok/);
  });

  test("-p 18080:80 serves the container's httpd on the host's 127.0.0.1:18080; nothing remains after", async () => {
    const www = mkdtempSync("/tmp/minc-test-www-");
    writeFileSync(`${www}/index.html`, "hello from the den\n");
    const child = spawn(MINC, ["-p", "18080:80", "-b", `${www}:/www`, "-r", rootfs(), "httpd", "-f", "-p", "80", "-h", "/www"],
      { env: cleanEnv(), stdio: "ignore" });
    const ended = new Promise<void>((res) => child.on("exit", () => res()));
    try {
      let page = "";
      for (let t = 0; t < 8000 && !page; t += 100) {
        await sleep(100);
        try {
          page = await (await fetch("http://127.0.0.1:18080/", { signal: AbortSignal.timeout(2000) })).text();
        } catch {
          // not serving yet
        }
      }
      assert.equal(page, "hello from the den\n");
    } finally {
      child.kill("SIGTERM");
      await ended;
      rmSync(www, { recursive: true });
    }
    await sleep(100);
    assert.deepEqual(netLeftovers().filter((x) => !before.has(x)), []);
  });

  test("an outside host (a test namespace) reaches a mapped port through the host's address, and sees the host as the source of the container's connections", async () => {
    // The "outside host": a namespace on a veth pair, on TEST-NET-3 (203.0.113.0/24).
    const ns = `minctest-out${process.pid}`;
    const ipns = (...a: string[]): void => { assert.equal(spawnSync("ip", ["-n", ns, ...a]).status, 0, a.join(" ")); };
    assert.equal(spawnSync("ip", ["netns", "add", ns]).status, 0);
    const www = mkdtempSync("/tmp/minc-test-www-");
    writeFileSync(`${www}/index.html`, "seen from outside\n");
    let server: ReturnType<typeof spawn> | undefined;
    let child: ReturnType<typeof spawn> | undefined;
    try {
      assert.equal(spawnSync("ip", ["link", "add", "minctout0", "type", "veth", "peer", "name", "eth0", "netns", ns]).status, 0);
      assert.equal(spawnSync("ip", ["addr", "add", "203.0.113.1/24", "dev", "minctout0"]).status, 0);
      assert.equal(spawnSync("ip", ["link", "set", "minctout0", "up"]).status, 0);
      ipns("addr", "add", "203.0.113.2/24", "dev", "eth0");
      ipns("link", "set", "eth0", "up");
      ipns("link", "set", "lo", "up");
      // A server outside that answers with the address it sees the client at.
      server = spawn("ip", ["netns", "exec", ns, process.execPath, "-e",
        "require('net').createServer((s) => s.end(s.remoteAddress + '\\n')).listen(9000, '203.0.113.2', () => console.log('up'))"],
        { stdio: ["ignore", "pipe", "inherit"] });
      await new Promise<void>((res) => server!.stdout!.once("data", () => res()));

      child = spawn(MINC, ["-p", "18083:80", "-b", `${www}:/www`, "-r", rootfs(), "sh", "-c",
        "echo source: $(nc 203.0.113.2 9000 </dev/null); exec httpd -f -p 80 -h /www"], { env: cleanEnv(), stdio: ["ignore", "pipe", "inherit"] });
      let out = "";
      child.stdout!.on("data", (d) => { out += d; });
      let page = "";
      for (let t = 0; t < 8000 && !page; t += 100) {
        await sleep(100);
        page = spawnSync("ip", ["netns", "exec", ns, `${rootfs()}/bin/busybox`, "wget", "-q", "-O", "-", "http://203.0.113.1:18083/"], { encoding: "utf8", timeout: 3000 }).stdout ?? "";
      }
      assert.equal(page, "seen from outside\n");
      for (let t = 0; t < 3000 && !out.includes("\n"); t += 50) await sleep(50); // the pipe is read between awaits
      assert.match(out, /^source: 203\.0\.113\.1$/m, "the outside host must see the host's address (MASQUERADE)");
    } finally {
      const ended = child && child.exitCode === null ? new Promise((res) => child!.once("exit", res)) : Promise.resolve();
      child?.kill("SIGTERM");
      server?.kill("SIGKILL");
      await ended;
      spawnSync("ip", ["link", "del", "minctout0"], { stdio: "ignore" });
      spawnSync("ip", ["netns", "del", ns], { stdio: "ignore" });
      rmSync(www, { recursive: true });
    }
  });

  test("ten containers in a row reuse the lease", () => {
    const addresses = new Set<string>();
    for (let i = 0; i < 10; i++) {
      const r = minc(["--net", "dens", "-r", rootfs(), "ip", "-o", "-4", "addr", "show", "eth0"]);
      assert.equal(r.status, 0, r.stderr);
      addresses.add(/inet (\S+)\//.exec(r.stdout)?.[1] ?? "none");
    }
    assert.equal(addresses.size, 1, [...addresses].join(" "));
  });

  test("two containers at once get different addresses", async () => {
    const run = (): Promise<string> => new Promise((res) => {
      const c = spawn(MINC, ["--net", "dens", "-r", rootfs(), "sh", "-c", "ip -o -4 addr show eth0; sleep 1"], { env: cleanEnv(), stdio: ["ignore", "pipe", "inherit"] });
      let out = "";
      c.stdout.on("data", (d) => { out += d; });
      c.on("exit", () => res(/inet (\S+)\//.exec(out)?.[1] ?? "none"));
    });
    const [a, b] = await Promise.all([run(), run()]);
    assert.match(a, /^192\.168\.139\./);
    assert.match(b, /^192\.168\.139\./);
    assert.notEqual(a, b);
  });

  test("SIGTERM at any point of a dens boot leaves nothing in the network", async () => {
    for (let delay = 0; delay <= 480; delay += 60) {
      const child = spawn(MINC, ["-p", "18082:80", "-r", rootfs(), "sleep", "30"], { env: cleanEnv(), stdio: "ignore" });
      const ended = new Promise<void>((res) => child.on("exit", () => res()));
      await sleep(delay);
      child.kill("SIGTERM");
      await ended;
      assert.deepEqual(await settled(() => netLeftovers().filter((x) => !before.has(x))), [], `after ${delay} ms`);
      assert.deepEqual(await settled(leftovers), [], `after ${delay} ms`);
    }
  });

  test("bad network options: exit 2 and nothing made", () => {
    for (const args of [["--net=bogus"], ["-p", "99999:80"], ["-p", "80:80:sctp"], ["--net", "raw", "-p", "80"]]) {
      const r = minc([...args, "-r", rootfs(), "true"]);
      assert.equal(r.status, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    }
  });
});
