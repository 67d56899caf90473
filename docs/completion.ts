// Bash completion for minc, marten, polecat and ermine-breeder, generated
// from the same definitions as --help: minc's option table
// (lib/boot/minc-options.ts) and what the others' yargs definitions print.
// docs/gen-completion.ts writes it to docs/mincs.bash (make completion).
// The script is docs/completion.bash (a real bash file, which shellcheck
// reads), with @COMPLETION_...@ where the lists go.
// The arches come from what the commands accept: minc's --cross table and
// the platform names of marten's --arch.
import { readFileSync } from "node:fs";
import { CROSS_ARCHES, MINC_OPTIONS } from "../lib/boot/minc-options.ts";
import { yargsCommands, yargsOptions } from "./man.ts";
import { ARCH_NAMES } from "../lib/store/platform.ts";

const TEMPLATE = readFileSync(new URL("./completion.bash", import.meta.url), "utf8");

function words(list: readonly string[]): string {
  return list.join(" ");
}

export interface YargsHelps {
  marten: string;
  /** marten COMMAND --help, by command. */
  martenCommands: Record<string, string>;
  polecat: string;
  breeder: string;
  /** ermine-breeder COMMAND --help, by command. */
  breederCommands: Record<string, string>;
}

/** bash case arms: each subcommand's options, from its --help (the global ones without one). */
function optionsByCommand(top: string, byCommand: Record<string, string>): string[] {
  return yargsCommands(top).map((c) => {
    const opts = byCommand[c] ? yargsOptions(byCommand[c]) : yargsOptions(top);
    return `    ${c}) opts=${JSON.stringify(words(opts))} ;;`;
  });
}

export function bashCompletion(h: YargsHelps): string {
  const mincOpts = MINC_OPTIONS.flatMap((o) => [`--${o.long}`, ...(o.short ? [`-${o.short}`] : [])]);
  const withArg = MINC_OPTIONS.filter((o) => o.arg && !o.optionalArg).flatMap((o) => [
    `--${o.long}`,
    ...(o.short ? [`-${o.short}`] : []),
  ]);
  const optionalArg = MINC_OPTIONS.filter((o) => o.optionalArg).flatMap((o) => [
    `--${o.long}`,
    ...(o.short ? [`-${o.short}`] : []),
  ]);
  const fill: Record<string, string> = {
    COMPLETION_CROSS_ARCHES: words(Object.keys(CROSS_ARCHES)),
    COMPLETION_ARCHES: words(ARCH_NAMES),
    COMPLETION_MINC_WITH_ARG: withArg.join("|"),
    COMPLETION_MINC_OPTIONAL_ARG: optionalArg.join("|"),
    // The options whose argument has no completion of its own (those with one have their arms).
    COMPLETION_MINC_OTHER_ARG: withArg
      .filter(
        (o) =>
          !["-r", "--rootdir", "-t", "--tempdir", "--cross", "--arch", "-b", "--bind", "--ftrace", "--nopriv"].includes(
            o,
          ),
      )
      .join("|"),
    COMPLETION_MINC_OPTIONS: words(mincOpts),
    COMPLETION_MARTEN_OPTIONS: words(yargsOptions(h.marten)),
    COMPLETION_MARTEN_COMMANDS: words(yargsCommands(h.marten)),
    COMPLETION_MARTEN_ARMS: optionsByCommand(h.marten, h.martenCommands).join("\n"),
    COMPLETION_POLECAT_OPTIONS: words(yargsOptions(h.polecat)),
    COMPLETION_BREEDER_ARMS: optionsByCommand(h.breeder, h.breederCommands).join("\n"),
    COMPLETION_BREEDER_OPTIONS: words(yargsOptions(h.breeder)),
    COMPLETION_BREEDER_COMMANDS: words(yargsCommands(h.breeder)),
  };
  // A placeholder alone on a comment line (the case arms) stands for whole
  // lines; the others for words. One pass: what is filled in is not read again.
  return TEMPLATE.replace(
    /^ *# @(COMPLETION_[A-Z_]+)@$|@(COMPLETION_[A-Z_]+)@/gm,
    (whole, line?: string, word?: string) => fill[line ?? word ?? ""] ?? whole,
  );
}
