import { corruptObjectError } from '../common/errors.js';

// A timeline history file (<TLI>.history, written by PostgreSQL at promotion) lists every ancestor
// timeline and the LSN where its child branched off: "<parent TLI>\t<X/Y>\t<reason>" per line, '#'
// comments and blank lines allowed (timeline.c, readTimeLineHistory). Read from a repository it is
// data: anything else is a corrupt object, never a guess.

export interface TimelineBranch {
  /** An ancestor timeline... */
  parent: number;
  /** ...which the next timeline of the chain left at this LSN. */
  switchpoint: bigint;
}

const LINE = /^(\d{1,10})\s+([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})(?:\s.*)?$/;

/** The ancestors of `timeline`, oldest first, from the text of its history file. */
export function parseTimelineHistory(text: string, timeline: number, where: string): TimelineBranch[] {
  const corrupt = (why: string) => corruptObjectError(`${where} is not a timeline history file: ${why}`);
  const out: TimelineBranch[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\r$/, '').trim();
    if (line === '' || line.startsWith('#')) return;
    const m = LINE.exec(line);
    if (!m) throw corrupt(`line ${i + 1} is not "<timeline>\\t<LSN>\\t<reason>"`);
    const parent = Number(m[1]);
    const switchpoint = (BigInt('0x' + m[2]) << 32n) | BigInt('0x' + m[3]);
    const prev = out.at(-1);
    if (parent < 1 || parent >= timeline) throw corrupt(`line ${i + 1}: timeline ${parent} cannot be an ancestor of timeline ${timeline}`);
    if (prev && parent <= prev.parent) throw corrupt(`line ${i + 1}: timeline IDs must increase`);
    if (prev && switchpoint < prev.switchpoint) throw corrupt(`line ${i + 1}: switch points must not go backwards`);
    out.push({ parent, switchpoint });
  });
  if (out.length === 0) throw corrupt('no ancestor timeline');
  return out;
}
