// walvault delete (retention) end to end on PostgreSQL 15 and radosgw, on one cluster (1 MiB WAL
// segments, pgbench -s 1) and backups taken with --method files: three full backups with WAL
// between, a dry run that changes nothing, --retain-full 2 removing exactly the oldest backup and
// the WAL before the second, PITR inside the kept window still exact and a target before it refused,
// an incremental chain kept whole, and a delete SIGKILLed right after its first backup.json delete
// (a proxy withholds the store's answer) leaving a repository backup-list and backup-fetch accept,
// which the next run finishes; an incremental backup-push whose reference goes meanwhile fails cleanly.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Storage } from '../../src/storage/types.js';
import { PgCluster, startRestoredCluster } from '../support/pg.js';
import { CreateBucketCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { createS3Storage } from '../../src/storage/s3/driver.js';
import type { BackupInfo } from '../../src/backup/backup-info.js';
import { makeBackupId, sentinelBody } from '../../src/backup/catalog.js';
import { loadConfig } from '../../src/common/config.js';
import { runDelete } from '../../src/operate/delete-run.js';
import { createTestBucket, envFor, listKeys, s3ClientFor, s3OptionsFor, testStores, type TestStore } from '../support/stores.js';
import { cleanupAll, runWalvault, tempDir, type WalvaultResult } from '../support/walvault.js';
import { startArchivingCluster, switchAndWaitArchived } from '../support/archiving-cluster.js';
import { fault, FaultProxy } from '../support/fault-proxy.js';

const rgw = testStores().filter((s) => s.name === 'rgw');

interface Listed {
  id: string;
  type: string;
  startSegment: string;
}

describe.each(rgw)('walvault delete on $name', (store: TestStore) => {
  let pg: PgCluster;
  let bucket: string;
  let env: Record<string, string>;
  let storage: Storage;
  const restored: PgCluster[] = [];
  const ids: Record<'b1' | 'b2' | 'b3' | 'i4' | 'b5', string> = { b1: '', b2: '', b3: '', i4: '', b5: '' };
  let beforeB2 = '';
  let between = '';

  const show = (r: WalvaultResult) => `exit ${r.code} ${r.signal ?? ''}\n${r.stderr}${r.stdout}`;
  const wv = (args: string[], timeoutMs = 120_000) => runWalvault(args, { env, timeoutMs });
  const push = async (...extra: string[]): Promise<string> => {
    const { WALVAULT_SPOOL: _rootSpool, ...common } = env;
    const r = await runWalvault(['backup-push', '--method', 'files', '--jobs', '2', ...extra], {
      env: { ...common, ...pg.connectionEnv() },
      asPostgres: true,
      timeoutMs: 120_000,
    });
    expect(r.code, show(r)).toBe(0);
    return r.stdout.trim();
  };
  const backups = async (): Promise<Listed[]> => {
    const r = await wv(['backup-list', '--json']);
    expect(r.code, show(r)).toBe(0);
    return JSON.parse(r.stdout) as Listed[];
  };
  const keys = () => listKeys(store, bucket, 'pg/');
  const walName = (key: string) => key.split('/').at(-1)!;
  const isWal = (key: string) => key.startsWith('pg/wal/') && !key.endsWith('.history');
  /** WAL keys (segments, .partial, .backup) below `segment` (all on timeline 1 here). */
  const walBelow = (list: string[], segment: string) => list.filter((k) => isWal(k) && walName(k).slice(0, 24) < segment);
  const mark = (n: number) => pg.query(`INSERT INTO marks VALUES (${n})`);

  beforeAll(async () => {
    ({ pg, bucket, env, storage } = await startArchivingCluster(store, 'delete'));
    await pg.pgbench(['-i', '-s', '1', '-q']);
    await pg.query('CREATE TABLE marks (n int)');
    ids.b1 = await push();
    await mark(1);
    await switchAndWaitArchived(pg);
    beforeB2 = await pg.query('SELECT now()');
    await pg.query('SELECT pg_sleep(1.1)');
    ids.b2 = await push();
    await mark(2);
    await switchAndWaitArchived(pg);
    await pg.query('SELECT pg_sleep(1.1)');
    between = await pg.query('SELECT now()');
    await pg.query('SELECT pg_sleep(1.1)');
    await mark(3);
    await switchAndWaitArchived(pg);
    ids.b3 = await push();
    await mark(4);
    await switchAndWaitArchived(pg);
  }, 240_000);

  afterAll(async () => {
    storage?.close();
    for (const c of restored) await c.destroy();
    await pg?.destroy();
    await cleanupAll();
  });

  it('delete: without --retain-full or --retain-days it refuses (exit 2) and names what to set', async () => {
    const r = await wv(['delete', '--confirm']);
    expect(r.code, show(r)).toBe(2);
    expect(r.stderr.trim().split('\n').at(-1)).toMatch(/UsageError: delete needs a retention rule: set retainFull \(--retain-full N.*retainDays \(--retain-days D/);
    expect(r.stdout).toBe('');
  });

  it('delete: a dry run deletes nothing and prints what would go and why', async () => {
    const before = await keys();
    const r = await wv(['delete', '--retain-full', '2']);
    expect(r.code, show(r)).toBe(0);
    console.log(`delete dry run:\n${r.stdout}`);
    expect(r.stdout).toMatch(/dry run, nothing is deleted \(add --confirm to delete\)/);
    expect(r.stdout).toMatch(new RegExp(`^delete  ${ids.b1}  full .*: older than the 2 newest full backups$`, 'm'));
    expect(r.stdout).toMatch(new RegExp(`^keep    ${ids.b2}  full .*one of the 2 newest full backups`, 'm'));
    expect(r.stdout).toMatch(new RegExp(`^keep    ${ids.b3}  full .*newest backup`, 'm'));
    expect(r.stdout).toMatch(/^delete  WAL timeline 1: 0{7}1[0-9A-F]{16}\.\.0{7}1[0-9A-F]{16} \(\d+ segments/m);
    const j = await wv(['delete', '--retain-full', '2', '--json']);
    expect(j.code, show(j)).toBe(0);
    const plan = JSON.parse(j.stdout) as { dryRun: boolean; keep: Listed[]; delete: { backups: Listed[]; walCutoff: { segment: string } } };
    expect(plan.dryRun).toBe(true);
    expect(plan.delete.backups.map((b) => b.id)).toEqual([ids.b1]);
    expect(plan.keep.map((b) => b.id)).toEqual([ids.b2, ids.b3]);
    const b2 = (await backups()).find((b) => b.id === ids.b2)!;
    expect(plan.delete.walCutoff.segment).toBe(b2.startSegment);
    expect(await keys()).toEqual(before);
  });

  it('delete: --retain-full 2 removes the oldest backup and only the WAL before the second', async () => {
    const listed = await backups();
    expect(listed.map((b) => b.id)).toEqual([ids.b1, ids.b2, ids.b3]);
    const b2Start = listed[1]!.startSegment;
    const before = await keys();
    const r = await wv(['delete', '--retain-full', '2', '--confirm']);
    expect(r.code, show(r)).toBe(0);
    console.log(`delete --confirm:\n${r.stdout}`);
    expect(r.stdout).toMatch(/^deleted 1 backup, \d+ WAL files, /m);
    const after = new Set(await keys());
    const gone = before.filter((k) => !after.has(k)).sort();
    const expected = [...before.filter((k) => k.startsWith(`pg/backups/${ids.b1}/`)), ...walBelow(before, b2Start)].sort();
    expect(walBelow(before, b2Start).length).toBeGreaterThan(0);
    expect(gone).toEqual(expected);
    expect((await backups()).map((b) => b.id)).toEqual([ids.b2, ids.b3]);
  });

  it('delete: PITR to a time inside the kept window is still exact', async () => {
    const dir = join(await tempDir('wv-del-restore', { forPostgres: true }), 'data');
    const r = await runWalvault(['backup-fetch', 'LATEST', dir, '--owner', 'postgres', '--jobs', '2', '--target-time', between, '--target-action', 'promote'], {
      env,
      wrapper: true,
      timeoutMs: 120_000,
    });
    expect(r.code, show(r)).toBe(0);
    expect(r.stderr).toContain(ids.b2);
    const c = await startRestoredCluster(dir, restored);
    expect(await c.query('SELECT string_agg(n::text, \',\' ORDER BY n) FROM marks')).toBe('1,2');
    await c.stop('immediate');
  }, 180_000);

  it('delete: a target before the kept window is refused by backup-fetch', async () => {
    const dir = join(await tempDir('wv-del-refused', { forPostgres: true }), 'data');
    const r = await runWalvault(['backup-fetch', 'LATEST', dir, '--owner', 'postgres', '--target-time', beforeB2], { env, wrapper: true });
    expect(r.code, show(r)).toBe(14);
    expect(r.stderr.trim().split('\n').at(-1)).toMatch(new RegExp(`is before the end of the oldest backup ${ids.b2}`));
  });

  it('delete: --retain-full 1 keeps a full backup and the incremental built on it whole', async () => {
    ids.i4 = await push('--incremental');
    await mark(5);
    await switchAndWaitArchived(pg);
    const r = await wv(['delete', '--retain-full', '1', '--confirm', '--json']);
    expect(r.code, show(r)).toBe(0);
    const out = JSON.parse(r.stdout) as { keep: Array<Listed & { reasons: string[] }>; result: { backups: string[]; complete: boolean } };
    expect(out.keep.map((b) => [b.id, b.type])).toEqual([
      [ids.b3, 'full'],
      [ids.i4, 'incremental'],
    ]);
    expect(out.result).toMatchObject({ backups: [ids.b2], complete: true });
    const listed = await backups();
    expect(listed.map((b) => b.id)).toEqual([ids.b3, ids.i4]);
    const remaining = await keys();
    expect(remaining.some((k) => k.startsWith(`pg/backups/${ids.b2}/`))).toBe(false);
    expect(walBelow(remaining, listed[0]!.startSegment)).toEqual([]);
    expect(remaining.filter((k) => k.startsWith(`pg/backups/${ids.i4}/`)).length).toBeGreaterThan(1);
  });

  it('delete: a delete killed after its first backup.json delete leaves a repository backup-list and backup-fetch accept, and a re-run finishes it', async () => {
    ids.b5 = await push();
    const proxy = await FaultProxy.start({ upstream: store.endpoint });
    try {
      // The first DeleteObjects reaches the store and is carried out; its answer never comes back.
      const stall = proxy.addRule({ method: 'POST', path: /[?&]delete(=|&|$)/, first: 1, action: fault.stall('after') });
      const r = await wv(['delete', '--retain-full', '1', '--confirm', '--s3-endpoint', proxy.url, '--idle-timeout', '300', '--attempt-timeout', '300'], 10_000);
      expect(r.signal, show(r)).toBe('SIGKILL');
      expect(stall.injected).toBe(1);
      expect(proxy.seen('POST', /[?&]delete(=|&|$)/)).toHaveLength(1);
    } finally {
      await proxy.close();
    }
    // The chain goes newest first: the incremental's backup.json went, nothing else.
    const left = await keys();
    expect(left).not.toContain(`pg/backups/${ids.i4}/backup.json`);
    expect(left.filter((k) => k.startsWith(`pg/backups/${ids.i4}/`)).length).toBeGreaterThan(0);
    expect(left).toContain(`pg/backups/${ids.b3}/backup.json`);
    expect((await backups()).map((b) => b.id)).toEqual([ids.b3, ids.b5]);
    const dir = join(await tempDir('wv-del-after-kill', { forPostgres: true }), 'data');
    const f = await runWalvault(['backup-fetch', ids.b3, dir, '--owner', 'postgres', '--jobs', '2', '--target-immediate'], { env, wrapper: true, timeoutMs: 120_000 });
    expect(f.code, show(f)).toBe(0);
    // verify accepts it: the half-deleted incremental is an incomplete backup (a note), nothing is missing.
    const checked = await wv(['verify']);
    expect(checked.code, show(checked)).toBe(0);
    expect(checked.stdout).toMatch(new RegExp(`${ids.i4}.*no backup.json`));

    // The half-deleted incremental has no backup.json: a left-over once older than backupStaleUploadAge.
    const again = await wv(['delete', '--retain-full', '1', '--confirm', '--backup-stale-upload-age', '1']);
    expect(again.code, show(again)).toBe(0);
    expect(again.stdout).toMatch(new RegExp(`^delete  incomplete backup ${ids.i4}: no backup.json`, 'm'));
    const listed = await backups();
    expect(listed.map((b) => b.id)).toEqual([ids.b5]);
    const done = await keys();
    expect(done.filter((k) => k.startsWith('pg/backups/') && !k.startsWith(`pg/backups/${ids.b5}/`))).toEqual([]);
    expect(walBelow(done, listed[0]!.startSegment)).toEqual([]);
    expect(done.filter((k) => isWal(k)).length).toBeGreaterThan(0);
    const after = await wv(['verify']);
    expect(after.code, show(after)).toBe(0);
  }, 180_000);

  it('delete: an incremental backup-push whose reference is deleted while it runs fails and writes no backup.json', async () => {
    const proxy = await FaultProxy.start({ upstream: store.endpoint });
    try {
      // The incremental's first finishing step waits 4 s at the proxy; meanwhile its reference goes
      // the way walvault delete removes a backup: backup.json first.
      const held = proxy.addRule({ method: 'PUT', path: /\/backups\/[^/]+\/backup_manifest(\?|$)/, first: 1, action: fault.delay(4000) });
      const { WALVAULT_SPOOL: _rootSpool, ...common } = env;
      const running = runWalvault(
        ['backup-push', '--method', 'files', '--jobs', '2', '--incremental', '--s3-endpoint', proxy.url, '--idle-timeout', '300', '--attempt-timeout', '300'],
        { env: { ...common, ...pg.connectionEnv() }, asPostgres: true, timeoutMs: 120_000 },
      );
      for (const until = Date.now() + 60_000; held.matched === 0 && Date.now() < until; ) await new Promise((r) => setTimeout(r, 20));
      expect(held.matched).toBe(1);
      await storage.delete([`backups/${ids.b5}/backup.json`]);
      const r = await running;
      expect(r.code, show(r)).toBe(14);
      expect(r.stderr.trim().split('\n').at(-1)).toMatch(
        new RegExp(`BackupError: backup \\S+ failed: its reference was deleted while it ran \\(walvault delete\\?\\): .*/backups/${ids.b5}/backup\\.json is gone`),
      );
      expect(r.stdout).toBe('');
      expect((await keys()).filter((k) => k.endsWith('/backup.json'))).toEqual([]);
    } finally {
      await proxy.close();
    }
  }, 180_000);
});

describe.each(rgw)('delete storage calls on $name', (store: TestStore) => {
  const opened: Storage[] = [];
  const proxies: FaultProxy[] = [];
  const open = (bucket: string, endpoint = store.endpoint) => {
    const s = createS3Storage(s3OptionsFor(store, bucket, { endpoint }));
    opened.push(s);
    return s;
  };
  const put = (s: Storage, key: string) => s.put(key, Buffer.from(key), {});

  afterAll(async () => {
    for (const s of opened) s.close();
    for (const p of proxies) await p.close();
  });

  it('delete: a store answering NotImplemented to DeleteObjects gets one DeleteObject per key, and each refused key is named', async () => {
    const bucket = await createTestBucket(store, 'del-fallback');
    const proxy = await FaultProxy.start({ upstream: store.endpoint });
    proxies.push(proxy);
    proxy.addRule({ method: 'POST', path: /[?&]delete(=|&|$)/, action: fault.status(501) });
    proxy.addRule({ method: 'DELETE', path: /\/k\/3(\?|$)/, action: fault.accessDenied() });
    const s = open(bucket, proxy.url);
    const keys = ['k/1', 'k/2', 'k/3', 'k/4'];
    for (const k of keys) await put(s, k);
    const failures = await s.deleteEach([...keys, 'k/never-existed']);
    expect(failures.map((f) => [f.key, f.error.code])).toEqual([['k/3', 'AccessDenied']]);
    expect(failures[0]!.error.message).toMatch(/S3 DeleteObject s3:\/\/.*\/repo\/main\/k\/3 failed: HTTP 403 AccessDenied/);
    expect(proxy.seen('POST', /[?&]delete(=|&|$)/)).toHaveLength(1);
    expect(proxy.seen('DELETE', /\/k\//)).toHaveLength(5);
    expect((await listKeys(store, bucket, 'repo/main/')).sort()).toEqual(['repo/main/k/3']);
    // The old interface still throws the first refusal.
    await expect(s.delete(['k/3'])).rejects.toThrow(/AccessDenied/);
  });

  it('delete: per-key DeleteObjects errors are reported key by key', async () => {
    const bucket = await createTestBucket(store, 'del-perkey');
    const s = open(bucket);
    await put(s, 'a/1');
    expect(await s.deleteEach(['a/1', 'a/missing'])).toEqual([]);
    expect(await listKeys(store, bucket, 'repo/main/')).toEqual([]);
  });

  it('delete: S3 Object Lock is seen on the bucket and on each locked object', async () => {
    const plain = open(await createTestBucket(store, 'del-nolock'));
    expect(await plain.objectLockEnabled()).toBe(false);
    const bucket = `wv-del-lock-${Date.now().toString(36)}`;
    const client = s3ClientFor(store);
    await client.send(new CreateBucketCommand({ Bucket: bucket, ObjectLockEnabledForBucket: true }));
    const s = open(bucket);
    expect(await s.objectLockEnabled()).toBe(true);
    const until = new Date(Date.now() + 86_400_000);
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: 'repo/main/locked', Body: Buffer.from('x'), ObjectLockMode: 'GOVERNANCE', ObjectLockRetainUntilDate: until }));
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: 'repo/main/held', Body: Buffer.from('x'), ObjectLockLegalHoldStatus: 'ON' }));
    await put(s, 'free');
    expect(await s.objectLock('locked')).toMatch(/^GOVERNANCE until \d{4}-/);
    expect(await s.objectLock('held')).toBe('legal hold');
    expect(await s.objectLock('free')).toBeNull();
    expect(await s.objectLock('never-existed')).toBeNull();
  });
});

describe.each(rgw)('delete under S3 Object Lock on $name', (store: TestStore) => {
  const MiB = 1024 * 1024;
  const seg = (n: number) => `00000001000000000000${n.toString(16).toUpperCase().padStart(4, '0')}`;
  let storage: Storage | undefined;
  afterAll(() => storage?.close());

  /** A backup.json that passes validation (only its listing and description matter to delete). */
  function info(start: number, minutesAgo: number): BackupInfo {
    const t = new Date(Date.now() - minutesAgo * 60_000);
    const id = makeBackupId(seg(start), t);
    return {
      format: 2, method: 'files', type: 'full', id, label: id, startTime: t.toISOString(), stopTime: new Date(t.getTime() + 1000).toISOString(),
      startLsn: `0/${(start * MiB).toString(16).toUpperCase()}`, stopLsn: `0/${((start + 1) * MiB).toString(16).toUpperCase()}`,
      checkpointLsn: `0/${(start * MiB).toString(16).toUpperCase()}`, timeline: 1, stopTimeline: 1, startSegment: seg(start), stopSegment: seg(start + 1),
      walSegmentSize: MiB, sizeBytes: 1, sha256: '0'.repeat(64), storedBytes: 1, codec: 'none', fileCount: 1, filesBytes: 1, manifestSha256: '',
      pgVersion: 15, systemIdentifier: '1', backupFrom: 'primary', serverStartTime: 'x', walvaultVersion: 'test',
    } as BackupInfo;
  }

  it('delete: a backup with a locked object is kept whole and WAL stays from the first locked segment, nothing half-done', async () => {
    const bucket = `wv-del-lockrun-${Date.now().toString(36)}`;
    const client = s3ClientFor(store);
    await client.send(new CreateBucketCommand({ Bucket: bucket, ObjectLockEnabledForBucket: true }));
    storage = createS3Storage(s3OptionsFor(store, bucket));
    const s = storage;
    const [b1, b2, b3] = [info(5, 30), info(10, 20), info(20, 10)];
    for (const b of [b1!, b2!, b3!]) {
      await s.put(`backups/${b.id}/data.0`, Buffer.from('data'), {});
      const { body, meta } = sentinelBody(b);
      await s.put(`backups/${b.id}/backup.json`, body, meta);
    }
    for (let n = 1; n <= 25; n++) await s.put(`wal/${seg(n).slice(0, 16)}/${seg(n)}`, Buffer.from('wal'), {});
    const until = new Date(Date.now() + 86_400_000);
    const lock = (key: string) =>
      client.send(new PutObjectCommand({ Bucket: bucket, Key: `repo/main/${key}`, Body: Buffer.from('locked'), ObjectLockMode: 'GOVERNANCE', ObjectLockRetainUntilDate: until }));
    await lock(`backups/${b2!.id}/data.0`);
    await lock(`wal/${seg(3).slice(0, 16)}/${seg(3)}`);

    const config = loadConfig({}, { ...envFor(store, bucket, 'repo/main'), WALVAULT_SPOOL: join(await tempDir('wv-del-lock'), 'spool') }).config;
    const out = await runDelete(s, config, { retainFull: 1, now: new Date(), staleUploadAge: 86_400 }, true);
    expect(out.failures).toEqual([]);
    expect(out.plan.locked).toEqual([{ id: b2!.id, reason: expect.stringMatching(new RegExp(`^backups/${b2!.id}/data\\.0: GOVERNANCE until `)) }]);
    expect(out.plan.keep.map((k) => k.backup.id)).toEqual([b2!.id, b3!.id]);
    expect(out.deleted.backups).toEqual([b1!.id]);
    expect(out.plan.walCutoff).toEqual({ segment: seg(3), why: 'the first WAL segment under Object Lock' });
    const left = await listKeys(store, bucket, 'repo/main/');
    expect(left.filter((k) => k.includes(b1!.id))).toEqual([]);
    expect(left.filter((k) => k.includes(b2!.id)).sort()).toEqual([`repo/main/backups/${b2!.id}/backup.json`, `repo/main/backups/${b2!.id}/data.0`]);
    expect(left.filter((k) => k.startsWith('repo/main/wal/')).map((k) => k.slice(-24))).toEqual(Array.from({ length: 23 }, (_, i) => seg(i + 3)));
  });
});

describe.each(testStores())('delete storage calls on every store: $name', (store: TestStore) => {
  it('delete: a plain bucket has no Object Lock, and deleteEach removes its keys', async () => {
    const bucket = await createTestBucket(store, 'del-plain');
    const s = createS3Storage(s3OptionsFor(store, bucket));
    try {
      expect(await s.objectLockEnabled()).toBe(false);
      for (const k of ['p/1', 'p/2']) await s.put(k, Buffer.from(k), {});
      expect(await s.deleteEach(['p/1', 'p/2', 'p/missing'])).toEqual([]);
      expect(await listKeys(store, bucket, 'repo/main/')).toEqual([]);
    } finally {
      s.close();
    }
  });
});
