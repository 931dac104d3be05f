// Issue 13 part 2, the pure and file:// parts: the lock settings, the retention a write carries, the
// names of write-once high-water marks (newest first in a listing), which ones are superseded, and
// readHighWater taking the newest valid mark and the old single object, whichever says more.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { markKey, parseMarkKey, supersededMarks, MARK_PAGE } from '../../src/archive/high-water-marks.js';
import { advanceHighWater, highWaterKey, readHighWater } from '../../src/archive/high-water.js';
import { smallObjectMeta } from '../../src/archive/objects.js';
import { putOnce } from '../../src/archive/small-objects.js';
import { loadConfig } from '../../src/common/config.js';
import { ExitCode } from '../../src/common/errors.js';
import { Deadline } from '../../src/common/retry.js';
import { lockFields } from '../../src/storage/s3/object-lock.js';
import { createFileStorage } from '../../src/storage/file/driver.js';
import type { Storage } from '../../src/storage/types.js';

const seg = (n: number, tli = 1) => `${tli.toString(16).toUpperCase().padStart(8, '0')}${Math.floor(n / 256).toString(16).toUpperCase().padStart(8, '0')}${(n % 256).toString(16).toUpperCase().padStart(8, '0')}`;

function configError(flags: Record<string, unknown>, env: Record<string, string> = {}): string {
  try {
    loadConfig(flags, env);
  } catch (e) {
    expect((e as { exitCode: number }).exitCode).toBe(ExitCode.config);
    return (e as Error).message;
  }
  throw new Error('loadConfig accepted it');
}

describe('S3 Object Lock settings', () => {
  it('lock: mode and days load from flags and environment', () => {
    const { config } = loadConfig({ 's3-object-lock-mode': 'compliance' }, { WALVAULT_S3_OBJECT_LOCK_DAYS: '30', WALVAULT_REPO: 's3://bucket/p' });
    expect(config.s3ObjectLockMode).toBe('compliance');
    expect(config.s3ObjectLockDays).toBe(30);
  });

  it.each([
    [{ 's3-object-lock-mode': 'governance' }, {}, /s3ObjectLockMode and s3ObjectLockDays go together/],
    [{}, { WALVAULT_S3_OBJECT_LOCK_DAYS: '7' }, /s3ObjectLockMode and s3ObjectLockDays go together/],
    [{ 's3-object-lock-mode': 'legal' }, { WALVAULT_S3_OBJECT_LOCK_DAYS: '7' }, /expected one of governance, compliance/],
    [{ 's3-object-lock-mode': 'governance', 's3-object-lock-days': '0' }, {}, /at least 1/],
    [{ 's3-object-lock-mode': 'governance', 's3-object-lock-days': '36501' }, {}, /at most 36500/],
    [{ 's3-object-lock-mode': 'governance', 's3-object-lock-days': '7', repo: 'file:///srv/wal' }, {}, /repository file:\/\/\/srv\/wal is file:\/\/: Object Lock is an S3 feature/],
  ])('lock: %j %j is a ConfigError', (flags, env, message) => {
    expect(configError(flags, env)).toMatch(message);
  });

  it('lock: each write carries the mode and now + days; nothing without the settings', () => {
    const now = new Date('2026-11-30T12:00:00Z');
    expect(lockFields({ mode: 'governance', days: 7 }, now)).toEqual({ ObjectLockMode: 'GOVERNANCE', ObjectLockRetainUntilDate: new Date('2026-12-07T12:00:00Z') });
    expect(lockFields({ mode: 'compliance', days: 1 }, now).ObjectLockMode).toBe('COMPLIANCE');
    expect(lockFields(undefined, now)).toEqual({});
  });
});

describe('write-once high-water mark names', () => {
  it('marks: a larger last segment sorts first, across log files and timelines stay apart', () => {
    const lasts = [seg(1), seg(2), seg(255), seg(256), seg(257), seg(0x10000)];
    const keys = lasts.map((l) => markKey(1, l));
    expect([...keys].sort()).toEqual([...keys].reverse());
    expect(markKey(1, seg(3))).toBe(`state/timeline-00000001/FFFFFFFFFFFFFFFC-${seg(3)}.json`);
    expect(markKey(0x1a, seg(3, 0x1a)).startsWith('state/timeline-0000001A/')).toBe(true);
    for (const l of lasts) expect(parseMarkKey(markKey(1, l))).toEqual({ timeline: 1, last: l });
  });

  it.each([
    'state/timeline-00000001.json',
    `state/timeline-00000001/FFFFFFFFFFFFFFFD-${seg(3)}.json`, // complement of another segment
    `state/timeline-00000002/FFFFFFFFFFFFFFFC-${seg(3)}.json`, // segment of another timeline
    `state/timeline-00000001/fffffffffffffffc-${seg(3)}.json`,
    `state/timeline-00000001/FFFFFFFFFFFFFFFC-${seg(3)}.json.tmp`,
  ])('marks: %s is not a write-once mark', (key) => {
    expect(parseMarkKey(key)).toBeNull();
  });

  it('marks: superseded = every mark of a timeline but the newest, oldest first; other keys ignored', () => {
    const objs = [seg(1), seg(5), seg(3)].map((l) => ({ key: markKey(1, l) }));
    const t2 = [seg(9, 2), seg(10, 2)].map((l) => ({ key: markKey(2, l) }));
    const other = [{ key: 'state/timeline-00000001.json' }, { key: 'state/gaps/x.json' }, { key: markKey(3, seg(4, 3)) }];
    expect(supersededMarks([...objs, ...t2, ...other], 1).map((o) => o.key)).toEqual([markKey(1, seg(1)), markKey(1, seg(3)), markKey(2, seg(9, 2))]);
    expect(supersededMarks(other)).toEqual([]);
  });
});

describe('readHighWater and advanceHighWater on file://', () => {
  const roots: string[] = [];
  const stores: Storage[] = [];
  afterAll(async () => {
    for (const s of stores) s.close();
    for (const r of roots) await rm(r, { recursive: true, force: true });
  });
  const ctx = () => ({ policy: { retries: 0, minDelayMs: 1, maxDelayMs: 1, attemptTimeoutMs: 5000, deadlineMs: 10_000 }, deadline: new Deadline(10_000) });
  async function repo(): Promise<{ s: Storage; root: string }> {
    const root = await mkdtemp(join(tmpdir(), 'wv-marks-'));
    roots.push(root);
    const s = createFileStorage(root);
    stores.push(s);
    return { s, root };
  }
  const body = (first: string, last: string, tli = 1) => Buffer.from(JSON.stringify({ timeline: tli, first, last, updatedAt: new Date().toISOString() }));
  const plant = (s: Storage, key: string, b: Buffer) => s.put(key, b, smallObjectMeta(b));

  it('marks: every advance is a new object, none overwritten; the newest valid one is read', async () => {
    const { s, root } = await repo();
    const spool = join(root, '..', `${root.split('/').pop()}-spool`);
    roots.push(spool);
    for (const n of [1, 2, 3, 4]) await advanceHighWater(s, 1, seg(n), { spool, ...ctx(), intervalMs: 0 });
    const keys: string[] = [];
    for await (const o of s.list('state/')) keys.push(o.key);
    expect(keys).toEqual([4, 3, 2, 1].map((n) => markKey(1, seg(n))));
    expect(await readHighWater(s, 1, ctx())).toMatchObject({ first: seg(1), last: seg(4) });
  });

  it('marks: a damaged newest mark is skipped for the next valid one; all damaged is CorruptObject', async () => {
    const { s } = await repo();
    await plant(s, markKey(1, seg(3)), body(seg(1), seg(3)));
    const bad = Buffer.from('{"not":"a mark"}');
    await plant(s, markKey(1, seg(9)), bad);
    // A mark whose body names another last segment than its key is not trusted either.
    await plant(s, markKey(1, seg(8)), body(seg(1), seg(12)));
    expect(await readHighWater(s, 1, ctx())).toMatchObject({ last: seg(3) });
    await s.delete([markKey(1, seg(3))]);
    await expect(readHighWater(s, 1, ctx())).rejects.toMatchObject({ code: 'CorruptObject', message: expect.stringMatching(/FFFFFFFFFFFFFFF6-000000010000000000000009\.json is not a valid high-water mark/) });
  });

  it(`marks: only the first ${MARK_PAGE} marks are read`, async () => {
    const { s } = await repo();
    await plant(s, markKey(1, seg(1)), body(seg(1), seg(1)));
    for (let n = 2; n <= MARK_PAGE + 1; n++) await plant(s, markKey(1, seg(n)), Buffer.from('damaged'));
    await expect(readHighWater(s, 1, ctx())).rejects.toMatchObject({ code: 'CorruptObject' });
    await s.delete([markKey(1, seg(MARK_PAGE + 1))]);
    expect(await readHighWater(s, 1, ctx())).toMatchObject({ last: seg(1) });
  });

  it('marks: the old single object is still read; whichever says more wins', async () => {
    const { s } = await repo();
    await plant(s, highWaterKey(1), body(seg(1), seg(7)));
    expect(await readHighWater(s, 1, ctx())).toMatchObject({ last: seg(7) });
    await plant(s, markKey(1, seg(5)), body(seg(1), seg(5)));
    expect(await readHighWater(s, 1, ctx())).toMatchObject({ last: seg(7) });
    await plant(s, markKey(1, seg(9)), body(seg(1), seg(9)));
    expect(await readHighWater(s, 1, ctx())).toMatchObject({ last: seg(9) });
    // A damaged old object: ignored next to a valid write-once mark, an error without one.
    await plant(s, highWaterKey(1), Buffer.from('damaged'));
    expect(await readHighWater(s, 1, ctx())).toMatchObject({ last: seg(9) });
    await s.delete([markKey(1, seg(9)), markKey(1, seg(5))]);
    await expect(readHighWater(s, 1, ctx())).rejects.toMatchObject({ code: 'CorruptObject' });
  });

  it('write-once: the same content again is success, other content ArchiveConflict and untouched', async () => {
    const { s } = await repo();
    const a = Buffer.from('a');
    expect(await putOnce(s, 'backups/x/manifest', a, smallObjectMeta(a))).toBe('created');
    expect(await putOnce(s, 'backups/x/manifest', a, smallObjectMeta(a))).toBe('existed');
    const b = Buffer.from('b');
    await expect(putOnce(s, 'backups/x/manifest', b, smallObjectMeta(b))).rejects.toMatchObject({ code: 'ArchiveConflict', message: expect.stringMatching(/already exists with other content .*refusing to overwrite it/) });
    expect(await putOnce(s, 'backups/x/manifest', b, smallObjectMeta(b), { anyContent: true })).toBe('existed');
    const got = await s.get('backups/x/manifest');
    got!.body.destroy();
    expect(got!.info.meta['sha256']).toBe(smallObjectMeta(a).sha256);
  });
});
