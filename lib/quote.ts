// Words quoted for sh: the trace's lines and the written-down boot's alike.

const SAFE = /^[A-Za-z0-9_@%+=:,./-]+$/;

/** Quote one word for sh, only where needed, so lines stay readable. */
export function quote(word: string): string {
  if (word !== "" && SAFE.test(word)) return word;
  return "'" + word.replace(/'/g, "'\\''") + "'";
}

export function quoteAll(words: readonly string[]): string {
  return words.map(quote).join(" ");
}
