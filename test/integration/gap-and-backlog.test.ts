import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestBucket, deleteRaw, envFor, getRaw, testStores, type TestStore } from '../support/stores.js';
import { markKeys, newestMark } from '../support/marks.js';
import { writeFakeSegment } from '../support/wal-fixtures.js';
import { cleanupAll, runWalvault, tempDir } from '../support/walvault.js';

const store: TestStore = testStores().find((s) => s.name === 'rgw') ?? testStores()[0]!;

describe('gap detection (per-timeline high-water mark)', () => {
  let work: string;
  let bucket: string;
  let env: Record<string, string>;

  beforeAll(async () => {
    work = await tempDir('wv-gap');
    bucket = await createTestBucket(store, 'walgap');
    env = { ...envFor(store, bucket, 'g'), WALVAULT_SPOOL: join(work, 'spool'), WALVAULT_HIGH_WATER_INTERVAL: '0.001', WALVAULT_DEADLINE: '10' };
    for (let segno = 1; segno <= 4; segno++) {
      const seg = await writeFakeSegment(work, segno, { seed: segno });
      const r = await runWalvault(['wal-push', seg.path, seg.name], { env });
      expect(r.code, r.stderr).toBe(0);
    }
  });
  afterAll(cleanupAll);

  it('records the archived range per timeline', async () => {
    const mark = await newestMark(store, bucket, 'g');
    expect(mark!.mark).toMatchObject({ timeline: 1, first: '000000010000000000000001', last: '000000010000000000000004' });
    // Write-once: one object per advance (highWaterInterval is tiny here), none overwritten, newest listed first.
    expect((await markKeys(store, bucket, 'g')).map((k) => k.slice(-29, -5))).toEqual([4, 3, 2, 1].map((n) => `00000001000000000000000${n}`));
    expect(await getRaw(store, bucket, 'g/state/timeline-00000001.json')).toBeNull();
  });

  it('reports a deleted segment below the mark as a gap, not as the end of WAL', async () => {
    await deleteRaw(store, bucket, 'g/wal/0000000100000000/000000010000000000000002');
    const pgdata = join(work, 'pgdata-recovery');
    await mkdir(pgdata);
    await writeFile(join(pgdata, 'recovery.signal'), '');
    const r = await runWalvault(['wal-fetch', '000000010000000000000002', join(pgdata, 'RECOVERYXLOG')], { env, cwd: pgdata });
    expect(r.code).toBe(255);
    expect(r.stderr).toMatch(/WalGap: 000000010000000000000002 is missing .* archived from 000000010000000000000001 through 000000010000000000000004/);
    expect(existsSync(join(pgdata, 'RECOVERYXLOG'))).toBe(false);

    const standby = join(work, 'pgdata-standby');
    await mkdir(standby);
    await writeFile(join(standby, 'standby.signal'), '');
    const s = await runWalvault(['wal-fetch', '000000010000000000000002', join(standby, 'RECOVERYXLOG')], { env, cwd: standby });
    expect(s.code).toBe(1);
    expect(s.stderr).toMatch(/WalGap/);
  });

  it('still answers 1 past the mark, on other timelines and for history files', async () => {
    for (const name of ['000000010000000000000005', '000000020000000000000003', '00000002.history']) {
      const r = await runWalvault(['wal-fetch', name, join(work, 'X')], { env, cwd: work });
      expect(r.code, `${name}: ${r.stderr}`).toBe(1);
    }
  });
});

describe('disk-full protection (maxReadyBytes)', () => {
  it('drops the oldest file past the limit, loudly, and records a gap marker once the store is reachable', async () => {
    const work = await tempDir('wv-full');
    const walDir = join(work, 'pg_wal');
    await mkdir(join(walDir, 'archive_status'), { recursive: true });
    const segs = [];
    for (let segno = 10; segno <= 13; segno++) {
      const seg = await writeFakeSegment(walDir, segno, { seed: segno });
      await writeFile(join(walDir, 'archive_status', `${seg.name}.ready`), '');
      segs.push(seg);
    }
    const bucket = await createTestBucket(store, 'walfull');
    const env = { ...envFor(store, bucket, 'f'), WALVAULT_SPOOL: join(work, 'spool'), WALVAULT_DEADLINE: '10' };

    // 4 MiB waiting, limit 3 MiB: the oldest is dropped without being stored.
    const dropped = await runWalvault(['wal-push', segs[0]!.path, segs[0]!.name], { env: { ...env, WALVAULT_MAX_READY_BYTES: '3MiB' }, cwd: work });
    expect(dropped.code).toBe(0);
    expect(dropped.stderr).toMatch(/DROPPING 00000001000000000000000A WITHOUT ARCHIVING IT/);
    expect(await getRaw(store, bucket, `f/wal/0000000100000000/${segs[0]!.name}`)).toBeNull();

    // PostgreSQL marks it done; the backlog is now under the limit: the next file is really pushed
    // and the pending gap marker is written to the store.
    await writeFile(join(walDir, 'archive_status', `${segs[0]!.name}.done`), '');
    const { rm } = await import('node:fs/promises');
    await rm(join(walDir, 'archive_status', `${segs[0]!.name}.ready`));
    const pushed = await runWalvault(['wal-push', segs[1]!.path, segs[1]!.name], { env: { ...env, WALVAULT_MAX_READY_BYTES: '3MiB' }, cwd: work });
    expect(pushed.code, pushed.stderr).toBe(0);
    expect(await getRaw(store, bucket, `f/wal/0000000100000000/${segs[1]!.name}`)).not.toBeNull();
    const marker = await getRaw(store, bucket, `f/state/gaps/${segs[0]!.name}.json`);
    expect(JSON.parse(marker!.body.toString())).toMatchObject({ name: segs[0]!.name, maxReadyBytes: 3 * 1024 * 1024 });
    await cleanupAll();
  });

  it('is off by default: a large backlog is pushed normally', async () => {
    const work = await tempDir('wv-full-off');
    const walDir = join(work, 'pg_wal');
    await mkdir(join(walDir, 'archive_status'), { recursive: true });
    const seg = await writeFakeSegment(walDir, 20, { seed: 20 });
    await writeFile(join(walDir, 'archive_status', `${seg.name}.ready`), '');
    const bucket = await createTestBucket(store, 'walfulloff');
    const env = { ...envFor(store, bucket, 'f'), WALVAULT_SPOOL: join(work, 'spool') };
    const r = await runWalvault(['wal-push', seg.path, seg.name], { env, cwd: work });
    expect(r.code, r.stderr).toBe(0);
    expect(await getRaw(store, bucket, `f/wal/0000000100000000/${seg.name}`)).not.toBeNull();
    await cleanupAll();
  });
});
