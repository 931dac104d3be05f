import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PgCluster } from '../support/pg.js';
import { createTestBucket, headRaw, listKeys, listMultipartUploads, testStores, writeRepoConfig, type TestStore } from '../support/stores.js';
import { cleanupAll, runWalvault, tempDir, walvaultBin } from '../support/walvault.js';

// Issue 8 item 4: pg_basebackup -X none keeps its stream open until the server has archived the WAL
// that ends the backup. With archive_command failing, backup-push must give up after
// backupWaitTimeout, stop pg_basebackup, leave no backup and no multipart upload, and say which
// segment did not arrive.

const rgw = testStores().filter((s) => s.name === 'rgw');

/** pg_basebackup processes talking to the cluster on `port` (their environment carries PGPORT). */
function pgBasebackupPids(port: number): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/comm`, 'utf8').trim() !== 'pg_basebackup') continue;
      if (readFileSync(`/proc/${entry}/environ`, 'utf8').split('\0').includes(`PGPORT=${port}`)) pids.push(Number(entry));
    } catch {
      // exited meanwhile
    }
  }
  return pids;
}

function alive(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

describe.each(rgw)('backup-push against a failing archive on $name', (store: TestStore) => {
  let pg: PgCluster;
  let bucket: string;
  let env: Record<string, string>;
  const seenPids = new Set<number>();

  beforeAll(async () => {
    bucket = await createTestBucket(store, 'bwait');
    const home = await tempDir('wv-bwait', { forPostgres: true });
    const configFile = await writeRepoConfig(store, bucket, 'pg', home, { s3PartSize: '5MiB' });
    // backup-push runs as root, which must not use postgres's spool (walvault refuses it): a spool of its own.
    const spool = join(await tempDir('wv-bwait-root'), 'spool');
    env = { WALVAULT_CONFIG: configFile, WALVAULT_SPOOL: spool, AWS_EC2_METADATA_DISABLED: 'true' };
    const bin = await walvaultBin();
    pg = await PgCluster.create({
      walSegSizeMb: 1,
      conf: { archive_mode: 'on', archive_command: `${bin} --config ${configFile} wal-push %p %f`, archive_timeout: 0 },
    });
    await pg.start({ env: { AWS_EC2_METADATA_DISABLED: 'true' } });
    // One segment through walvault: the repository exists and knows this cluster.
    const first = await pg.query('SELECT pg_walfile_name(pg_switch_wal())');
    await pg.waitFor("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver", (out) => out >= first, 60_000);
    // ~35 MB in one table, a data object of its own (above backupBundleSize / 8), so objects of the
    // backup are in the store when the wait starts. Its WAL is thrown away (/bin/true): only the backup matters here.
    await pg.query("ALTER SYSTEM SET archive_command = '/bin/true'");
    await pg.query('SELECT pg_reload_conf()');
    await pg.query('CREATE TABLE filler AS SELECT md5(random()::text) || md5(random()::text) AS t FROM generate_series(1, 350000)');
    const last = await pg.query('SELECT pg_walfile_name(pg_switch_wal())');
    await pg.waitFor("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver", (out) => out >= last, 60_000);
    // From now on every archive attempt fails.
    await pg.query("ALTER SYSTEM SET archive_command = 'false'");
    await pg.query('SELECT pg_reload_conf()');
    await pg.waitFor("SELECT current_setting('archive_command')", (out) => out === 'false');
  });

  afterAll(async () => {
    // Only what the old, unbounded backup-push would leave running.
    for (const pid of seenPids) if (alive(pid)) process.kill(pid, 'SIGKILL');
    await pg?.destroy();
    await cleanupAll();
  });

  it('trust: backup-push never waits forever for the archive', async () => {
    let sawObject = false;
    const poll = setInterval(() => {
      for (const pid of pgBasebackupPids(pg.port)) seenPids.add(pid);
      if (!sawObject) void listKeys(store, bucket, 'pg/backups/').then((k) => (sawObject ||= k.some((x) => x.includes('/data/'))), () => undefined);
    }, 300);
    let r;
    try {
      // The stream method's wait (pg_basebackup running, data objects stored) is what this checks.
      r = await runWalvault(['backup-push', '--method', 'stream', '--checkpoint', 'fast'], {
        env: { ...env, ...pg.connectionEnv(), PATH: `${pg.binDir}:${process.env.PATH ?? '/usr/bin:/bin'}`, WALVAULT_BACKUP_WAIT_TIMEOUT: '5' },
        timeoutMs: 90_000,
      });
    } finally {
      clearInterval(poll);
    }
    const errLine = r.stderr.trim().split('\n').pop() ?? '';
    expect(r.code, r.stderr).toBe(14);
    // 5 s of waiting after the data, plus streaming ~35 MB, stopping pg_basebackup and cleaning up.
    expect(r.ms).toBeLessThan(60_000);
    expect(seenPids.size, 'pg_basebackup was seen running').toBeGreaterThan(0);
    expect(sawObject, 'data objects of the backup were stored').toBe(true);

    // One line naming the segment that did not arrive, and what the archiver says.
    const m = /WAL segment ([0-9A-F]{24}) was not archived to s3:\/\/\S+ within 5s after the data was streamed \(backupWaitTimeout\)/.exec(errLine);
    expect(m, errLine).not.toBeNull();
    const missing = m![1]!;
    expect(await headRaw(store, bucket, `pg/wal/${missing.slice(0, 16)}/${missing}`)).toBeNull();
    const failedWal = await pg.query("SELECT coalesce(last_failed_wal, '') FROM pg_stat_archiver");
    expect(failedWal).toMatch(/^[0-9A-F]{24}$/);
    expect(errLine).toContain(`pg_stat_archiver: last_failed_wal ${failedWal} at 20`);

    // Nothing a restore would use: no backup listed, no object, no incomplete upload, no pg_basebackup.
    const listed = await runWalvault(['backup-list', '--json'], { env });
    expect(listed.code, listed.stderr).toBe(0);
    expect(JSON.parse(listed.stdout)).toEqual([]);
    expect(await listKeys(store, bucket, 'pg/backups/')).toEqual([]);
    expect(await listMultipartUploads(store, bucket)).toEqual([]);
    for (const pid of seenPids) expect(alive(pid), `pg_basebackup pid ${pid}`).toBe(false);
  });
});
