// Words quoted for sh: the trace's lines and the written-down boot's alike.

const SAFE = /^[A-Za-z0-9_@%+=:,./-]+$/;

/** One word in single quotes, its own quotes as '\''. */
function singleQuoted(word: string): string {
  return `'${word.replace(/'/g, "'\\''")}'`;
}

/**
 * Quote one word for sh, only where needed, so lines stay readable. A word
 * with a newline inside becomes the output of a printf, so that its line
 * stays one line (the trace is read, and pasted, line by line); a newline
 * at its end would be dropped by $(...), so such a word stays as it is.
 */
export function quote(word: string): string {
  if (word !== "" && SAFE.test(word)) return word;
  if (word.includes("\n") && !word.endsWith("\n"))
    return `"$(printf '%s\\n' ${word.split("\n").map(singleQuoted).join(" ")})"`;
  return singleQuoted(word);
}

export function quoteAll(words: readonly string[]): string {
  return words.map(quote).join(" ");
}
