// A drop-in for a MINCS install: scripts written for the shell MINCS run
// unchanged. Each case is a small sh script that uses ./minc and ./polecat
// from a directory laid out as a MINCS checkout, and reads their output the
// way such scripts do (the checks of the shell MINCS's own test.d, in our
// words). Every case runs twice: with no terminal, as CI runs scripts, and
// under a pseudo-terminal (script(1)), as a user at a terminal runs them.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, chownSync, cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { REPO, allLeftovers, cannotBoot, cleanEnv, hasTool, rootfs, settled } from "./helpers.ts";

const skip = cannotBoot() ?? (hasTool("script") ? undefined : "needs script (bsdutils)");

/** A uid with no passwd entry, for --nopriv (as the shell MINCS's test ran it with sudo -u $SUDO_USER). */
const NOPRIV_UID = 4322;

const CASES: Record<string, string> = {
  "--help and -h print the help": `
    ./minc --help | grep -qw help
    ./minc -h | grep -qw help`,
  "-k says how to reuse the directory on stdout; -t DIR sees what was written into its storage": `
    dir=$(./minc --keep ps | grep reuse | xargs -n 1 | tail -n 1)
    test -d "$dir/storage"
    echo kept-here > "$dir/storage/hello"
    seen=$(./minc -t "$dir" cat /hello)
    rm -rf "$dir"
    test "$seen" = kept-here`,
  "--name sets the hostname": `
    name=box-$$
    test "$(./minc --name "$name" hostname)" = "$name"`,
  "with no option, the command is PID 1": `
    ./minc ps | grep -q '^[[:space:]]*1[[:space:]]'`,
  "--pivot runs the command": `
    test "$(./minc --pivot echo HELLO)" = HELLO`,
  "--net raw has only lo": `
    test "$(./minc --net raw ip link | grep -c '^[0-9]*:')" -eq 1`,
  "--user UID and UID:GID": `
    test "$(./minc --user 1000 id -u)" = 1000
    test "$(./minc --user 1000:1234 id -g)" = 1234`,
  "--bind HOSTDIR:PATH shows the host's file inside": `
    dir=$(mktemp -d /tmp/minc-test-bind.XXXXXX)
    echo "$$" > "$dir/hello"
    seen=$(./minc --bind "$dir:/bindtest" cat /bindtest/hello)
    rm -rf "$dir"
    test "$seen" = "$$"`,
  "-r ROOTFS runs in that root": `
    file=$(mktemp "$ROOTFS/testfile.XXXXXX")
    basename "$file" > "$file"
    seen=$(./minc -r "$ROOTFS" cat "/$(basename "$file")")
    rm -f "$file"
    test "$seen" = "$(basename "$file")"`,
  "-r ROOTFS --bind ./:/DIR binds the current directory on a directory of the rootfs": `
    dir=$(mktemp -d "$ROOTFS/testdirXXXXXX")
    ./minc -r "$ROOTFS" --bind "./:/$(basename "$dir")" ls "/$(basename "$dir")/case.sh"
    rmdir "$dir"`,
  "--nopriv ROOTFS as an ordinary user": `
    file=$(mktemp "$ROOTFS/testfile.XXXXXX")
    basename "$file" > "$file"
    chmod a+r "$file"
    seen=$(setpriv --reuid=${NOPRIV_UID} --regid=${NOPRIV_UID} --clear-groups env -u XDG_RUNTIME_DIR TMPDIR="$USERTMP" ./minc --nopriv "$ROOTFS" cat "/$(basename "$file")")
    rm -f "$file"
    test "$seen" = "$(basename "$file")"`,
  "polecat packs ps; the packed file runs it as PID 1": `
    out=$(mktemp /tmp/minc-test-polecat-XXXXXX.sh)
    ./polecat -o "$out" "$ROOTFS" ps
    "$out" | grep -q '^[[:space:]]*1.*ps$'
    rm -f "$out"`,
  "--net MODE parses (SHELL=ps runs ps, found in PATH); an unknown mode fails": `
    export SHELL=ps
    ./minc --net
    ./minc --net raw
    ./minc --net dens
    ! ./minc --net nonexist`,
};

let checkout = "";

describe("scripts written for the shell MINCS", { skip }, () => {
  before(() => {
    // A MINCS checkout: ./minc and ./polecat, and a rootfs of its own (the cases write into it).
    checkout = mkdtempSync("/tmp/minc-test-dropin-");
    for (const program of ["minc", "polecat"]) symlinkSync(`${REPO}/bin/${program}`, `${checkout}/${program}`);
    cpSync(rootfs(), `${checkout}/rootfs`, { recursive: true, verbatimSymlinks: true });
    mkdirSync(`${checkout}/usertmp`);
    chownSync(`${checkout}/usertmp`, NOPRIV_UID, NOPRIV_UID);
    chmodSync(checkout, 0o755);
  });
  after(async () => {
    rmSync(checkout, { recursive: true, force: true });
    assert.deepEqual(await settled(allLeftovers), [], "a container left something behind");
  });

  for (const terminal of [false, true]) {
    for (const [name, body] of Object.entries(CASES)) {
      test(`${terminal ? "at a terminal" : "with no terminal"}: ${name}`, () => {
        const script = `${checkout}/case.sh`;
        writeFileSync(script, `set -eu\n${body}\n`);
        const argv = terminal ? ["script", "-qec", `sh ${script}`, "/dev/null"] : ["sh", script];
        const r = spawnSync(argv[0], argv.slice(1), {
          cwd: checkout,
          encoding: "utf8",
          input: "",
          timeout: 120_000,
          env: cleanEnv({ ROOTFS: `${checkout}/rootfs`, USERTMP: `${checkout}/usertmp`, SHELL: "/bin/sh" }),
        });
        assert.equal(r.status, 0, `exit ${r.status ?? r.signal}:\n${r.stdout}${r.stderr}`);
      });
    }
  }
});
