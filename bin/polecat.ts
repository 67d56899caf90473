// polecat: pack a rootfs and a command into one self-executable file (issue #6).
import yargs from "yargs";
import { main, usageError } from "../lib/fail.ts";
import { VERSION } from "../lib/version.ts";

main(() => {
  yargs(process.argv.slice(2)).scriptName("polecat").version(VERSION).strict()
    .usage("polecat - make a self-executable application container\nUsage: polecat [options] <rootdir|image> [command]")
    .option("output", { alias: "o", type: "string", describe: "Output file (default polecat-out.sh)" })
    .option("format", { alias: "f", type: "string", describe: "sh, squashfs, sfs or tgz" })
    .option("script", { alias: "s", type: "string", describe: "Build script" })
    .option("tempdir", { alias: "t", type: "string", describe: "Working directory" })
    .option("ignore-state", { type: "boolean", describe: "Ignore the state of the rootfs" })
    .option("debug", { type: "boolean", describe: "Debug mode" })
    .alias("h", "help").fail((msg, err) => { throw usageError(err?.message ?? msg); })
    .command("$0 <rootdir> [command..]", "Pack ROOTDIR and COMMAND", {}, () => {
      throw usageError("polecat is not implemented yet (issue #6)");
    })
    .parseSync();
  return 0;
});
