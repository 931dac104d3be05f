import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PgCluster } from '../support/pg.js';
import { CreateMultipartUploadCommand } from '@aws-sdk/client-s3';
import { createTestBucket, deleteRaw, getRaw, listKeys, listMultipartUploads, putRaw, s3ClientFor, testStores, writeRepoConfig, type TestStore } from '../support/stores.js';
import { cleanupAll, tempDir, walvaultBin, type WalvaultResult } from '../support/walvault.js';

// Issue 3 end to end on one PostgreSQL 15 cluster archiving through walvault to radosgw: a base
// backup, three batches of rows with pauses between them, a dropped table, and restores to a point
// between batch 2 and batch 3 by time, LSN, xid and restore point name; then backup selection with
// two backups, a target before the oldest backup, WAL missing before and after restore, and a
// backup-push killed with SIGKILL. One cluster serves every case to keep the run short.

/**
 * Runs the built walvault as root through the world-readable wrapper (so the restore_command that
 * backup-fetch writes, process.execPath + the bundle, is runnable by postgres), with a clean env.
 */
function wv(args: string[], env: Record<string, string>, opts: { timeoutMs?: number; onSpawn?: (pid: number) => void } = {}): Promise<WalvaultResult> {
  return walvaultBin().then(
    (bin) =>
      new Promise((resolve) => {
        const started = performance.now();
        const child = spawn(bin, args, { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
        opts.onSpawn?.(child.pid!);
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
        child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
        child.on('close', (code, signal) => {
          clearTimeout(timer);
          resolve({ code, signal, stdout, stderr, ms: performance.now() - started });
        });
      }),
  );
}

const rgw = testStores().filter((s) => s.name === 'rgw');

describe.each(rgw)('base backups and point-in-time recovery on $name', (store: TestStore) => {
  let pg: PgCluster;
  let bucket: string;
  let configFile: string;
  let env: Record<string, string>;
  const restored: PgCluster[] = [];
  // What the scenario recorded.
  let beforeFirstBackup: string;
  let firstBackupId: string;
  let secondBackupId: string;
  let t2: string; // now() between batch 2 and batch 3
  let lsn2: string;
  let xid2: string;
  let batch1Segment: string;
  let firstStopSegment: string;

  const push = (extra: Record<string, string> = {}, args: string[] = [], onSpawn?: (pid: number) => void) =>
    wv(['backup-push', ...args], { ...env, ...pg.connectionEnv(), ...extra }, { timeoutMs: 150_000, ...(onSpawn ? { onSpawn } : {}) });
  const fetch = (args: string[]) => wv(['backup-fetch', ...args, '--owner', 'postgres'], env);
  const list = async () => {
    const r = await wv(['backup-list', '--json'], env);
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as Array<Record<string, unknown>>;
  };
  const segKey = (name: string) => `pg/wal/${name.slice(0, 16)}/${name}`;

  /** Waits until the archiver has pushed everything up to the current segment (after a switch). */
  async function switchAndWaitArchived(): Promise<string> {
    const last = await pg.query('SELECT pg_walfile_name(pg_switch_wal())');
    try {
      await pg.waitFor("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver", (out) => out >= last, 60_000);
    } catch (e) {
      throw new Error(`${(e as Error).message}\n--- server log:\n${(await pg.readLog()).split('\n').slice(-30).join('\n')}`);
    }
    return last;
  }

  async function newDataDir(): Promise<string> {
    return join(await tempDir('wv-restore', { forPostgres: true }), 'data');
  }

  /** Starts a restored data directory (archiving off: restores must not fork timelines into the shared archive). */
  async function startRestored(dataDir: string): Promise<PgCluster> {
    const c = await PgCluster.fromDataDir(dataDir);
    restored.push(c);
    await c.appendConf({ archive_mode: 'off' });
    await c.start({ env: { AWS_EC2_METADATA_DISABLED: 'true' } });
    return c;
  }

  async function batches(c: PgCluster): Promise<string> {
    await c.waitFor('SELECT pg_is_in_recovery()', (out) => out === 'f', 60_000);
    return c.query('SELECT batch, count(*) FROM items GROUP BY batch ORDER BY batch');
  }

  beforeAll(async () => {
    bucket = await createTestBucket(store, 'pitr');
    const home = await tempDir('wv-pitr', { forPostgres: true });
    configFile = await writeRepoConfig(store, bucket, 'pg', home, { s3PartSize: '5MiB' });
    // These commands run as root, which must not use postgres's spool (walvault refuses it): a spool of its own.
    const spool = join(await tempDir('wv-pitr-root'), 'spool');
    env = { WALVAULT_CONFIG: configFile, WALVAULT_SPOOL: spool, AWS_EC2_METADATA_DISABLED: 'true', WALVAULT_BACKUP_WAIT_TIMEOUT: '60' };
    const bin = await walvaultBin();
    pg = await PgCluster.create({
      walSegSizeMb: 1,
      conf: { archive_mode: 'on', archive_command: `${bin} --config ${configFile} wal-push %p %f`, archive_timeout: 0 },
    });
    await pg.start({ env: { AWS_EC2_METADATA_DISABLED: 'true' } });
    await pg.query('CREATE TABLE items (batch int, n int)');
    await switchAndWaitArchived();
  });

  afterAll(async () => {
    for (const c of restored) await c.destroy();
    await pg?.destroy();
    await cleanupAll();
  });

  it('backup-push (the files method by default here) stores a base backup and records it only once its WAL is archived', async () => {
    beforeFirstBackup = await pg.query('SELECT now()');
    await pg.query('SELECT pg_sleep(0.3)');
    const r = await push();
    expect(r.code, r.stderr).toBe(0);
    firstBackupId = r.stdout.trim();
    expect(firstBackupId).toMatch(/^base_[0-9A-F]{24}_\d{8}T\d{6}Z$/);
    expect(r.stderr).toMatch(/using --method files: the server's data directory \S+ is readable here/);
    expect(r.stderr).toMatch(/WAL segment [0-9A-F]{24} that ends the backup is archived/);

    const prefix = `pg/backups/${firstBackupId}/`;
    const keys = (await listKeys(store, bucket, prefix)).map((k) => k.slice(prefix.length));
    expect(keys.filter((k) => !k.startsWith('data/') && !k.startsWith('blocks/')).sort()).toEqual(['backup.json', 'backup_manifest', 'files.json']);
    const dataKeys = keys.filter((k) => /^data\/\d{6}$/.test(k));
    const blockKeys = keys.filter((k) => /^blocks\/\d{6}$/.test(k));
    expect(dataKeys.length).toBeGreaterThan(0);
    const sentinel = JSON.parse((await getRaw(store, bucket, `${prefix}backup.json`))!.body.toString());
    const sysid = await pg.query('SELECT system_identifier FROM pg_control_system()');
    expect(sentinel).toMatchObject({ id: firstBackupId, format: 2, method: 'files', timeline: 1, pgVersion: 15, systemIdentifier: sysid, walSegmentSize: 1024 * 1024, codec: 'zstd' });
    // The WAL that makes the backup consistent is in the archive.
    expect(await getRaw(store, bucket, segKey(sentinel.stopSegment))).not.toBeNull();
    firstStopSegment = sentinel.stopSegment;
    expect(sentinel.storedBytes).toBeLessThan(sentinel.sizeBytes);
    // storedBytes is what the store holds: the data objects and files.json, each zstd-compressed, and
    // the block maps (raw: checksums do not compress).
    let stored = 0;
    for (const k of [...dataKeys, 'files.json', ...blockKeys]) {
      const o = (await getRaw(store, bucket, `${prefix}${k}`))!;
      expect(o.metadata['walvault-codec'], k).toBe(k.startsWith('blocks/') ? 'none' : 'zstd');
      stored += o.body.length;
    }
    expect(stored).toBe(sentinel.storedBytes);

    const listed = await list();
    expect(listed.map((b) => b.id)).toEqual([firstBackupId]);
    for (const k of ['id', 'startTime', 'stopTime', 'startLsn', 'stopLsn', 'timeline', 'sizeBytes', 'storedBytes', 'pgVersion']) {
      expect(listed[0], k).toHaveProperty(k);
    }
  });

  it('commits three batches with pauses, records the points between batch 2 and 3, then drops the table', async () => {
    await pg.query('INSERT INTO items SELECT 1, g FROM generate_series(1, 100) g');
    // Batch 1 alone in its segment (after the backup's): the missing-WAL cases delete that segment.
    // The insert position, not pg_current_wal_lsn(): commits are asynchronous in test clusters.
    batch1Segment = await pg.query('SELECT pg_walfile_name(pg_current_wal_insert_lsn())');
    await switchAndWaitArchived();
    await pg.query('SELECT pg_sleep(0.5)');
    xid2 = await pg.query(
      'WITH ins AS (INSERT INTO items SELECT 2, g FROM generate_series(1, 100) g RETURNING 1) SELECT pg_current_xact_id() FROM (SELECT count(*) FROM ins) s',
    );
    await pg.query('SELECT pg_sleep(0.5)');
    t2 = await pg.query('SELECT now()');
    lsn2 = await pg.query('SELECT pg_current_wal_insert_lsn()');
    await pg.query("SELECT pg_create_restore_point('before_batch_3')");
    await pg.query('SELECT pg_sleep(0.5)');
    await pg.query('INSERT INTO items SELECT 3, g FROM generate_series(1, 100) g');
    await pg.query('SELECT pg_sleep(0.3)');
    await pg.query('DROP TABLE items');
    await switchAndWaitArchived();
    expect(xid2).toMatch(/^\d+$/);
    expect(batch1Segment > firstStopSegment, `${batch1Segment} should follow the backup's ${firstStopSegment}`).toBe(true);
  });

  it('seed scenario: backup-fetch LATEST --target-time between batch 2 and 3 --target-action promote has exactly batches 1+2', async () => {
    const dir = await newDataDir();
    const r = await fetch(['LATEST', dir, '--target-time', t2, '--target-action', 'promote']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`restoring backup ${firstBackupId}`);
    expect(r.stderr).toMatch(/pg_verifybackup: every file matches backup_manifest/);
    expect(existsSync(join(dir, 'recovery.signal'))).toBe(true);
    const auto = await readFile(join(dir, 'postgresql.auto.conf'), 'utf8');
    expect(auto).toMatch(/restore_command = '\S+\/node \S+\/walvault\.mjs --config \S+\/walvault\.json wal-fetch %f %p'/);
    expect(auto).toContain("recovery_target_action = 'promote'");
    const c = await startRestored(dir);
    expect(await batches(c)).toBe('1|100\n2|100');
    expect(await c.readLog()).toMatch(/recovery stopping before commit/);
    await c.stop('immediate');
  });

  it.each([
    ['--target-lsn', () => lsn2],
    ['--target-xid', () => xid2],
    ['--target-name', () => 'before_batch_3'],
  ])('restores exactly batches 1+2 with %s', async (flag, value) => {
    const dir = await newDataDir();
    const r = await fetch(['LATEST', dir, flag, value(), '--target-action', 'promote']);
    expect(r.code, r.stderr).toBe(0);
    const c = await startRestored(dir);
    expect(await batches(c)).toBe('1|100\n2|100');
    await c.stop('immediate');
  });

  it('a second backup (--method stream, format 2): a target between the two restores from the older one, after both from the newer', async () => {
    const r = await push({}, ['--method', 'stream']);
    expect(r.code, r.stderr).toBe(0);
    secondBackupId = r.stdout.trim();
    expect(await listKeys(store, bucket, `pg/backups/${secondBackupId}/files.json`)).toEqual([`pg/backups/${secondBackupId}/files.json`]);
    expect((await list()).map((b) => b.id)).toEqual([firstBackupId, secondBackupId]);

    // Time and xid (LSN selection is the same rule as time, unit-tested).
    for (const target of [['--target-time', t2], ['--target-xid', xid2]]) {
      const between = await fetch(['LATEST', await newDataDir(), ...target]);
      expect(between.code, between.stderr).toBe(0);
      expect(between.stderr).toContain(`restoring backup ${firstBackupId}`);
    }
    const after = await fetch(['LATEST', await newDataDir(), '--target-immediate']);
    expect(after.code, after.stderr).toBe(0);
    expect(after.stderr).toContain(`restoring backup ${secondBackupId}`);
  });

  it('refuses a target before the oldest backup, and a non-empty directory, writing nothing', async () => {
    const dir = await newDataDir();
    const r = await fetch(['LATEST', dir, '--target-time', beforeFirstBackup]);
    expect(r.code).toBe(14);
    expect(r.stderr).toMatch(/BackupError: the target \(time .*\) is before the end of the oldest backup/);
    expect(existsSync(dir)).toBe(false);

    const full = await tempDir('wv-full', { forPostgres: true });
    await writeFile(join(full, 'something'), 'x');
    const r2 = await fetch(['LATEST', full]);
    expect(r2.code).toBe(14);
    expect(r2.stderr).toMatch(/is not empty/);
  });

  it('refuses before writing anything when a WAL segment between backup and target is missing', async () => {
    const key = segKey(batch1Segment);
    const saved = (await getRaw(store, bucket, key))!;
    await deleteRaw(store, bucket, key);
    try {
      for (const target of [['--target-time', t2], ['--target-lsn', lsn2]]) {
        const dir = await newDataDir();
        const r = await fetch(['LATEST', dir, ...target]);
        expect(r.code, r.stderr).toBe(14);
        expect(r.stderr).toContain(`lacks WAL segment ${batch1Segment}`);
        expect(existsSync(dir)).toBe(false);
      }
      // An existing empty directory stays empty.
      const empty = await tempDir('wv-empty', { forPostgres: true });
      const r = await fetch([firstBackupId, empty, '--target-name', 'before_batch_3']);
      expect(r.code).toBe(14);
      expect(await readdir(empty)).toEqual([]);
    } finally {
      await putRaw(store, bucket, key, saved.body, saved.metadata);
    }
  });

  it('a segment that disappears after backup-fetch stops recovery with an error instead of promoting', async () => {
    const dir = await newDataDir();
    const r = await fetch(['LATEST', dir, '--target-time', t2, '--target-action', 'promote']);
    expect(r.code, r.stderr).toBe(0);
    const key = segKey(batch1Segment);
    const saved = (await getRaw(store, bucket, key))!;
    await deleteRaw(store, bucket, key);
    try {
      const c = await PgCluster.fromDataDir(dir);
      restored.push(c);
      await c.appendConf({ archive_mode: 'off' });
      await expect(c.start({ env: { AWS_EC2_METADATA_DISABLED: 'true' }, timeoutSec: 60 })).rejects.toThrow();
      const logText = await c.readLog();
      // wal-fetch exits 1 (not found) and PostgreSQL stops short of the target, or the gap detector
      // makes wal-fetch exit above 125: either way FATAL, never a promotion.
      expect(logText).toMatch(/FATAL: .*(recovery ended before configured recovery target was reached|could not restore file "[0-9A-F]{24}" from archive)/);
      expect(logText).not.toMatch(/archive recovery complete|selected new timeline ID/);
      expect(await c.isRunning()).toBe(false);
      expect(existsSync(join(dir, 'recovery.signal'))).toBe(true);
    } finally {
      await putRaw(store, bucket, key, saved.body, saved.metadata);
    }
  });

  it('backup-push killed with SIGKILL leaves no sentinel; the next one cleans up a multipart upload left behind', async () => {
    // A slow (rate-limited), uncompressed push, so data objects are being stored when it is killed.
    await pg.pgbench(['-i', '-s', '1', '-q']);
    let pid = 0;
    const killed = push({ WALVAULT_COMPRESSION: 'none' }, ['--max-rate', '2M'], (p) => (pid = p));
    const started = Date.now();
    let objects: string[] = [];
    while (Date.now() - started < 60_000) {
      objects = (await listKeys(store, bucket, 'pg/backups/')).filter((k) => k.includes('/data/') && !k.includes(`/${firstBackupId}/`) && !k.includes(`/${secondBackupId}/`));
      if (objects.length > 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(objects.length, 'data objects should be being stored').toBeGreaterThan(0);
    expect(pid).toBeGreaterThan(0);
    process.kill(pid, 'SIGKILL');
    const res = await killed;
    expect(res.signal).toBe('SIGKILL');
    const id = objects[0]!.split('/')[2]!;
    expect(await getRaw(store, bucket, `pg/backups/${id}/backup.json`)).toBeNull();
    expect((await list()).map((b) => b.id)).not.toContain(id);
    // Format 2 objects are multipart uploads above 1 GiB compressed only: leave one as a killed push
    // of such an object would.
    await s3ClientFor(store).send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: `pg/backups/${id}/data/999999` }));
    expect((await listMultipartUploads(store, bucket)).length).toBeGreaterThan(0);

    await new Promise((r) => setTimeout(r, 1500));
    const next = await push({ WALVAULT_BACKUP_STALE_UPLOAD_AGE: '1' });
    expect(next.code, next.stderr).toBe(0);
    expect(next.stderr).toMatch(/aborted \d+ incomplete backup upload/);
    expect(await listMultipartUploads(store, bucket)).toEqual([]);
    const ids = (await list()).map((b) => b.id);
    expect(ids).toEqual([firstBackupId, secondBackupId, next.stdout.trim()]);
  });
});
