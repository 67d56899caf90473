// Image references as Docker writes them: [REGISTRY/]NAME[:TAG][@DIGEST].
//
// The grammar is the one of github.com/distribution/reference, checked in
// full before anything goes to the network: `alpine` is
// docker.io/library/alpine:latest, `user/x` is docker.io/user/x:latest, and
// the first component names a registry only when it has a `.` or a `:` or
// is `localhost` (127.0.0.1:5000/x, ghcr.io/org/x, [::1]:5000/x).
import { usageError } from "../core/fail.ts";
import { isId, whyNotName } from "./names.ts";

export const DOCKER_HUB = "docker.io";
/** Where docker.io's registry API really answers. */
export const DOCKER_HUB_ENDPOINT = "registry-1.docker.io";
export const DEFAULT_TAG = "latest";

export interface Reference {
  /** The registry as the reference names it: docker.io, ghcr.io, 127.0.0.1:5000, [::1]:5000. */
  domain: string;
  /** host[:port] the registry API is at (registry-1.docker.io for docker.io). */
  endpoint: string;
  /** The repository path inside the registry: library/alpine, org/x. */
  repository: string;
  /** The tag: as given, or latest when neither a tag nor a digest is given. */
  tag?: string;
  /** sha256:<64 hex> when pinned by digest. */
  digest?: string;
}

// The pieces of the grammar (distribution/reference's regexp.go).
const DOMAIN_COMPONENT = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
const DOMAIN_NAME = `${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*`;
const IPV6 = "\\[(?:[a-fA-F0-9:]+)\\]";
const PORT = "[0-9]+";
const DOMAIN = new RegExp(`^(?:${DOMAIN_NAME}|${IPV6})(?::${PORT})?$`);
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^sha256:[a-f0-9]{64}$/;
const ANY_DIGEST = /^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$/;
const NAME_MAX = 255;

/** A sha256 digest, checked; `what` names it in the error. */
export function checkDigest(digest: string, what = "digest"): string {
  if (DIGEST.test(digest)) return digest;
  if (ANY_DIGEST.test(digest) && !digest.startsWith("sha256:")) {
    throw usageError(`${what} ${digest}: only sha256 digests are supported`);
  }
  throw usageError(`${what} ${JSON.stringify(digest)}: not a digest (sha256: and 64 lowercase hex digits)`);
}

/** Is this registry on the loopback, where plain HTTP is fine? */
export function isLoopback(domain: string): boolean {
  const host = hostOf(domain).toLowerCase();
  return host === "localhost" || host === "127.0.0.1" || host === "::1" || host === "[::1]";
}

/** The host of host[:port] (an IPv6 address keeps its brackets). */
export function hostOf(domainAndPort: string): string {
  if (domainAndPort.startsWith("[")) return domainAndPort.slice(0, domainAndPort.indexOf("]") + 1);
  const colon = domainAndPort.indexOf(":");
  return colon < 0 ? domainAndPort : domainAndPort.slice(0, colon);
}

/** Parse and check a reference; a bad one is a usage error (exit 2). */
export function parseReference(input: string): Reference {
  const bad = (why: string) => usageError(`invalid reference ${JSON.stringify(input)}: ${why}`);
  if (input === "") throw bad("empty");
  if (isId(input)) throw bad("64 hex digits are an image id, not a repository name");
  if (/\s/.test(input)) throw bad("contains white space");

  let rest = input;
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    const d = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(d)) {
      if (ANY_DIGEST.test(d) && !d.startsWith("sha256:")) throw bad("only sha256 digests are supported");
      throw bad("the digest must be sha256: and 64 lowercase hex digits");
    }
    digest = d;
  }

  // A tag is after the last colon, if no slash follows it (a colon before a
  // slash is a registry's port).
  let tag: string | undefined;
  const colon = rest.lastIndexOf(":");
  if (colon > rest.lastIndexOf("/") && !(rest.startsWith("[") && colon < rest.indexOf("]"))) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag))
      throw bad(`tag ${JSON.stringify(tag)}: up to 128 letters, digits, _, . and -, not starting with . or -`);
  }

  const parts = rest.split("/");
  let domain = DOCKER_HUB;
  const first = parts[0];
  if (
    parts.length > 1 &&
    (first.includes(".") || first.includes(":") || first === "localhost" || first.startsWith("["))
  ) {
    if (!DOMAIN.test(first))
      throw bad(`registry ${JSON.stringify(first)} is not a host name or address with an optional port`);
    domain = first;
    parts.shift();
  }
  if (!parts.length || parts.some((p) => p === "")) throw bad("empty name component");
  for (const p of parts) {
    if (PATH_COMPONENT.test(p)) continue;
    if (PATH_COMPONENT.test(p.toLowerCase())) throw bad(`repository name must be lowercase (${p})`);
    throw bad(`name component ${JSON.stringify(p)}: lowercase letters and digits, separated by ., _, __ or -`);
  }
  if (domain === "index.docker.io") domain = DOCKER_HUB;
  if (domain === DOCKER_HUB && parts.length === 1) parts.unshift("library");
  const repository = parts.join("/");
  if (domain.length + 1 + repository.length > NAME_MAX) throw bad(`name longer than ${NAME_MAX} characters`);

  const endpoint = domain === DOCKER_HUB ? DOCKER_HUB_ENDPOINT : domain;
  if (!tag && !digest) tag = DEFAULT_TAG;
  return { domain, endpoint, repository, tag, digest };
}

/** The full form: docker.io/library/alpine:latest, ghcr.io/o/x@sha256:... */
export function formatReference(ref: Reference): string {
  return `${ref.domain}/${ref.repository}${ref.tag ? `:${ref.tag}` : ""}${ref.digest ? `@${ref.digest}` : ""}`;
}

/**
 * The store name of a reference: its repository's last component, and :TAG
 * unless the tag is latest. Not checked: the store checks it (it may be no
 * valid name, or the start of an id in the store).
 */
export function nameFromReference(ref: string): string | undefined {
  const at = ref.indexOf("@");
  const noDigest = at < 0 ? ref : ref.slice(0, at);
  const slash = noDigest.lastIndexOf("/");
  const colon = noDigest.lastIndexOf(":");
  const [repo, tag] = colon > slash ? [noDigest.slice(0, colon), noDigest.slice(colon + 1)] : [noDigest, ""];
  const last = repo.slice(repo.lastIndexOf("/") + 1);
  if (!last) return undefined;
  return tag && tag !== "latest" ? `${last}:${tag}` : last;
}

/** Check a [REGISTRY/]NAME[:TAG|@DIGEST] reference (bad input: exit 2); returns its store name. */
export function checkReference(ref: string): string {
  parseReference(ref);
  const name = nameFromReference(ref);
  const why = name === undefined ? "it has no name" : whyNotName(name);
  if (name === undefined || why !== undefined)
    throw usageError(`image reference ${JSON.stringify(ref)} gives no name for the store (${why}): give --name`);
  return name;
}
