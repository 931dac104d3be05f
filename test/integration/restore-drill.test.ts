import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startArchivingCluster, switchAndWaitArchived, type ArchivingCluster } from '../support/archiving-cluster.js';
import { PG_BIN_DIR } from '../support/pg.js';
import { deleteRaw, testStores, type TestStore } from '../support/stores.js';
import { cleanupAll, runWalvault, tempDir, walvaultBin, type WalvaultResult } from '../support/walvault.js';

// Issue 11 items 5 and 6 on radosgw and PostgreSQL 15: restore-test (the restore drill: restore,
// start a scratch server, recover, promote, pg_amcheck, --sql, remove everything) and
// backup-fetch --dry-run (the PITR plan). One archiving cluster, pgbench -s 1, one format-2 backup,
// WAL written after it; the last test deletes a segment the restore needs.

const rgw = testStores().filter((s) => s.name === 'rgw');
const AMCHECK = existsSync(join(PG_BIN_DIR, 'pg_amcheck'));

/** Pids of processes whose command line names `dir` (a postgres -D <dir>/..., a wal-fetch there). */
async function processesIn(dir: string): Promise<string[]> {
  const found: string[] = [];
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmd.includes(dir)) found.push(`${pid}: ${cmd.replace(/\0/g, ' ')}`);
  }
  return found;
}

describe.each(rgw)('restore drill and PITR plan on $name', (store: TestStore) => {
  let c: ArchivingCluster;
  let backupId: string;
  let storedBytes: number;
  /** A segment written after the backup, which recovery to the end of the archive needs. */
  let laterSegment: string;
  /** The newest archived segment, written after the incremental backup. */
  let tailSegment: string;
  /** Where the drills make their scratch directories (root's, readable by postgres). */
  let drillBase: string;
  let sqlOk: string;
  let sqlBad: string;

  // As root through the world-readable wrapper, so restore_command (this walvault) is runnable by postgres.
  const wv = (args: string[]) => runWalvault(args, { env: c.env, wrapper: true, timeoutMs: 150_000 });
  const drill = (args: string[]) => wv(['restore-test', '--dir', drillBase, '--timeout', '120', ...args]);
  const leftovers = async () => ({ dirs: await readdir(drillBase), procs: await processesIn(drillBase) });

  beforeAll(async () => {
    c = await startArchivingCluster(store, 'drill', { settings: { highWaterInterval: 5 } });
    await c.pg.pgbench(['-i', '-s', '1', '-q']);
    await c.pg.query("CREATE TABLE drill_marker (note text); INSERT INTO drill_marker VALUES ('before the backup')");
    await switchAndWaitArchived(c.pg);
    const push = await runWalvault(['backup-push', '--method', 'files'], { env: { ...c.env, ...c.pg.connectionEnv() }, wrapper: true, timeoutMs: 150_000 });
    expect(push.code, push.stderr).toBe(0);
    const list = await wv(['backup-list', '--json']);
    const backups = JSON.parse(list.stdout) as Array<{ id: string; storedBytes: number }>;
    backupId = backups[0]!.id;
    storedBytes = backups[0]!.storedBytes;
    // WAL after the backup (which ended with a segment switch), in the next segment: only replay to
    // the end of the archive brings this row back. (The insert position: commits are asynchronous here.)
    await c.pg.query("UPDATE drill_marker SET note = 'after the backup'");
    laterSegment = await c.pg.query('SELECT pg_walfile_name(pg_current_wal_insert_lsn())');
    expect(laterSegment > backupId.slice(5, 29)).toBe(true);
    await switchAndWaitArchived(c.pg);
    drillBase = await tempDir('wv-drill-base');
    await chmod(drillBase, 0o755);
    const sqlDir = await tempDir('wv-drill-sql');
    sqlOk = join(sqlDir, 'check.sql');
    sqlBad = join(sqlDir, 'bad.sql');
    await writeFile(sqlOk, 'SELECT count(*) AS accounts, (SELECT note FROM drill_marker) AS marker FROM pgbench_accounts;\n');
    await writeFile(sqlBad, "SELECT count(*) FROM pgbench_accounts;\nSELECT 1 / (SELECT count(*) - count(*) FROM drill_marker) AS boom;\n");
  }, 240_000);

  afterAll(async () => {
    await c?.pg.destroy();
    await cleanupAll();
  });

  it('backup-fetch --dry-run prints the plan, says the estimate is unknown before any restore, and writes nothing', async () => {
    const target = join(drillBase, 'never-created');
    const r = await wv(['backup-fetch', 'LATEST', target, '--dry-run']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`backup     ${backupId} (full, format 2`);
    expect(r.stdout).toMatch(/WAL {8}[0-9A-F]{24} \.\. [0-9A-F]{24} \(\d+ segments, timeline 1\): all archived/);
    expect(r.stdout).toMatch(/download {3}.* \(\d+ bytes\) in \d+ objects, \d+ files/);
    expect(r.stdout).toContain('estimate   unknown');
    expect(r.stdout).toContain('plan       complete');
    expect(existsSync(target)).toBe(false);
    // Without a data directory it is the same plan; a real run still needs one.
    const bare = await wv(['backup-fetch', 'LATEST', '--dry-run']);
    expect(bare.code, bare.stderr).toBe(0);
    const noDir = await wv(['backup-fetch', 'LATEST']);
    expect(noDir.code).toBe(2);
  });

  it('restore-test: a good repository passes, with pg_amcheck and an SQL file checking the data, and leaves nothing behind', async () => {
    const r = await drill(['--sql', sqlOk, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as Record<string, any>;
    expect(report.ok).toBe(true);
    expect(report.backup.id).toBe(backupId);
    expect(report.phases.restore).toBeGreaterThan(0);
    expect(report.phases.replay).toBeGreaterThan(0);
    expect(report.phases.checks).toBeGreaterThan(0);
    expect(report.phases.total).toBeGreaterThanOrEqual(report.phases.restore + report.phases.replay + report.phases.checks - 0.01);
    expect(report.wal.lastSegment >= laterSegment).toBe(true);
    expect(report.recovery.replayLsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    expect(report.recovery.timeline).toBe(2);
    expect(report.amcheck.ran).toBe(AMCHECK);
    // The row changed after the backup: WAL was replayed to the end of the archive.
    expect(report.sql.columns).toEqual(['accounts', 'marker']);
    expect(report.sql.rows).toEqual([['100000', 'after the backup']]);
    expect(report.download.bytes).toBeGreaterThan(0);
    expect(await leftovers()).toEqual({ dirs: [], procs: [] });
    // Archiving was off: the promoted drill server pushed no timeline 2 into the repository.
    const history = await wv(['backup-fetch', 'LATEST', '--dry-run', '--json']);
    expect((JSON.parse(history.stdout) as { wal: { timelines: number[] } }).wal.timelines).toEqual([1]);
  }, 150_000);

  it('backup-fetch --dry-run --json: bytes, files and an estimate from the throughput restore-test measured', async () => {
    const r = await wv(['backup-fetch', 'LATEST', '--dry-run', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const plan = JSON.parse(r.stdout) as Record<string, any>;
    expect(plan.complete).toBe(true);
    expect(plan.backup.id).toBe(backupId);
    expect(plan.chain).toEqual([{ id: backupId, type: 'full' }]);
    expect(plan.wal.complete).toBe(true);
    expect(plan.wal.lastSegment >= laterSegment).toBe(true);
    expect(plan.download.bytes).toBeGreaterThan(0);
    expect(plan.download.bytes).toBeLessThanOrEqual(storedBytes);
    expect(plan.download.files).toBeGreaterThan(900);
    expect(plan.estimate.by).toBe('restore-test');
    expect(plan.estimate.seconds).toBeGreaterThan(0);
    const text = await wv(['backup-fetch', 'LATEST', '--dry-run']);
    expect(text.stdout).toMatch(/estimate {3}\d+\.\d s at .*\/s \(measured by restore-test at /);

    // An incremental backup: the plan names its chain, and counts the objects it takes from the full one.
    await c.pg.query('UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= 1000');
    const push = await runWalvault(['backup-push', '--method', 'files', '--incremental'], { env: { ...c.env, ...c.pg.connectionEnv() }, wrapper: true, timeoutMs: 150_000 });
    expect(push.code, push.stderr).toBe(0);
    const incr = await wv(['backup-fetch', 'LATEST', '--dry-run', '--json']);
    expect(incr.code, incr.stderr).toBe(0);
    const ip = JSON.parse(incr.stdout) as Record<string, any>;
    expect(ip.backup.type).toBe('incremental');
    expect(ip.chain).toEqual([
      { id: ip.backup.id, type: 'incremental' },
      { id: backupId, type: 'full' },
    ]);
    expect(ip.download.objects).toBeGreaterThan(plan.download.objects);
    const own = (JSON.parse((await wv(['backup-list', '--json'])).stdout) as Array<{ id: string; storedBytes: number }>).find((b) => b.id === ip.backup.id)!;
    expect(ip.download.bytes).toBeGreaterThan(own.storedBytes);
    // The newest WAL, after both backups: the last test deletes it.
    await c.pg.query("UPDATE drill_marker SET note = 'after both backups'");
    tailSegment = await c.pg.query('SELECT pg_walfile_name(pg_current_wal_insert_lsn())');
    // wal-push writes the high-water mark at most every highWaterInterval (5 s): let it be due.
    await new Promise((r) => setTimeout(r, 5500));
    await switchAndWaitArchived(c.pg);
  }, 150_000);

  it('restore-test: a failing SQL file fails the drill (15) with the error, and the server and directory are gone', async () => {
    const r = await drill(['--sql', sqlBad]);
    expect(r.code, r.stderr).toBe(15);
    expect(r.stdout).toContain('restore-test: FAILED (SQL error)');
    expect(r.stdout).toMatch(/RTO {10}restore \d+\.\d s \+ replay \d+\.\d s = total/);
    expect(r.stderr).toContain('CheckFailed: restore-test failed (SQL error)');
    expect(r.stderr).toContain('division by zero');
    expect(await leftovers()).toEqual({ dirs: [], procs: [] });
  }, 150_000);

  it('restore-test: SIGTERM stops the drill and removes what it made', async () => {
    const bin = await walvaultBin();
    const child = spawn(bin, ['restore-test', '--dir', drillBase], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/root', ...c.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let sent = false;
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (!sent && stderr.includes('restore-test in ')) sent = child.kill('SIGTERM');
    });
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(code, stderr).toBe(15);
    expect(stderr).toContain('restore-test failed (interrupted)');
    expect(await leftovers()).toEqual({ dirs: [], procs: [] });
  }, 150_000);

  it('restore-test: a missing segment fails the drill and leaves nothing behind; backup-fetch --dry-run exits 14 naming it (the newest archived one: the high-water mark shows it)', async () => {
    await deleteRaw(store, c.bucket, `pg/wal/${tailSegment.slice(0, 16)}/${tailSegment}`);
    const r: WalvaultResult = await drill(['--json']);
    expect(r.code, r.stderr).toBe(15);
    const report = JSON.parse(r.stdout) as Record<string, any>;
    expect(report.ok).toBe(false);
    expect(report.reason).toBe('missing WAL');
    expect(report.problems.join('\n')).toContain(tailSegment);
    // Found before anything is downloaded although no later segment is listed: the high-water mark says it was archived.
    expect(r.stderr).toContain(`CheckFailed: restore-test failed (missing WAL): the archive s3://${c.bucket}/pg lacks WAL segment ${tailSegment}, needed to reach the target`);
    expect(report.phases.restore).toBeNull();
    expect(await leftovers()).toEqual({ dirs: [], procs: [] });
    // --keep-failed keeps the scratch directory of a failed drill (and says where), nothing runs in it.
    const kept = await drill(['--keep-failed']);
    expect(kept.code).toBe(15);
    const left = await leftovers();
    expect(left.procs).toEqual([]);
    expect(left.dirs).toHaveLength(1);
    expect(kept.stdout).toContain(`kept         ${join(drillBase, left.dirs[0]!)} (--keep-failed)`);
    await rm(join(drillBase, left.dirs[0]!), { recursive: true });

    const target = join(drillBase, 'never-created');
    const plan = await wv(['backup-fetch', 'LATEST', target, '--dry-run']);
    expect(plan.code).toBe(14);
    expect(plan.stdout).toContain(`MISSING ${tailSegment}`);
    expect(plan.stdout).toContain('plan       INCOMPLETE');
    expect(plan.stderr).toContain(`BackupError: the archive s3://${c.bucket}/pg lacks WAL segment ${tailSegment}`);
    expect(existsSync(target)).toBe(false);
  }, 150_000);
});
