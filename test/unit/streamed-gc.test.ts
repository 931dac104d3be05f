// The forced minor GC of src/archive/large-body.ts (runtime v8 flags: kept to where it is needed) runs
// only for files streamed because they are larger than IN_MEMORY_MAX, never for the default 16 MiB
// segment that every wal-push of a default cluster prepares in memory.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { writeLargeSegment } from '../support/wal-fixtures.js';

const streamed = vi.hoisted(() => ({ bytes: 0 }));
vi.mock('../../src/archive/large-body.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('../../src/archive/large-body.js')>();
  return {
    ...real,
    streamed: (n: number) => {
      streamed.bytes += n;
    },
  };
});
const { IN_MEMORY_MAX, prepareLocalWal } = await import('../../src/archive/local-wal.js');

const dir = await mkdtemp(join(tmpdir(), 'wv-streamed-gc-'));
afterAll(() => rm(dir, { recursive: true, force: true }));

describe('the forced GC of streamed bodies', () => {
  it('trust: no forced GC for a default 16 MiB segment (only for streamed ones)', { timeout: 60_000 }, async () => {
    for (const [segno, segSize, codec, expected] of [
      [2, IN_MEMORY_MAX, 'zstd', 0],
      [3, IN_MEMORY_MAX, 'none', 0],
      [4, 2 * IN_MEMORY_MAX, 'zstd', 2 * IN_MEMORY_MAX],
    ] as const) {
      const s = await writeLargeSegment(dir, segno, { segSize, fill: 'zeros', seed: segno });
      streamed.bytes = 0;
      const p = await prepareLocalWal(s.path, s.name, codec, undefined, join(dir, 'tmp'));
      await p.dispose();
      // For the streamed file: every byte read once (the body is not read back here).
      if (expected === 0) expect(streamed.bytes, `${segSize} ${codec}`).toBe(0);
      else expect(streamed.bytes, `${segSize} ${codec}`).toBeGreaterThanOrEqual(expected);
    }
  });
});
