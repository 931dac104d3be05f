// Characters that end or forge a line wherever a value read from a flag, a setting or the repository
// is written: C0 controls, DEL, C1 controls (U+0085 is a line break to some readers) and the Unicode
// line and paragraph separators. postgresql.conf has no escape for a line break inside a string;
// a log line must stay one line.
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

/** The first such character of `value` as `U+XXXX`, or undefined when there is none. */
export function controlChar(value: string): string | undefined {
  const m = CONTROL.exec(value);
  return m ? `U+${m[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}` : undefined;
}

/**
 * `value` with each such character written as a visible escape (`\x1b`, `\u2028`), and `\` as `\\`
 * so that an escape is never ambiguous: for printing a string from the repository or a store (a key
 * can carry an ESC sequence or a forged line).
 */
export function escapeControl(value: string): string {
  return value.replace(new RegExp(`\\\\|${CONTROL.source}`, 'g'), (c) => {
    if (c === '\\') return '\\\\';
    const code = c.charCodeAt(0);
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}

/**
 * `value` as indented JSON for stdout, ending in a newline. JSON.stringify escapes C0 controls but
 * leaves DEL, C1 and U+2028/U+2029 raw; those are escaped too, so that a string from the repository
 * cannot break a line for whoever reads the document as text.
 */
export function printableJson(value: unknown): string {
  return JSON.stringify(value, null, 2).replace(/[\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`) + '\n';
}
