// The host a boot step acts on: what it mounts, makes, writes, runs and
// execs, as operations (Op) given to an executor.
//
// minc-core, minc-coat and minc-leash do the same steps in two ways: live
// (lib/core/run.ts liveExecutor: each operation done as it comes) or
// written down ahead as a script for sh (lib/boot/bootscript.ts
// writtenDownExecutor, which owns the root's view and the fstab batches).
// minc-core chooses the executor once and hands it on; the steps do not ask
// which one they have. Host prints each operation in the --debug trace, as
// the shell line that does the same, whichever executor then does it.
import { MincError } from "./fail.ts";
import { quote, quoteAll, shown, step } from "./trace.ts";

export type Op =
  | { op: "mount"; args: readonly string[] }
  /** A command run in order with the mounts of together(), if open. */
  | { op: "runTogether"; argv: readonly string[] }
  | { op: "run"; argv: readonly string[]; input?: string }
  | { op: "export"; name: string; value: string }
  | { op: "mkdirs"; dirs: readonly string[] }
  | { op: "touch"; path: string }
  | { op: "symlink"; target: string; path: string }
  | { op: "removeFile"; path: string }
  | { op: "removeTree"; path: string }
  | { op: "writeFile"; path: string; content: string | Uint8Array }
  | { op: "copyFile"; from: string; to: string }
  | { op: "exec"; argv: readonly string[]; env: NodeJS.ProcessEnv; shownAs?: string }
  /** Export MINC_PID, our PID as the host sees it, and write it to file. */
  | { op: "recordPid"; file: string }
  /** The root will be these layers (upper first) once mounted on root. */
  | { op: "rootWillBe"; root: string; layers: readonly string[] }
  /** The next step must look inside the new namespaces (why). */
  | { op: "needsInside"; why: string }
  /** Step into a cgroup cage: write 0 to its cgroup.procs (opened ahead as fd, if it was). */
  | { op: "enterCage"; file: string; fd: number | undefined };

/** Does the operations of a Host. */
export interface Executor {
  /** Are the operations decided ahead, outside the new namespaces (nothing is opened there now)? */
  readonly ahead: boolean;
  /** The trace of op as this executor does it: comments ("# ...") and shell lines. */
  traceOf(op: Op): string[];
  do(op: Op, host: Host): void;
  /** Run body(), its mounts made together (one sh, one fstab); they have all been made when it returns. */
  together(body: () => void): void;
}

/** The shell line that shows op in the trace (none for what is not a command). */
export function lineOf(op: Op): string[] {
  switch (op.op) {
    case "mount":
      return [quoteAll(["mount", ...op.args])];
    case "runTogether":
      return [quoteAll(op.argv)];
    case "run":
      return [
        op.input === undefined
          ? quoteAll(op.argv)
          : `${quoteAll(op.argv)} <<'EOF'\n${op.input.replace(/\n?$/, "\n")}EOF`,
      ];
    case "export":
      return [`export ${op.name}=${quote(op.value)}`];
    case "mkdirs":
      return [`mkdir -p ${quoteAll(op.dirs)}`];
    case "touch":
      return [`touch ${quote(op.path)}`];
    case "symlink":
      return [`ln -s ${quote(op.target)} ${quote(op.path)}`];
    case "removeFile":
      return [`rm -f ${quote(op.path)}`];
    case "removeTree":
      return [quoteAll(["rm", "-rf", "--one-file-system", op.path])];
    case "writeFile":
      // (bytes: one line of base64, so that the trace stays a line a step)
      if (typeof op.content !== "string")
        return [`echo ${Buffer.from(op.content).toString("base64")} | base64 -d > ${quote(op.path)}`];
      return [`${printfLines(op.content)} > ${quote(op.path)}`];
    case "copyFile":
      return [`cp ${quote(op.from)} ${quote(op.to)}`];
    case "exec":
      return op.shownAs === "" ? [] : [op.shownAs ?? `exec ${quoteAll(op.argv)}`];
    case "enterCage":
      return [`echo 0 > ${quote(op.file)}`];
    default:
      return [];
  }
}

/** The shell line that prints this text byte for byte (sh's echo would read backslashes in it). */
export function printfLines(content: string): string {
  const lines = content.replace(/\n$/, "").split("\n");
  // printf reuses its format for every argument; without a last newline, one "%s" per line says where they go.
  const format = content.endsWith("\n") ? "%s\\n" : `${"%s\\n".repeat(lines.length - 1)}%s`;
  return `printf '${format}' ${quoteAll(lines)}`;
}

/** The operations of the boot steps, each shown in the trace, then done by the executor. */
export class Host {
  readonly executor: Executor;

  constructor(executor: Executor) {
    this.executor = executor;
  }

  private go(op: Op): void {
    for (const line of this.executor.traceOf(op)) {
      if (line.startsWith("# ")) step(line.slice(2));
      else shown(line);
    }
    this.executor.do(op, this);
  }

  /** Decided ahead, outside the new namespaces (lib/boot/bootscript.ts)? */
  get ahead(): boolean {
    return this.executor.ahead;
  }

  /** Run body(), with its mounts batched (see Executor.together). */
  together(body: () => void): void {
    this.executor.together(body);
  }

  mount(...args: string[]): void {
    this.go({ op: "mount", args });
  }

  bindMount(source: string, target: string): void {
    this.mount("--bind", source, target);
  }

  /** A read-only bind mount (mount(8) binds, then remounts it read-only). */
  bindMountReadonly(source: string, target: string, extra = ""): void {
    this.mount("-o", `bind,ro${extra}`, source, target);
  }

  /** A command run in order with the mounts of together() if it is open, else now. */
  runTogether(argv: readonly string[]): void {
    this.go({ op: "runTogether", argv });
  }

  /** Run a command to its end, with input on its stdin if given (shown as a here-document); a non-zero exit is a MincError. */
  run(argv: readonly string[], input?: string): void {
    this.go({ op: "run", argv, input });
  }

  exportVar(name: string, value: string): void {
    this.go({ op: "export", name, value });
  }

  mkdirs(...dirs: string[]): void {
    this.go({ op: "mkdirs", dirs });
  }

  touch(path: string): void {
    this.go({ op: "touch", path });
  }

  symlink(target: string, path: string): void {
    this.go({ op: "symlink", target, path });
  }

  removeFile(path: string): void {
    this.go({ op: "removeFile", path });
  }

  /** rm -rf --one-file-system: never into a mount below the directory. */
  removeTree(path: string): void {
    this.go({ op: "removeTree", path });
  }

  /** Write a file, shown as a printf of its lines (sh's echo would read backslashes in them), or bytes as base64 -d. */
  writeFile(path: string, content: string | Uint8Array): void {
    this.go({ op: "writeFile", path, content });
  }

  copyFile(from: string, to: string): void {
    this.go({ op: "copyFile", from, to });
  }

  /** Export MINC_PID, our PID as the host sees it, and write it to file. */
  recordPid(file: string): void {
    this.go({ op: "recordPid", file });
  }

  /** The root will be these layers, upper first, once mounted on root (questions about it are answered from them meanwhile). */
  rootWillBe(root: string, layers: readonly string[]): void {
    this.go({ op: "rootWillBe", root, layers });
  }

  /** The next step must look inside the new namespaces: decided ahead, it cannot be (NotWrittenDown). */
  needsInside(why: string): void {
    this.go({ op: "needsInside", why });
  }

  enterCage(file: string, fd: number | undefined): void {
    this.go({ op: "enterCage", file, fd });
  }

  /**
   * Replace this process with another program, like the shell's exec: the
   * next program keeps our PID (so the user's command can be PID 1).
   */
  exec(argv: readonly string[], env: NodeJS.ProcessEnv = process.env, shownAs?: string): never {
    this.go({ op: "exec", argv, env, shownAs });
    throw new MincError("execve returned"); // not reached
  }
}
