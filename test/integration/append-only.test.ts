// Append-only push credentials (issue 13, part 3) on radosgw and PostgreSQL 15: a second user,
// `pusher`, gets get/put/list/abort-multipart on the bucket by the owner's bucket policy and an
// explicit Deny of DeleteObject (test/support/append-only.ts, the README's radosgw example). With
// only those rights a cluster archives its WAL, backup-push (files and stream) completes, and a
// restore reaches a row written after the last backup; what the push side would delete stays, with
// one warning line; check says delete is refused without failing; `walvault delete` fails with
// AccessDenied (exit 8) before removing anything, and the same delete with the owner's credentials works.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { CreateMultipartUploadCommand } from '@aws-sdk/client-s3';
import { backupKey, BACKUPS_PREFIX } from '../../src/backup/catalog.js';
import { cleanStaleUploads, removeIncompleteBackup } from '../../src/backup/push-cleanup.js';
import { loadConfig } from '../../src/common/config.js';
import { openStorage } from '../../src/storage/open.js';
import type { Storage } from '../../src/storage/types.js';
import { asPusher, createAppendOnlyBucket } from '../support/append-only.js';
import { startArchivingCluster, switchAndWaitArchived } from '../support/archiving-cluster.js';
import { PgCluster, startRestoredCluster } from '../support/pg.js';
import { deleteRaw, envFor, headRaw, listKeys, listMultipartUploads, putRaw, s3ClientFor, testStores, writeRepoConfig, type TestStore } from '../support/stores.js';
import { cleanupAll, runWalvault, tempDir, type WalvaultResult } from '../support/walvault.js';

const rgw = testStores().filter((s) => s.name === 'rgw');
const ID = 'base_000000010000000000000002_20261130T060000Z';

describe.each(rgw)('append-only push credentials on $name', (store: TestStore) => {
  const pusher = asPusher(store);
  let pg: PgCluster;
  let bucket: string;
  /** The pusher's configuration (what the database server holds) and a root spool. */
  let env: Record<string, string>;
  /** The same repository with the owner's credentials (the pruner). */
  let ownerEnv: Record<string, string>;
  let storage: Storage;
  const restored: PgCluster[] = [];
  const backups: string[] = [];

  const show = (r: WalvaultResult) => `exit ${r.code} ${r.signal ?? ''}\n${r.stderr}${r.stdout}`;
  const wv = (args: string[], e = env, timeoutMs = 120_000) => runWalvault(args, { env: e, timeoutMs });
  /** Every key of the bucket, as the owner lists it. */
  const everything = async () => (await listKeys(store, bucket)).sort();
  const lines = (text: string, level: string) => text.split('\n').filter((l) => l.includes(` ${level}: `));

  beforeAll(async () => {
    bucket = await createAppendOnlyBucket(store, 'append-only');
    ({ pg, env, storage } = await startArchivingCluster(pusher, 'append-only', { bucket }));
    const ownerConfig = await writeRepoConfig(store, bucket, 'pg', await tempDir('wv-ao-owner', { forPostgres: true }), { s3PartSize: '5MiB' });
    ownerEnv = { ...env, WALVAULT_CONFIG: ownerConfig };
    await pg.query('CREATE TABLE marks (n int)');
    await pg.query('INSERT INTO marks SELECT generate_series(1, 1000)');
  }, 120_000);

  afterAll(async () => {
    storage?.close();
    for (const c of restored) await c.destroy();
    await pg?.destroy();
    await cleanupAll();
  });

  it('the policy: the pusher may put, get and list, and a DeleteObject answers 403 AccessDenied', async () => {
    await putRaw(pusher, bucket, 'policy-probe', Buffer.from('x'));
    expect((await headRaw(pusher, bucket, 'policy-probe'))?.size).toBe(1);
    const refused = await deleteRaw(pusher, bucket, 'policy-probe').catch((e: unknown) => e as { name?: string; $metadata?: { httpStatusCode?: number } });
    expect(refused).toMatchObject({ name: 'AccessDenied', $metadata: { httpStatusCode: 403 } });
    expect(await headRaw(store, bucket, 'policy-probe')).not.toBeNull();
    // The owner reads what the pusher wrote (the policy's Pruner statement) and may delete it.
    await deleteRaw(store, bucket, 'policy-probe');
    expect(await headRaw(store, bucket, 'policy-probe')).toBeNull();
  });

  it('archive_command: the cluster archives its WAL with the pusher\'s credentials; the If-None-Match probe left behind costs one warning line', async () => {
    await switchAndWaitArchived(pg);
    await pg.query('INSERT INTO marks SELECT generate_series(1001, 2000)');
    await switchAndWaitArchived(pg);
    expect(await pg.query('SELECT failed_count FROM pg_stat_archiver')).toBe('0');
    const wal = (await everything()).filter((k) => /^pg\/wal\/[0-9A-F]{16}\/[0-9A-F]{24}$/.test(k));
    expect(wal.length).toBeGreaterThanOrEqual(2);
    const log = await pg.readLog();
    const warnings = lines(log, 'WARN');
    expect(warnings, log).toHaveLength(1);
    expect(warnings[0]).toMatch(/S3 DeleteObject s3:\/\/\S+\/pg\/state\/probe\/if-none-match-\S+ failed: HTTP 403 AccessDenied: the probe object stays \(safe to delete\)/);
    expect(lines(log, 'ERROR'), log).toEqual([]);
  });

  for (const method of ['files', 'stream'] as const) {
    it(`backup-push --method ${method} completes with the pusher's credentials`, async () => {
      const r = await runWalvault(['backup-push', '--method', method], { env: { ...env, ...pg.connectionEnv() }, timeoutMs: 150_000 });
      expect(r.code, show(r)).toBe(0);
      const id = r.stdout.trim();
      expect(id).toMatch(/^base_[0-9A-F]{24}_\d{8}T\d{6}Z$/);
      backups.push(id);
      expect(lines(r.stderr, 'ERROR'), show(r)).toEqual([]);
      // The only warning a push may print here: the probe object of this (root) spool's first write.
      for (const w of lines(r.stderr, 'WARN')) expect(w).toMatch(/the probe object stays/);
      expect(await everything()).toContain(`pg/${backupKey(id, 'backup.json')}`);
      await pg.query(`INSERT INTO marks VALUES (${method === 'files' ? -1 : -2})`);
    }, 180_000);
  }

  it('a failed backup-push cannot remove its incomplete backup: the objects stay, with one warning naming delete; stale uploads are still aborted', async () => {
    const { config } = loadConfig({}, env);
    const keys = [backupKey(ID, 'data/000000'), backupKey(ID, 'blocks/000000')];
    for (const k of keys) await storage.put(k, Buffer.from(k), { backup: ID });
    const written: string[] = [];
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => (written.push(String(chunk)), true));
    try {
      await removeIncompleteBackup(storage, config, ID, 10);
    } finally {
      spy.mockRestore();
    }
    expect(written).toHaveLength(1);
    expect(written[0]).toMatch(
      new RegExp(`WARN: could not remove the incomplete backup s3://${bucket}/pg/${BACKUPS_PREFIX}${ID}/ \\(it has no backup.json, so it is ignored; walvault delete removes it once it is older than backupStaleUploadAge \\(86400s\\)\\): S3 DeleteObjects .*HTTP 403 AccessDenied \\(these credentials may not delete`),
    );
    expect((await everything()).filter((k) => k.startsWith(`pg/${BACKUPS_PREFIX}${ID}/`))).toEqual(keys.map((k) => `pg/${k}`).sort());

    // AbortMultipartUpload is its own right, which the pusher has: a killed push's upload goes.
    const up = await s3ClientFor(pusher).send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: `pg/${backupKey(ID, 'data/000001')}` }));
    await new Promise((r) => setTimeout(r, 1100));
    const aborted: string[] = [];
    const spy2 = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => (aborted.push(String(chunk)), true));
    try {
      await cleanStaleUploads(storage, { ...config, backupStaleUploadAge: 1 });
    } finally {
      spy2.mockRestore();
    }
    expect(aborted.join('')).toMatch(/INFO: aborted 1 incomplete backup upload older than 1s/);
    expect((await listMultipartUploads(store, bucket)).map((u) => u.uploadId)).not.toContain(up.UploadId);
  });

  it('without s3:ListBucketMultipartUploads, backup-push\'s clean-up of stale uploads is one warning naming the rights, not a failure', async () => {
    const narrow = await createAppendOnlyBucket(store, 'append-only-nompu', { without: ['s3:ListBucketMultipartUploads'] });
    const { config } = loadConfig({}, { ...envFor(pusher, narrow, 'pg'), WALVAULT_SPOOL: join(await tempDir('wv-ao-narrow'), 'spool'), WALVAULT_RETRIES: '0' });
    const narrowStorage = await openStorage(config);
    const written: string[] = [];
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => (written.push(String(chunk)), true));
    try {
      await cleanStaleUploads(narrowStorage, config);
    } finally {
      spy.mockRestore();
      narrowStorage.close();
    }
    expect(written).toHaveLength(1);
    expect(written[0]).toMatch(/WARN: cannot clean up incomplete backup uploads \(these credentials may not list or abort multipart uploads: s3:ListBucketMultipartUploads, s3:AbortMultipartUpload; walvault delete aborts them\): S3 ListMultipartUploads .*HTTP 403 AccessDenied/);
  });

  it('restore with the pusher\'s credentials: backup-fetch and recovery through wal-fetch reach the row written after the last backup', async () => {
    await pg.query('INSERT INTO marks VALUES (-3)');
    await switchAndWaitArchived(pg);
    const dir = join(await tempDir('wv-ao-restore', { forPostgres: true }), 'data');
    const r = await runWalvault(['backup-fetch', 'LATEST', dir, '--owner', 'postgres', '--jobs', '2'], { env, wrapper: true, timeoutMs: 120_000 });
    expect(r.code, show(r)).toBe(0);
    expect(r.stderr).toContain(backups[1]);
    const c = await startRestoredCluster(dir, restored);
    expect(await c.query('SELECT string_agg(n::text, \',\' ORDER BY n) FROM marks WHERE n < 0')).toBe('-3,-2,-1');
    expect(await c.query('SELECT count(*) FROM marks WHERE n > 0')).toBe('2000');
    expect(lines(await c.readLog(), 'ERROR')).toEqual([]);
    await c.stop('immediate');
  }, 180_000);

  it('check with the pusher\'s credentials: the write-read-delete line says delete is refused and the check passes; with a retention rule it fails', async () => {
    const r = await wv(['check']);
    expect(r.code, show(r)).toBe(0);
    expect(r.stdout).toMatch(/^ok   write-read-delete: put and get work \(\d+ bytes and metadata equal\), delete is refused \(S3 DeleteObjects .*HTTP 403 AccessDenied \(these credentials may not delete: .*\)\); the probe object state\/check\/rw-\S+ stays: append-only credentials, enough for wal-push, backup-push, wal-fetch and backup-fetch; only walvault delete needs s3:DeleteObject$/m);
    const pruner = await wv(['check', '--retain-full', '1']);
    expect(pruner.code, show(pruner)).toBe(15);
    expect(pruner.stdout).toMatch(/^FAIL write-read-delete: put and get work .*delete is refused .* — this configuration sets a retention rule \(retainFull\/retainDays\), so it is for walvault delete, which needs s3:DeleteObject/m);
    expect(pruner.stderr.trim().split('\n').at(-1)).toMatch(/CheckFailed: 1 of \d+ checks failed: write-read-delete$/);
    // The owner's credentials delete: the probe passes as before, even with the rule.
    const owner = await wv(['check', '--retain-full', '1'], ownerEnv);
    expect(owner.code, show(owner)).toBe(0);
    expect(owner.stdout).toMatch(/^ok   write-read-delete: put, get .* delete and gone/m);
  });

  it('delete with the pusher\'s credentials fails with AccessDenied (exit 8) and removes nothing', async () => {
    const before = await everything();
    const dry = await wv(['delete', '--retain-full', '1']);
    expect(dry.code, show(dry)).toBe(0);
    expect(dry.stdout).toMatch(new RegExp(`^delete  ${backups[0]}  full `, 'm'));
    const r = await wv(['delete', '--retain-full', '1', '--confirm']);
    expect(r.code, show(r)).toBe(8);
    // One line: the first refused call (backup.json of the oldest backup, which goes first) ends the run.
    expect(lines(r.stderr, 'ERROR'), show(r)).toEqual([
      expect.stringMatching(new RegExp(`ERROR: AccessDenied: S3 DeleteObjects s3://${bucket}/pg/backups/${backups[0]}/backup\\.json failed: HTTP 403 AccessDenied \\(these credentials may not delete: walvault delete needs s3:DeleteObject on the prefix`)),
    ]);
    expect(await everything()).toEqual(before);
  });

  it('the same delete with the owner\'s credentials removes the oldest backup and the WAL before the newest', async () => {
    const before = await everything();
    const r = await wv(['delete', '--retain-full', '1', '--confirm'], ownerEnv);
    expect(r.code, show(r)).toBe(0);
    expect(r.stdout).toMatch(/^deleted 1 backup, \d+ WAL files, /m);
    const after = new Set(await everything());
    const gone = before.filter((k) => !after.has(k));
    expect(gone).toContain(`pg/${backupKey(backups[0]!, 'backup.json')}`);
    expect(gone.every((k) => k.startsWith(`pg/${BACKUPS_PREFIX}${backups[0]}/`) || k.startsWith('pg/wal/')), gone.join('\n')).toBe(true);
    const listed = await wv(['backup-list', '--json']);
    expect((JSON.parse(listed.stdout) as Array<{ id: string }>).map((b) => b.id)).toEqual([backups[1]]);
  });
});
