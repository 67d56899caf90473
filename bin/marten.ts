// marten: manager of images and containers (issue #5).
//
// The command set is MINCS's; the image store itself is issue #5, so every
// command is refused with a clear message until then.
import yargs from "yargs";
import { main, usageError } from "../lib/fail.ts";
import { VERSION } from "../lib/version.ts";

const COMMANDS: [string, string][] = [
  ["lc|list", "List containers"],
  ["li|images", "List images"],
  ["rm <id>", "Remove a container"],
  ["rmi <id>", "Remove an image"],
  ["import <dir|archive>", "Import a directory or a docker save archive as an image"],
  ["pull <image>", "Pull an image from a registry"],
  ["commit <id>", "Commit a container to an image"],
  ["rename <id> <name>", "Rename a container"],
  ["renamei <id> <name>", "Rename an image"],
  ["tag <id> <name>", "Tag an image"],
];

main(() => {
  let parser = yargs(process.argv.slice(2)).scriptName("marten").version(VERSION).strict()
    .usage("marten - manage images and containers\nUsage: marten <command> [arguments...]")
    .option("long", { type: "boolean", describe: "Show long ids" })
    .option("debug", { type: "boolean", describe: "Debug mode" })
    .demandCommand(1, "marten needs a command (see marten --help)")
    .alias("h", "help").fail((msg, err) => { throw usageError(err?.message ?? msg); });
  for (const [cmd, describe] of COMMANDS) {
    parser = parser.command(cmd, describe, {}, () => {
      throw usageError(`marten ${cmd.split(/[| ]/)[0]} is not implemented yet (issue #5)`);
    });
  }
  parser.parseSync();
  return 0;
});
