// Issue 13, part 2: S3 Object Lock on radosgw. A bucket created with Object Lock enabled (which turns
// versioning on); PostgreSQL 15 archiving through wal-push and a file-engine backup with
// s3ObjectLockMode/Days set: every object walvault wrote carries the retention (HEAD), high-water
// marks are write-once objects (several, newest first, never a second version of one key), delete
// skips every locked object and reports it (exit 0, nothing removed), and backup-fetch with
// wal-fetch restores. A multipart upload carries the retention too. On a bucket without Object Lock
// the same settings fail check and wal-push with the store's answer, nothing stored.
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { CreateBucketCommand, HeadObjectCommand, ListObjectVersionsCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createS3Storage } from '../../src/storage/s3/driver.js';
import { startArchivingCluster, switchAndWaitArchived, type ArchivingCluster } from '../support/archiving-cluster.js';
import { MARK_PAGE } from '../../src/archive/high-water-marks.js';
import { markKeys } from '../support/marks.js';
import { startRestoredCluster, type PgCluster } from '../support/pg.js';
import { createTestBucket, envFor, listKeys, s3ClientFor, s3OptionsFor, testStores, type TestStore } from '../support/stores.js';
import { writeFakeSegment } from '../support/wal-fixtures.js';
import { cleanupAll, runWalvault, tempDir, type WalvaultResult } from '../support/walvault.js';

const rgw = testStores().filter((s) => s.name === 'rgw');
const DAY = 86_400_000;

async function lockBucket(store: TestStore, hint: string): Promise<string> {
  const name = `wv-${hint}-${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
  await s3ClientFor(store).send(new CreateBucketCommand({ Bucket: name, ObjectLockEnabledForBucket: true }));
  return name;
}

describe.each(rgw)('S3 Object Lock on $name', (store: TestStore) => {
  let c: ArchivingCluster;
  let bucket: string;
  let started: number;
  const restored: PgCluster[] = [];
  const show = (r: WalvaultResult) => `exit ${r.code} ${r.signal ?? ''}\n${r.stderr}${r.stdout}`;
  const wv = (args: string[], timeoutMs = 120_000) => runWalvault(args, { env: c.env, timeoutMs });
  const head = (key: string) => s3ClientFor(store).send(new HeadObjectCommand({ Bucket: bucket, Key: key }));

  beforeAll(async () => {
    bucket = await lockBucket(store, 'lock');
    started = Date.now();
    c = await startArchivingCluster(store, 'lock', { settings: { s3ObjectLockMode: 'governance', s3ObjectLockDays: 2, highWaterInterval: 0.001 }, bucket });
    await c.pg.pgbench(['-i', '-s', '1', '-q']);
    await c.pg.query('CREATE TABLE marks (n int); INSERT INTO marks VALUES (1)');
    await switchAndWaitArchived(c.pg);
    const { WALVAULT_SPOOL: _rootSpool, ...common } = c.env;
    const b = await runWalvault(['backup-push', '--method', 'files', '--jobs', '2'], { env: { ...common, ...c.pg.connectionEnv() }, asPostgres: true, timeoutMs: 120_000 });
    expect(b.code, show(b)).toBe(0);
    await c.pg.query('INSERT INTO marks VALUES (2)');
    await switchAndWaitArchived(c.pg);
    await c.pg.query('INSERT INTO marks VALUES (3)');
    await switchAndWaitArchived(c.pg);
  }, 240_000);

  afterAll(async () => {
    c?.storage.close();
    for (const r of restored) await r.destroy();
    await c?.pg.destroy();
    await cleanupAll();
  });

  it('lock: check reports the bucket\'s Object Lock and the retention walvault sets', async () => {
    const r = await wv(['check']);
    console.log(`[sample] walvault check on a bucket with Object Lock:\n${r.stdout}`);
    // radosgw accepts If-None-Match on a versioned bucket (Object Lock turns versioning on) but does
    // not enforce it: check says so, and walvault writes with HEAD then PUT there.
    expect(r.code, show(r)).toBe(15);
    expect(r.stdout).toMatch(/^FAIL conditional-writes: .*a second PutObject with If-None-Match: \* succeeded \(the store ignores the header\)/m);
    expect(r.stderr).toMatch(/CheckFailed: 1 of 12 checks failed: conditional-writes$/m);
    expect(r.stdout).toMatch(/^ok {3}object-lock: the bucket has Object Lock enabled; every object walvault writes gets governance retention for 2 days from the moment it is written$/m);
    // The same bucket without the settings: objects get no retention from walvault.
    const bare = await runWalvault(['check'], { env: { ...envFor(store, bucket, 'pg'), WALVAULT_SPOOL: join(await tempDir('wv-lock-bare'), 'spool') } });
    expect(bare.stdout, show(bare)).toMatch(/^warn object-lock: the bucket has Object Lock enabled, but s3ObjectLockMode\/s3ObjectLockDays are not set/m);
  });

  it('lock: every object walvault wrote carries GOVERNANCE retention until its write + 2 days', async () => {
    const keys = await listKeys(store, bucket, 'pg/');
    const kinds = (re: RegExp) => keys.filter((k) => re.test(k)).length;
    expect(kinds(/^pg\/wal\/[0-9A-F]{16}\/[0-9A-F]{24}$/)).toBeGreaterThan(3);
    expect(kinds(/\/backup\.json$/)).toBe(1);
    expect(kinds(/\/files\.json$/)).toBe(1);
    expect(kinds(/\/backup_manifest$/)).toBe(1);
    expect(kinds(/\/data\/\d+$/)).toBeGreaterThan(0);
    expect(kinds(/^pg\/walvault\.json$/)).toBe(1);
    expect(kinds(/^pg\/state\/timeline-00000001\//)).toBeGreaterThan(1);
    const now = Date.now();
    for (const key of keys) {
      const h = await head(key);
      expect(h.ObjectLockMode, key).toBe('GOVERNANCE');
      const until = h.ObjectLockRetainUntilDate!.getTime();
      // retain-until = the moment of the write + 2 days (a second of slack for the store's rounding)
      expect(until, key).toBeGreaterThanOrEqual(started + 2 * DAY - 1000);
      expect(until, key).toBeLessThanOrEqual(now + 2 * DAY + 1000);
    }
    console.log(`[sample] ${keys.length} objects, each with GOVERNANCE retention; e.g. ${keys[0]} until ${(await head(keys[0]!)).ObjectLockRetainUntilDate!.toISOString()}`);
  });

  it('lock: high-water marks are new objects, newest first, each key one version but for a HEAD-then-PUT race (nothing overwritten later)', async () => {
    const marks = await markKeys(store, bucket, 'pg');
    expect(marks.length).toBeGreaterThan(1);
    const lasts = marks.map((k) => k.slice(-29, -5));
    expect(lasts).toEqual([...lasts].sort().reverse());
    const archived = await c.pg.query("SELECT last_archived_wal FROM pg_stat_archiver");
    expect(lasts[0]).toBe(archived);
    // The bucket is versioned (Object Lock turns it on): a rewritten key would show two versions.
    const versions = await s3ClientFor(store).send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: 'pg/' }));
    // (the If-None-Match probes write their throw-away key twice on purpose, and delete it)
    const probe = (k: string) => /^pg\/state\/(probe|check)\//.test(k);
    const etags = new Map<string, string[]>();
    for (const v of versions.Versions ?? []) if (!probe(v.Key!)) etags.set(v.Key!, [...(etags.get(v.Key!) ?? []), v.ETag!]);
    // radosgw ignores If-None-Match here, so walvault writes with HEAD then PUT, which two processes
    // racing for the same new key can both pass: the first walvault.json and a mark (wal-push and its
    // look-ahead worker reaching the same last segment, each with its own time) are the keys that
    // can; a mark is never rewritten later (at most the two racing versions). Every other key, WAL
    // and backup objects included, is one version.
    for (const k of marks) expect(etags.get(k)!.length, k).toBeLessThanOrEqual(2);
    for (const [k, tags] of etags) if (k !== 'pg/walvault.json' && !marks.includes(k)) expect(tags, k).toHaveLength(1);
    console.log(`[sample] versions of walvault.json: ${etags.get('pg/walvault.json')?.length}`);
    expect((versions.DeleteMarkers ?? []).filter((d) => !probe(d.Key!))).toEqual([]);
  });

  it('lock: delete skips every locked object and reports it, exit 0, nothing removed', async () => {
    // A second backup, so that retention would delete the first one and the WAL before it.
    const { WALVAULT_SPOOL: _rootSpool, ...common } = c.env;
    const b = await runWalvault(['backup-push', '--method', 'files', '--jobs', '2'], { env: { ...common, ...c.pg.connectionEnv() }, asPostgres: true, timeoutMs: 120_000 });
    expect(b.code, show(b)).toBe(0);
    // More marks than the 8 newest that delete always keeps (readers read those), so some are superseded.
    while ((await markKeys(store, bucket, 'pg')).length <= MARK_PAGE + 1) await switchAndWaitArchived(c.pg);
    await switchAndWaitArchived(c.pg);
    const before = await listKeys(store, bucket, 'pg/');
    const r = await wv(['delete', '--retain-full', '1', '--confirm']);
    expect(r.code, show(r)).toBe(0);
    console.log(`[sample] walvault delete --retain-full 1 --confirm on a locked bucket:\n${r.stdout}`);
    expect(r.stderr).toMatch(/the bucket has S3 Object Lock enabled: checking every object the plan would delete/);
    expect(r.stdout).toMatch(/^locked {2}base_\S+: kept whole, S3 Object Lock on backups\/base_\S+: GOVERNANCE until \d{4}-/m);
    expect(r.stdout).toMatch(/^WAL kept from segment [0-9A-F]{24} on \(the first WAL segment under Object Lock\)/m);
    expect(r.stdout).toMatch(/^locked {2}\d+ superseded high-water marks?: kept, S3 Object Lock on state\/timeline-00000001\/[0-9A-F]{16}-[0-9A-F]{24}\.json: GOVERNANCE until /m);
    expect(r.stdout).toMatch(/^deleted 0 backups, 0 WAL files, 0 gap markers, 0 superseded marks, 0 incomplete backups: 0 objects/m);
    expect(await listKeys(store, bucket, 'pg/')).toEqual(before);
  }, 180_000);

  it('lock: backup-fetch and wal-fetch restore from the locked bucket', async () => {
    await c.pg.query('INSERT INTO marks VALUES (4)');
    await switchAndWaitArchived(c.pg);
    const dir = join(await tempDir('wv-lock-restore', { forPostgres: true }), 'data');
    const r = await runWalvault(['backup-fetch', 'LATEST', dir, '--owner', 'postgres', '--jobs', '2'], { env: c.env, wrapper: true, timeoutMs: 120_000 });
    expect(r.code, show(r)).toBe(0);
    const pg = await startRestoredCluster(dir, restored);
    expect(await pg.query("SELECT string_agg(n::text, ',' ORDER BY n) FROM marks")).toBe('1,2,3,4');
    await pg.stop('immediate');
  }, 180_000);

  it('lock: a multipart upload (CreateMultipartUpload) carries the retention too', async () => {
    const s = createS3Storage(s3OptionsFor(store, bucket, { prefix: 'mp', objectLock: { mode: 'compliance', days: 1 } }));
    try {
      const body = randomBytes(6 * 1024 * 1024);
      await s.upload('big', Readable.from([body.subarray(0, 3 << 20), body.subarray(3 << 20)]), {});
      const h = await head('mp/big');
      expect(h.ContentLength).toBe(body.length);
      expect(h.ObjectLockMode).toBe('COMPLIANCE');
      expect(h.ObjectLockRetainUntilDate!.getTime()).toBeGreaterThan(Date.now() + DAY - 60_000);
      expect(await s.objectLock('big')).toMatch(/^COMPLIANCE until /);
    } finally {
      s.close();
    }
  });
});

describe.each(rgw)('S3 Object Lock settings on a bucket without Object Lock on $name', (store: TestStore) => {
  afterAll(cleanupAll);

  it('lock: check fails the object-lock line, wal-push fails with the store\'s answer and stores nothing', async () => {
    const bucket = await createTestBucket(store, 'nolock');
    const work = await tempDir('wv-nolock');
    const env = { ...envFor(store, bucket, 'p'), WALVAULT_SPOOL: join(work, 'spool'), WALVAULT_S3_OBJECT_LOCK_MODE: 'governance', WALVAULT_S3_OBJECT_LOCK_DAYS: '1', WALVAULT_DEADLINE: '10', WALVAULT_LOOKAHEAD: '0' };
    const check = await runWalvault(['check'], { env });
    console.log(`[sample] check with lock settings on a bucket without Object Lock:\n${check.stdout}`);
    expect(check.code).toBe(15);
    expect(check.stdout).toMatch(/^FAIL object-lock: s3ObjectLockMode\/s3ObjectLockDays ask for governance retention for 1 day, but the bucket has no Object Lock: .* — use a bucket created with Object Lock enabled/m);
    const seg = await writeFakeSegment(work, 1, { seed: 1 });
    const push = await runWalvault(['wal-push', seg.path, seg.name], { env });
    console.log(`[sample] wal-push with lock settings on a bucket without Object Lock: exit ${push.code}\n${push.stderr}`);
    expect(push.code).toBeGreaterThan(0);
    expect(push.code).toBeLessThanOrEqual(125);
    expect(push.code).toBe(9);
    expect(push.stderr.trim().split('\n').at(-1)).toMatch(/ERROR: StorageError: S3 PutObject \S+ failed: HTTP 400 InvalidRequest \(the write carries an S3 Object Lock retention, s3ObjectLockMode: does the bucket have Object Lock enabled\? walvault check tells\)$/);
    expect((await listKeys(store, bucket, 'p/')).filter((k) => !k.startsWith('p/state/'))).toEqual([]);
  });
});
