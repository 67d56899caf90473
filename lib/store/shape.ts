// The shapes JSON documents from outside must have (an image archive's
// manifest.json, index.json, manifests and configs), checked as they are
// read: one that is not so is a clear error naming where, rather than a
// TypeError deep in the code that reads it, or a string taken for a list.
import { MincError } from "../core/fail.ts";

/**
 * "string", "number", or "any"; [S]: a list of S; { key: S, ... }: an object
 * with those members (others are let be), where a key ending in "?" may be
 * missing or null; { "*": S }: an object whose members are all S.
 */
export type Shape = "string" | "number" | "any" | readonly [Shape] | { readonly [key: string]: Shape };

/** value, when it has the shape; else a MincError "WHAT: PATH is a number, not a string". */
export function checkShape<T>(value: unknown, shape: Shape, what: string): T {
  const wrong = mismatch(value, shape, "");
  if (wrong !== undefined) throw new MincError(`${what}${wrong}`);
  return value as T;
}

function kind(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "a list";
  return typeof v === "object" ? "an object" : `a ${typeof v}`;
}

function member(at: string, key: string): string {
  return /^[A-Za-z_][A-Za-z0-9_]*$/.test(key) ? `${at}${at ? "." : ""}${key}` : `${at}[${JSON.stringify(key)}]`;
}

/** What is wrong with v at path `at` (" is ..." or ": PATH is ..."), or undefined. */
function mismatch(v: unknown, shape: Shape, at: string): string | undefined {
  const where = at ? `: ${at}` : "";
  const not = (expected: string): string => `${where} is ${kind(v)}, not ${expected}`;
  if (shape === "any") return undefined;
  if (shape === "string" || shape === "number") return typeof v === shape ? undefined : not(`a ${shape}`);
  if (Array.isArray(shape)) {
    if (!Array.isArray(v)) return not("a list");
    for (let i = 0; i < v.length; i++) {
      const wrong = mismatch(v[i], shape[0], `${at}[${i}]`);
      if (wrong !== undefined) return wrong;
    }
    return undefined;
  }
  if (v === null || typeof v !== "object" || Array.isArray(v)) return not("an object");
  const members = v as Record<string, unknown>;
  for (const [key, inner] of Object.entries(shape as { readonly [key: string]: Shape })) {
    const names = key === "*" ? Object.keys(members) : [key.replace(/\?$/, "")];
    for (const name of names) {
      const x = members[name];
      if (x === undefined || (x === null && key.endsWith("?"))) {
        if (key === "*" || key.endsWith("?")) continue;
        return `${where} has no ${name}`;
      }
      const wrong = mismatch(x, inner, member(at, name));
      if (wrong !== undefined) return wrong;
    }
  }
  return undefined;
}
