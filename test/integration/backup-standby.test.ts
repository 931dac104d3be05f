// A backup taken from a streaming standby (issue 10 item 5): a PostgreSQL 15 primary archiving
// through walvault to radosgw (archive_mode = on, archive_timeout = 0: an idle primary never
// finishes a segment by itself), a standby made with pg_basebackup -R, and backup-push --method files
// against the standby on its own data directory. The standby cannot switch WAL and writes no backup
// history file: walvault asks the primary (through the standby's primary_conninfo) to finish the
// segment that ends the backup, then waits for it in the archive. The backup restores with the rows
// the standby had replayed.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKUP_ID_GRAMMAR } from '../../src/backup/backup-info.js';
import { PG_BIN_DIR, PgCluster, runAsPostgres, startRestoredCluster } from '../support/pg.js';
import { createTestBucket, getRaw, testStores, writeRepoConfig, type TestStore } from '../support/stores.js';
import { cleanupAll, runWalvault, tempDir, walvaultBin, type WalvaultResult } from '../support/walvault.js';

const rgw = testStores().filter((s) => s.name === 'rgw');
const show = (r: WalvaultResult) => `exit ${r.code}\n${r.stderr}${r.stdout}`;

describe.each(rgw)('backup-push --method files from a streaming standby on $name', (store: TestStore) => {
  let primary: PgCluster;
  let standby: PgCluster;
  let bucket: string;
  let env: Record<string, string>;
  const restored: PgCluster[] = [];

  beforeAll(async () => {
    bucket = await createTestBucket(store, 'standby');
    const home = await tempDir('wv-sb', { forPostgres: true });
    const configFile = await writeRepoConfig(store, bucket, 'pg', home, { s3PartSize: '5MiB' });
    const spool = join(await tempDir('wv-sb-root'), 'spool');
    env = { WALVAULT_CONFIG: configFile, WALVAULT_SPOOL: spool, AWS_EC2_METADATA_DISABLED: 'true', WALVAULT_BACKUP_WAIT_TIMEOUT: '60' };
    const bin = await walvaultBin();
    primary = await PgCluster.create({
      walSegSizeMb: 1,
      conf: { archive_mode: 'on', archive_command: `${bin} --config ${configFile} wal-push %p %f`, archive_timeout: 0 },
    });
    await primary.start({ env: { AWS_EC2_METADATA_DISABLED: 'true' } });
    await primary.query('CREATE TABLE t AS SELECT generate_series(1, 1000) AS n');
    const last = await primary.query('SELECT pg_walfile_name(pg_switch_wal())');
    await primary.waitFor("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver", (out) => out >= last, 60_000);

    const dir = join(await tempDir('wv-sb-standby', { forPostgres: true }), 'data');
    const bb = await runAsPostgres(join(PG_BIN_DIR, 'pg_basebackup'), ['-D', dir, '-R', '-X', 'stream', '-c', 'fast', '-h', primary.host, '-p', String(primary.port), '-U', 'postgres'], { timeoutMs: 120_000 });
    expect(bb.code, bb.stderr).toBe(0);
    standby = await PgCluster.fromDataDir(dir);
    await standby.start();
    await standby.waitFor('SELECT pg_is_in_recovery()', (out) => out === 't');
    await primary.query('INSERT INTO t SELECT generate_series(1001, 1500)');
    await standby.waitFor('SELECT count(*) FROM t', (out) => out === '1500', 60_000);
  }, 240_000);

  afterAll(async () => {
    for (const c of restored) await c.destroy();
    await standby?.destroy();
    await primary?.destroy();
    await cleanupAll();
  });

  it('backs up the standby (BACKUP FROM: standby), has the primary finish the last segment, and the backup restores with the rows the standby had', async () => {
    const started = Date.now();
    const r = await runWalvault(['backup-push', '--method', 'files', '--jobs', '2'], { env: { ...env, ...standby.connectionEnv() }, timeoutMs: 240_000 });
    expect(r.code, show(r)).toBe(0);
    const id = r.stdout.trim();
    expect(id).toMatch(BACKUP_ID_GRAMMAR);
    // An idle primary with archive_timeout = 0: without the switch the backup would wait out backupWaitTimeout (60 s) and fail.
    expect(r.stderr).toMatch(/asked the primary at 127\.0\.0\.1:\d+ .* to switch WAL \(pg_switch_wal\) so that it archives [0-9A-F]{24}, which ends this standby backup/);
    expect(r.stderr).toMatch(/WAL segment [0-9A-F]{24} that ends the backup is archived/);
    expect(Date.now() - started).toBeLessThan(55_000);
    const sentinel = JSON.parse((await getRaw(store, bucket, `pg/backups/${id}/backup.json`))!.body.toString('utf8')) as Record<string, unknown>;
    expect(sentinel).toMatchObject({ backupFrom: 'standby', format: 2, method: 'files' });

    // Rows written on the primary after the backup are not in a restore that stops at consistency.
    await primary.query('INSERT INTO t SELECT generate_series(1501, 1600)');
    const target = join(await tempDir('wv-sb-restore', { forPostgres: true }), 'data');
    const f = await runWalvault(['backup-fetch', id, target, '--owner', 'postgres', '--target-immediate', '--target-action', 'promote'], { env, wrapper: true, timeoutMs: 240_000 });
    expect(f.code, show(f)).toBe(0);
    expect(f.stderr).toMatch(/pg_verifybackup: every file matches backup_manifest/);
    const c = await startRestoredCluster(target, restored);
    expect(await c.query('SELECT count(*), sum(n) FROM t')).toBe('1500|1125750');
    expect(await c.query('SELECT system_identifier FROM pg_control_system()')).toBe(await primary.query('SELECT system_identifier FROM pg_control_system()'));
  }, 300_000);
});
