// Names and ids of the image store, as text: what may be stored as a name,
// and what may be looked up. Nothing here touches the file system, and a
// reference never does either: the store only compares it with ids (the
// names of its directories, as read) and with the contents of its `name`
// and `utsname` files.
import { usageError } from "../core/fail.ts";

const ID = /^[0-9a-f]{64}$/;
const HEX = /^[0-9a-f]{1,64}$/;
/** Names of images and containers: no "/", no leading "." or "-", a sane charset. */
const NAME = /^[A-Za-z0-9_][A-Za-z0-9_.:@+-]{0,254}$/;
/** A name, or one "/"-separated part of a name that the shell MINCS stored. */
const REF_PART = /^[A-Za-z0-9_][A-Za-z0-9_.:@+-]*$/;
/** The longest Docker reference: a repository of 255 characters, ":" and a tag of 128. */
const REF_MAX = 384;

export function isId(s: string): boolean {
  return ID.test(s);
}

/**
 * An id the shell MINCS's marten may have chosen (MINC_IMPORT_UUID takes
 * any string there): one safe directory name, with no character that a
 * reference gives a meaning (":" of a tag, "@" of a digest, "/").
 */
const GIVEN_ID = /^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,254}$/;

/** Why the text cannot be a given id (MINC_IMPORT_UUID); undefined if it can. */
export function whyNotGivenId(s: string): string | undefined {
  if (isId(s) || (GIVEN_ID.test(s) && !s.includes(".."))) return undefined;
  return `${JSON.stringify(s)} cannot be an id: it names a directory of the store, so letters, digits and _.+- only, not starting with . or -, no .., at most 255`;
}

/** An id of the store: the 64 hex digits it makes, or one given as MINC_IMPORT_UUID. */
export function isStoreId(s: string): boolean {
  return whyNotGivenId(s) === undefined;
}

/** An id or the start of one. */
export function isIdPrefix(s: string): boolean {
  return HEX.test(s);
}

/** NAME of NAME:TAG (the tag is after the last ":"). */
function repositoryOf(name: string): string {
  const colon = name.lastIndexOf(":");
  return colon < 0 ? name : name.slice(0, colon);
}

/** Why the text cannot be a name, whatever the store holds; undefined if it can. */
export function whyNotName(name: string, what = "name"): string | undefined {
  if (!NAME.test(name) || name.includes("..")) {
    return `${what} ${JSON.stringify(name)} is not valid (letters, digits and _.:@+-, not starting with . or -, no ..)`;
  }
  // As Docker refuses such repository names: 64 hex digits are an id, and an id is never a name.
  if (isId(repositoryOf(name))) return `${what} ${JSON.stringify(name)} is not valid: 64 hex digits are an id`;
  return undefined;
}

/** A name to be stored: refused (exit 2) unless it is a valid name. */
export function checkName(name: string, what = "name"): string {
  const why = whyNotName(name, what);
  if (why !== undefined) throw usageError(why);
  return name;
}

/**
 * What may be looked up: an id, an id prefix, or a name. A name as this
 * port stores it, or one that the shell MINCS stored with "/" in it (its
 * docker import named an image after the archive's repository: library/bbx,
 * registry:5000/a/b): no empty part, no leading "/", no "." or ".." part.
 */
export function isRef(ref: string): boolean {
  return (
    HEX.test(ref) || (ref.length <= REF_MAX && !ref.includes("..") && ref.split("/").every((p) => REF_PART.test(p)))
  );
}

/** A reference to an image or container, checked (bad input: exit 2). */
export function checkRef(ref: string | undefined, what: string): string {
  if (ref === undefined || ref === "") throw usageError(`no ${what} given`);
  if (!isRef(ref)) throw usageError(`${what} ${JSON.stringify(ref)} is not a valid name or id`);
  return ref;
}

/** NAME for NAME:latest: the form two names are compared in. */
export function plainName(name: string): string {
  return name.replace(/:latest$/, "");
}

/** "alpine" and "alpine:latest" are the same name. */
export function sameName(a: string, b: string): boolean {
  return plainName(a) === plainName(b);
}
