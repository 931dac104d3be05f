// Issue 12: one wal-push that uploads its own 16 MiB segment and 8 look-ahead ones stays in bounded
// memory (the benchmark's "wal-push with look-ahead" row, target 100 MiB there): at most two files are
// read and compressed at once, a file reserves its expected compressed size rather than 16 MiB, and
// the bodies of stored files are neither kept by the batch nor left to V8 as promoted garbage. Before
// that (a6541e0) the same run peaked at ~135 MiB with WAL-like segments. The bounds here are looser
// than the benchmark's target (other work shares the machine) but fail on that regression.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { peakRssMiB, RSS_PREFIX } from '../support/peak-rss.js';
import { createTestBucket, deleteRaw, envFor, headRaw, testStores } from '../support/stores.js';
import { writeLargeSegment } from '../support/wal-fixtures.js';
import { cleanupAll, runWalvault, tempDir } from '../support/walvault.js';

const MiB = 1024 * 1024;
const SEG = 16 * MiB;
const walKey = (prefix: string, name: string) => `${prefix}/wal/${name.slice(0, 16)}/${name}`;
const stores = testStores().filter((s) => s.name === 'rgw');

describe.each(stores)('look-ahead memory ($name)', (store) => {
  let bucket: string;
  let work: string;
  beforeAll(async () => {
    bucket = await createTestBucket(store, 'lamem');
    work = await tempDir('wv-lookahead-memory');
  });
  afterAll(cleanupAll);

  /** 9 ready segments of 16 MiB, pushed by one wal-push with look-ahead 8: its peak RSS (MiB). */
  async function pushNine(label: string, fill: 'walLike' | 'random'): Promise<number> {
    const pgWal = join(work, label, 'pg_wal');
    await mkdir(join(pgWal, 'archive_status'), { recursive: true });
    const segs = [];
    for (let segno = 2; segno < 11; segno++) {
      const s = await writeLargeSegment(pgWal, segno, { segSize: SEG, fill, seed: segno });
      await writeFile(join(pgWal, 'archive_status', `${s.name}.ready`), '');
      segs.push(s);
    }
    const env = {
      ...envFor(store, bucket, label),
      WALVAULT_SPOOL: join(work, label, 'spool'),
      WALVAULT_PREFETCH: '0',
      WALVAULT_LOOKAHEAD: '8',
      WALVAULT_COMPRESSION: 'zstd',
    };
    const r = await runWalvault(['wal-push', segs[0]!.path, segs[0]!.name], { env, prefix: RSS_PREFIX, timeoutMs: 120_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr, r.stderr).toMatch(/look-ahead uploaded 8 more/);
    for (const s of segs) {
      const head = await headRaw(store, bucket, walKey(label, s.name));
      expect(head?.metadata?.['walvault-sha256'], s.name).toBe(s.sha256);
      await deleteRaw(store, bucket, walKey(label, s.name)); // memstore capacity
    }
    return peakRssMiB(r);
  }

  it('a wal-push with 8 look-ahead uploads of WAL-like segments stays well below its old peak', { timeout: 180_000 }, async () => {
    const rss = await pushNine('wallike', 'walLike');
    console.log(`lookahead-memory: 9 WAL-like 16 MiB segments, peak RSS ${rss.toFixed(0)} MiB`);
    expect(rss, `peak RSS ${rss.toFixed(0)} MiB`).toBeLessThan(115);
  });

  it('incompressible segments (bodies as large as the files) stay bounded too', { timeout: 180_000 }, async () => {
    // Two files prepared at once, each a 16 MiB body plus its compressor output while it is joined
    // (~64 MiB over the ~90 MiB of a process with the SDK loaded, ~155 MiB measured); the 9 bodies
    // held at once would be ~145 MiB more.
    const rss = await pushNine('random', 'random');
    console.log(`lookahead-memory: 9 random 16 MiB segments, peak RSS ${rss.toFixed(0)} MiB`);
    expect(rss, `peak RSS ${rss.toFixed(0)} MiB`).toBeLessThan(190);
  });
});
