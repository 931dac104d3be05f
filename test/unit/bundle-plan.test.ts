import { describe, expect, it } from 'vitest';
import { planObjects } from '../../src/backup/bundle-plan.js';

const MiB = 1024 * 1024;

describe('backup object plan (format 2)', () => {
  it('packs small files in order into bundles of at most the bundle size', () => {
    // bundle 8 MiB: below 1 MiB is small.
    const sizes = [MiB - 1, MiB - 1, MiB - 1, MiB - 1, MiB - 1, MiB - 1, MiB - 1, MiB - 1, MiB - 1, 0];
    const plan = planObjects(sizes, 8 * MiB);
    expect(plan.map((o) => o.files.map((f) => f.index))).toEqual([[0, 1, 2, 3, 4, 5, 6, 7], [8, 9]]);
    expect(plan.every((o) => o.bundle && o.size <= 8 * MiB)).toBe(true);
    expect(plan.map((o) => o.n)).toEqual([0, 1]);
    expect(plan[0]!.size).toBe(8 * (MiB - 1));
  });

  it('gives every file of at least an eighth of the bundle size an object of its own', () => {
    const plan = planObjects([10, MiB, 20, 5 * MiB, 30], 8 * MiB);
    expect(plan.map((o) => ({ n: o.n, bundle: o.bundle, files: o.files.map((f) => f.index), size: o.size }))).toEqual([
      { n: 0, bundle: true, files: [0, 2, 4], size: 60 },
      { n: 1, bundle: false, files: [1], size: MiB },
      { n: 2, bundle: false, files: [3], size: 5 * MiB },
    ]);
  });

  it('covers every file exactly once, objects numbered 0.. in order', () => {
    const sizes = Array.from({ length: 1000 }, (_, i) => (i * 7919) % (3 * MiB));
    const plan = planObjects(sizes, 4 * MiB);
    const seen = plan.flatMap((o) => o.files.map((f) => f.index)).sort((a, b) => a - b);
    expect(seen).toEqual(sizes.map((_, i) => i));
    expect(plan.map((o) => o.n)).toEqual(plan.map((_, i) => i));
    for (const o of plan) {
      expect(o.size).toBe(o.files.reduce((a, f) => a + f.size, 0));
      if (o.bundle) expect(o.size).toBeLessThanOrEqual(4 * MiB);
      else expect(o.files).toHaveLength(1);
      // Within an object, files keep the list order (offsets follow it).
      expect(o.files.map((f) => f.index)).toEqual([...o.files.map((f) => f.index)].sort((a, b) => a - b));
    }
  });

  it('plans nothing for no files and refuses a nonsense bundle size', () => {
    expect(planObjects([], MiB)).toEqual([]);
    expect(() => planObjects([1], 0)).toThrow(RangeError);
  });
});
