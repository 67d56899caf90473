// minc --net raw|dens and --port: real namespaces, a real bridge, real NAT.
// Traffic goes only to 127.0.0.1 and to addresses of namespaces made here.
//
// Other containers may use the dens network meanwhile (a user's, other test
// files'): what is checked is what this file's containers made, by their
// names, and an address or a port is never assumed free but picked or leased.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { randomInt } from "node:crypto";
import { after, describe, test } from "node:test";
import {
  MINC,
  allLeftovers,
  cannotBoot,
  freePort,
  hasTool,
  minc,
  rootfs,
  settled,
  sleep,
  start,
  waitFor,
  type Started,
} from "./helpers.ts";

const missing = ["ip", "iptables", "nsenter"].filter((t) => !hasTool(t));
const skip = cannotBoot() ?? (missing.length ? `needs ${missing.join(", ")}` : undefined);

/** Fail at once if the program has ended: what it printed says why. */
function running(run: Started, what: string): void {
  if (run.child.exitCode !== null || run.child.signalCode !== null) {
    assert.fail(
      `${what} ended (${run.child.exitCode ?? run.child.signalCode}): stdout ${JSON.stringify(run.stdout())}, stderr ${JSON.stringify(run.stderr())}`,
    );
  }
}

describe("networking", { skip }, () => {
  after(async () => {
    assert.deepEqual(await settled(allLeftovers), [], "a container of this file left something on the host");
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
    const [host, peer] = [`mnt${process.pid}a`, `mnt${process.pid}b`];
    assert.equal(spawnSync("ip", ["link", "add", host, "type", "veth", "peer", "name", peer]).status, 0);
    try {
      const r = minc(["--net", `raw,${host}`, "-r", rootfs(), "ip", "-o", "link"]);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, new RegExp(host));
      assert.equal(r.stdout.trim().split("\n").length, 2, r.stdout);
    } finally {
      spawnSync("ip", ["link", "del", peer], { stdio: "ignore" });
    }
  });

  test("--net dens: an address on 192.168.139.0/24, a default route, and /etc/hosts naming it", () => {
    const r = minc([
      "--net",
      "dens",
      "--name",
      "den",
      "-r",
      rootfs(),
      "sh",
      "-c",
      "ip -o -4 addr show eth0; ip route; cat /etc/hosts; ping -c1 -W2 192.168.139.1 >/dev/null && echo gateway-ok",
    ]);
    assert.equal(r.status, 0, r.stderr);
    const ip = /inet (192\.168\.139\.\d+)\/24/.exec(r.stdout)?.[1];
    assert.ok(ip, r.stdout);
    assert.match(r.stdout, /^default via 192\.168\.139\.1 dev eth0/m);
    assert.match(r.stdout, new RegExp(`^${ip.replace(/\./g, "\\.")}\\s+den$`, "m"));
    assert.match(r.stdout, /gateway-ok/);
  });

  test("-p PORT:80 serves the container's httpd on the host's 127.0.0.1:PORT; nothing remains after", async () => {
    const www = mkdtempSync("/tmp/minc-test-www-");
    writeFileSync(`${www}/index.html`, "hello from the den\n");
    const port = await freePort();
    const server = start(MINC, [
      "-p",
      `${port}:80`,
      "-b",
      `${www}:/www`,
      "-r",
      rootfs(),
      "httpd",
      "-f",
      "-p",
      "80",
      "-h",
      "/www",
    ]);
    try {
      let page = "";
      let error = "";
      await waitFor(
        `the container's httpd on 127.0.0.1:${port}`,
        async () => {
          running(server, "minc");
          try {
            page = await (await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(5000) })).text();
          } catch (e) {
            error = String(e); // not serving yet
          }
          return page !== "";
        },
        { saw: () => `${error}; minc's stderr ${JSON.stringify(server.stderr())}` },
      );
      assert.equal(page, "hello from the den\n");
    } finally {
      server.child.kill("SIGTERM");
      await server.exit();
      rmSync(www, { recursive: true });
    }
    assert.deepEqual(await settled(allLeftovers), []);
  });

  test("an outside host (a test namespace) reaches a mapped port through the host's address, and sees the host as the source of the container's connections", async () => {
    // The "outside host": a namespace on a veth pair, on a /30 of TEST-NET-3 (203.0.113.0/24)
    // of this process's own (another run of this test beside it has another).
    const ns = `minctest-out${process.pid}`;
    const net = 4 * (process.pid % 64);
    const [hostIp, outsideIp] = [`203.0.113.${net + 1}`, `203.0.113.${net + 2}`];
    const veth = `mto${process.pid}`;
    const ipns = (...a: string[]): void => {
      assert.equal(spawnSync("ip", ["-n", ns, ...a]).status, 0, a.join(" "));
    };
    assert.equal(spawnSync("ip", ["netns", "add", ns]).status, 0);
    const www = mkdtempSync("/tmp/minc-test-www-");
    writeFileSync(`${www}/index.html`, "seen from outside\n");
    let server: Started | undefined;
    let container: Started | undefined;
    try {
      assert.equal(
        spawnSync("ip", ["link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns]).status,
        0,
      );
      assert.equal(spawnSync("ip", ["addr", "add", `${hostIp}/30`, "dev", veth]).status, 0);
      assert.equal(spawnSync("ip", ["link", "set", veth, "up"]).status, 0);
      ipns("addr", "add", `${outsideIp}/30`, "dev", "eth0");
      ipns("link", "set", "eth0", "up");
      ipns("link", "set", "lo", "up");
      // A server outside that answers with the address it sees the client at.
      server = start("ip", [
        "netns",
        "exec",
        ns,
        process.execPath,
        "-e",
        `require('net').createServer((s) => s.end(s.remoteAddress + '\\n')).listen(9000, '${outsideIp}', () => console.log('up'))`,
      ]);
      await server.printed("up");

      const port = await freePort();
      const url = `http://${hostIp}:${port}/`;
      container = start(MINC, [
        "-p",
        `${port}:80`,
        "-b",
        `${www}:/www`,
        "-r",
        rootfs(),
        "sh",
        "-c",
        `echo source: $(nc ${outsideIp} 9000 </dev/null); exec httpd -f -p 80 -h /www`,
      ]);
      let page = "";
      let wget = "";
      await waitFor(
        `${url} to answer in ${ns}`,
        () => {
          running(container!, "minc");
          const r = spawnSync("ip", ["netns", "exec", ns, `${rootfs()}/bin/busybox`, "wget", "-q", "-O", "-", url], {
            encoding: "utf8",
            timeout: 5000,
          });
          page = r.stdout ?? "";
          wget = r.stderr ?? "";
          return page !== "";
        },
        {
          saw: () =>
            `wget: ${JSON.stringify(wget)}; minc: stdout ${JSON.stringify(container!.stdout())}, stderr ${JSON.stringify(container!.stderr())}`,
        },
      );
      assert.equal(page, "seen from outside\n");
      await container.printed(/^source: [^\n]*\n/m);
      assert.match(
        container.stdout(),
        new RegExp(`^source: ${hostIp.replace(/\./g, "\\.")}$`, "m"),
        "the outside host must see the host's address (MASQUERADE)",
      );
    } finally {
      container?.child.kill("SIGTERM");
      server?.child.kill("SIGKILL");
      await container?.exit();
      await server?.exit();
      spawnSync("ip", ["link", "del", veth], { stdio: "ignore" });
      spawnSync("ip", ["netns", "del", ns], { stdio: "ignore" });
      rmSync(www, { recursive: true });
    }
  });

  test("ten containers in a row reuse the lease", async (t) => {
    // A lease file of this test's own (minc-dens's MINC_DENS_LEASE): on the host's, another container
    // starting between two of ours would take the address ours freed. Its .2-.249 are held by lines
    // that never go stale (the shell MINCS's form), so that ours, from .250 up, are no other
    // container's on the bridge (those lease from the host's file, lowest first).
    const dir = mkdtempSync("/tmp/minc-test-lease-");
    const file = `${dir}/lease`;
    const held = Array.from({ length: 248 }, (_, i) => `192.168.139.${i + 2}/24 held${i + 2}\n`).join("");
    const isHeld = (l: string): boolean => / held\d+( |$)/.test(l);
    const env = { ...process.env, MINC_DENS_LEASE: file };
    try {
      // A bridge made anew starts its lease file anew (minc-dens stop may run between two containers, by
      // another test of the dens network): such a run does not count, and the file is filled again.
      const addresses: string[] = [];
      let runs = 0;
      while (addresses.length < 10) {
        assert.ok(++runs <= 20, `the bridge was made anew in ${runs - 1 - addresses.length} of ${runs - 1} runs`);
        const lines = existsSync(file) ? readFileSync(file, "utf8").split("\n").filter(isHeld) : [];
        if (lines.length !== 248) writeFileSync(file, held);
        const r = minc(["--net", "dens", "-r", rootfs(), "ip", "-o", "-4", "addr", "show", "eth0"], { env });
        assert.equal(r.status, 0, r.stderr);
        const after = readFileSync(file, "utf8").split("\n").filter(Boolean);
        assert.deepEqual(
          after.filter((l) => !isHeld(l)),
          [],
          "a lease stayed after its container",
        );
        if (after.length !== 248) {
          t.diagnostic(`run ${runs}: the bridge was made anew, the lease file started anew`);
          continue;
        }
        addresses.push(/inet (\S+)\//.exec(r.stdout)?.[1] ?? "none");
      }
      assert.deepEqual([...new Set(addresses)], ["192.168.139.250"]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("two containers at once get different addresses", async () => {
    // Each prints its address, then waits for a line on its stdin: both are running when both have printed.
    const run = (): Started =>
      start(MINC, ["--net", "dens", "-r", rootfs(), "sh", "-c", "ip -o -4 addr show eth0; read line"], {
        stdio: ["pipe", "pipe", "pipe"],
      });
    const both = [run(), run()];
    try {
      await Promise.all(both.map((c) => c.printed(/inet \S+\//)));
    } finally {
      for (const c of both) c.child.stdin!.end("go\n");
    }
    for (const c of both) assert.equal(await c.exit(), 0, c.stderr());
    const [a, b] = both.map((c) => /inet (\S+)\//.exec(c.stdout())?.[1] ?? "none");
    assert.match(a, /^192\.168\.139\./);
    assert.match(b, /^192\.168\.139\./);
    assert.notEqual(a, b);
  });

  test("SIGTERM at any point of a dens boot leaves nothing in the network", async (t) => {
    // At each step of the boot (minc --debug shows a step before it is done: the signal comes
    // during it or soon after), and at a few random delays without --debug. Only what must
    // hold anywhere is asserted: the container did not succeed, and nothing of it is left.
    const steps: [string, RegExp][] = [
      ["its working directory", /^\+ mkdir -m 700 /m],
      ["its network namespace", /^\+ ip netns add /m],
      ["minc-dens add", /^\+ \S*minc-dens add /m],
      ["minc-dens waiting for its lock", /^\+ flock -w 60 3$/m],
      ["the veth pair", /^\+ ip link add mincv/m],
      ["the default route", /^\+ ip -n \S+ route add default /m],
      ["minc-dens map", /^\+ \S*minc-dens map /m],
      ["the DNAT rule", /-A MINCS_DNAT /m],
      ["the waiter", /^# ==== minc-waiter: wait for the container/m],
      ["the new root", /^# ==== minc-core: phase 4\/5/m],
      ["the dive into it", /^# ==== minc-leash: phase 5\/5/m],
      ["the command", /^\+ exec \S*env --default-signal/m],
    ];
    const delays = Array.from({ length: 4 }, () => randomInt(400));
    const points: { what: string; debug: boolean; at: (run: Started) => Promise<void> }[] = [
      ...steps.map(([what, re]) => ({
        what,
        debug: true,
        at: (run: Started) => run.printed(re, { stream: "stderr" }),
      })),
      ...delays.map((ms) => ({ what: `${ms} ms`, debug: false, at: () => sleep(ms) })),
    ];
    t.diagnostic(`random delays: ${delays.join(", ")} ms`);
    for (const p of points) {
      const port = await freePort();
      const run = start(MINC, [...(p.debug ? ["--debug"] : []), "-p", `${port}:80`, "-r", rootfs(), "sleep", "30"]);
      try {
        await p.at(run);
      } finally {
        run.child.kill("SIGTERM");
      }
      assert.notEqual(await run.exit(), 0, `at ${p.what}: ${run.stderr()}`);
      assert.deepEqual(await settled(allLeftovers), [], `at ${p.what}`);
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
