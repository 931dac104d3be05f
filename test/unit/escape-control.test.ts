// verify's text output names keys anyone with write access to the repository may have chosen: a
// control character in one must not end or forge a line of the report (or of a log reading it).
import { describe, expect, it } from 'vitest';
import { escapeControl, printableJson } from '../../src/common/control-chars.js';
import { foreignNote } from '../../src/operate/verify.js';

const listed = (key: string) => ({ key, storedSize: 1, lastModified: new Date(0) });

describe('foreignNote (keys walvault does not know, as verify shows them)', () => {
  it('escapes control characters in the keys it names, so the note stays one line', () => {
    const note = foreignNote([listed('notes.txt'), listed('x\nok: no problems found'), listed('a\u001b[31mred'), listed('back\\slash')]);
    expect(note).toBe('4 object(s) walvault does not know (left alone): notes.txt, x\\x0aok: no problems found, a\\x1b[31mred, back\\\\slash');
    expect(note).not.toMatch(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/);
  });

  it('names at most five', () => {
    const note = foreignNote(['a', 'b', 'c', 'd', 'e', 'f'].map(listed));
    expect(note).toBe('6 object(s) walvault does not know (left alone): a, b, c, d, e, ...');
  });
});

describe('escapeControl (one escape for every string from the repository that is printed)', () => {
  it('C0, DEL, C1 and the Unicode line separators become \\xNN / \\uNNNN, a backslash \\\\; other text is unchanged', () => {
    expect(escapeControl('a\tb\u007f\u0085\u2028é\\')).toBe('a\\x09b\\x7f\\x85\\u2028é\\\\');
  });
});

describe('printableJson (every --json document)', () => {
  it('escapes what JSON.stringify leaves raw (DEL, C1, U+2028/2029) and still parses to the same value', () => {
    const value = { key: 'a\u007fb\u0085c\u2028d\u2029e\n' };
    const text = printableJson(value);
    expect(text).not.toMatch(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u2029]/);
    expect(text.endsWith('}\n')).toBe(true);
    expect(JSON.parse(text)).toEqual(value);
  });
});
