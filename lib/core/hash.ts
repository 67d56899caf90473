// A short stable hash, so that a name can be derived from something longer
// (an id, a path) and found again from it alone, without remembering it.

/** FNV-1a, 32 bits, as 8 hex digits: for names, not for security. */
export function shortHash(text: string): string {
  let h = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(text)) {
    h ^= byte;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, "0");
}
