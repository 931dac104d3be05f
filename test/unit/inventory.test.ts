import { describe, expect, it } from 'vitest';
import { walRuns } from '../../src/operate/inventory.js';

const MiB = 1024 * 1024;
const seg = (n: number, log = 0, tli = 1) =>
  `${tli.toString(16).toUpperCase().padStart(8, '0')}${log.toString(16).toUpperCase().padStart(8, '0')}${n.toString(16).toUpperCase().padStart(8, '0')}`;

describe('walRuns (the unbroken runs of a timeline; gaps lie between them)', () => {
  it('splits at every missing segment', () => {
    const names = [seg(1), seg(2), seg(3), seg(5), seg(8), seg(9)].map((name) => ({ name }));
    expect(walRuns(names, 16 * MiB)).toEqual([
      { first: seg(1), last: seg(3), count: 3 },
      { first: seg(5), last: seg(5), count: 1 },
      { first: seg(8), last: seg(9), count: 2 },
    ]);
  });

  it('runs across a log id boundary, which depends on the segment size', () => {
    const names = [seg(0xff, 0), seg(0, 1)].map((name) => ({ name }));
    expect(walRuns(names, 16 * MiB)).toEqual([{ first: seg(0xff, 0), last: seg(0, 1), count: 2 }]);
    // With 1 MiB segments a log id holds 4096 of them: 0/FF and 1/0 are far apart.
    expect(walRuns(names, MiB)).toHaveLength(2);
  });

  it('is empty for no segments', () => {
    expect(walRuns([], 16 * MiB)).toEqual([]);
  });
});
