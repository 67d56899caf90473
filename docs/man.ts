// Man pages from the same definitions as --help, so they cannot disagree:
// minc.1 from MINC_OPTIONS (lib/boot/minc-options.ts); marten.1 and polecat.1
// from what their yargs definitions print for --help (and each marten
// command's --help). docs/gen-man.ts writes them (`make man`).
import { MINC_OPTIONS, OPTION_GROUPS, type OptionSpec } from "../lib/boot/minc-options.ts";
import { VERSION } from "../lib/core/version.ts";

/** Escape text for roff: backslashes, and a leading dot or quote. */
export function roff(s: string): string {
  return s
    .replace(/\\/g, "\\e")
    .replace(/-/g, "\\-")
    .replace(/^([.'])/gm, "\\&$1");
}

function header(name: string, summary: string): string[] {
  return [
    `.TH ${name.toUpperCase()} 1 "" "MINCS ${VERSION}" "User Commands"`,
    ".SH NAME",
    `${name} \\- ${roff(summary)}`,
  ];
}

function optionTag(o: OptionSpec): string {
  const names = [o.short ? `\\fB\\-${o.short}\\fR` : "", `\\fB\\-\\-${roff(o.long)}\\fR`].filter(Boolean).join(", ");
  if (!o.arg) return names;
  const arg = `\\fI${roff(o.arg)}\\fR`;
  return `${names} ${o.optionalArg ? `[${arg}]` : arg}`;
}

export function mincManPage(): string {
  const out = [
    ...header("minc", "run a command in a new container"),
    ".SH SYNOPSIS",
    "\\fBminc\\fR [\\fIoptions\\fR] [\\fIcommand\\fR [\\fIargument\\fR...]]",
    ".SH DESCRIPTION",
    "\\fBminc\\fR runs the command (or \\fB$SHELL\\fR, else \\fB/bin/sh\\fR, of the rootfs) in new IPC, UTS, mount and PID namespaces,",
    "on an overlay of the rootdir, as PID 1.",
    "Options come first: the first word that is not an option starts the command, which passes through unchanged.",
    "The exit status is the command's (128+N when signal N ends it); bad options exit with status 2.",
  ];
  for (const [group, title] of Object.entries(OPTION_GROUPS)) {
    out.push(`.SH ${title.toUpperCase()}`);
    for (const o of MINC_OPTIONS.filter((x) => x.group === group)) {
      out.push(".TP", optionTag(o), roff(o.help));
    }
  }
  out.push(
    ".SH FILES",
    ".TP",
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell expansion, shown as such in the man page
    "\\fI${XDG_RUNTIME_DIR:\\-/var/run}/minc$$\\-XXXXXX\\fR",
    "The working directory: root/, storage/ (the upper layer), work/, settings, hosts, resolv.conf, pid, cleanup.",
    ".TP",
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell expansion, shown as such in the man page
    "\\fI${MINCS_DIR:\\-/var/lib/mincs}\\fR",
    "The image store (see \\fBmarten\\fR(1)).",
    ".SH SEE ALSO",
    "\\fBmarten\\fR(1), \\fBpolecat\\fR(1), \\fBunshare\\fR(1), \\fBcapsh\\fR(1), \\fBpivot_root\\fR(8)",
    "",
  );
  return out.join("\n");
}

interface HelpEntry {
  tag: string;
  text: string;
}

/** The entries of one "Title:" block of a yargs --help (continuation lines joined). */
function yargsBlock(help: string, title: string): HelpEntry[] {
  const lines = help.split("\n");
  const start = lines.indexOf(`${title}:`);
  if (start < 0) return [];
  const out: HelpEntry[] = [];
  for (const line of lines.slice(start + 1)) {
    if (line.trim() === "") break;
    // An entry starts near the left edge; a wrapped description far to the right.
    const m = /^ {2,8}(\S.*?)(?: {2,}(.*))?$/.exec(line);
    if (m) {
      out.push({ tag: m[1].trim(), text: (m[2] ?? "").trim() });
    } else if (out.length) {
      out.at(-1)!.text += ` ${line.trim()}`;
    }
  }
  // yargs's right-aligned notes: [boolean], [string], [aliases: ...]
  return out.map((e) => ({
    tag: e.tag,
    text: e.text
      .replace(/\s+/g, " ")
      .replace(/ ?\[(boolean|string|number)\]/g, "")
      .trim(),
  }));
}

function bold(tag: string): string {
  // "-o, --output" / "marten rm <id>": options and words bold, <args> italic.
  return tag
    .split(" ")
    .map((w) => (/^<.*>$|^\[.*\]$/.test(w) ? `\\fI${roff(w)}\\fR` : `\\fB${roff(w)}\\fR`))
    .join(" ");
}

/**
 * A man page from yargs's --help output: the first line is "NAME - summary",
 * the "Usage:" line the synopsis; "Commands:" and "Options:" become sections.
 * subHelps: each command's own --help, whose options are listed under it.
 */
export function yargsManPage(
  name: string,
  help: string,
  subHelps: Record<string, string> = {},
  extra: string[] = [],
): string {
  const lines = help.split("\n");
  const summary = lines[0].replace(new RegExp(`^${name} - `), "");
  const usage = lines.find((l) => l.startsWith("Usage: "))?.slice(7) ?? name;
  const out = [...header(name, summary), ".SH SYNOPSIS", bold(usage).replace(/\\fB\\fR/g, "")];
  const commands = yargsBlock(help, "Commands");
  if (commands.length) {
    out.push(".SH COMMANDS");
    for (const c of commands) {
      out.push(".TP", bold(c.tag), roff(c.text));
      const word = c.tag.split(" ")[1];
      const sub = subHelps[word];
      if (sub) {
        const common = new Set(yargsBlock(help, "Options").map((o) => o.tag));
        for (const o of yargsBlock(sub, "Options").filter((x) => !common.has(x.tag))) {
          out.push(".RS", ".TP", bold(o.tag), roff(o.text), ".RE");
        }
      }
    }
  }
  out.push(".SH OPTIONS");
  for (const o of yargsBlock(help, "Options")) out.push(".TP", bold(o.tag), roff(o.text));
  out.push(...extra, "");
  return out.join("\n");
}

/** The command words of a yargs --help's "Commands:" block, aliases included. */
export function yargsCommands(help: string): string[] {
  const words: string[] = [];
  for (const c of yargsBlock(help, "Commands")) {
    words.push(c.tag.split(" ")[1]);
    const alias = /\[aliases: ([^\]]+)\]/.exec(c.text);
    if (alias) words.push(...alias[1].split(/,\s*/));
  }
  return words;
}

/** The option names (--long and -s) of a yargs --help's "Options:" block. */
export function yargsOptions(help: string): string[] {
  return yargsBlock(help, "Options").flatMap((o) => o.tag.split(/,\s*/).map((t) => t.split(" ")[0]));
}

/**
 * A man page from a plain --help (ferret's, laid out as runc's): its usage
 * line is the synopsis, the line after it the description, and each
 * "  WORDS   text" line of its commands a tagged paragraph.
 */
export function plainManPage(name: string, summary: string, help: string, extra: string[] = []): string {
  const lines = help.split("\n");
  const usage = lines[0].replace(/^usage: /, "");
  const out = [...header(name, summary), ".SH SYNOPSIS", roff(usage), ".SH DESCRIPTION", roff(lines[2] ?? "")];
  out.push(".SH COMMANDS");
  for (const l of lines.slice(4)) {
    const m = /^ {2}(\S.*?)\s{2,}(\S.*)$/.exec(l);
    if (m) out.push(".TP", `\\fB${roff(m[1])}\\fR`, roff(m[2]));
  }
  out.push(...extra, "");
  return out.join("\n");
}
