// Memory of backup-push --method files must not grow with the database: the same cluster backed up
// at pgbench -s 5 (~80 MB) and, re-initialised, at -s 40 (~620 MB, pgbench_accounts alone ~510 MB:
// far more than the 4 jobs x 32 MiB bundles the engine may hold). Peak RSS is VmHWM polled by
// test/support/peak-rss.mjs around the node process.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PgCluster } from '../support/pg.js';
import { createTestBucket, testStores, writeRepoConfig, type TestStore } from '../support/stores.js';
import { cleanupAll, REPO_ROOT, runWalvault, tempDir, walvaultBin } from '../support/walvault.js';

const rgw = testStores().filter((s) => s.name === 'rgw');
const MiB = 1024 * 1024;
const RSS_PREFIX = [process.execPath, join(REPO_ROOT, 'test', 'support', 'peak-rss.mjs')];

describe.each(rgw)('backup-push --method files memory on $name', (store: TestStore) => {
  let pg: PgCluster;
  let env: Record<string, string>;

  beforeAll(async () => {
    const bucket = await createTestBucket(store, 'bmem');
    const home = await tempDir('wv-bmem', { forPostgres: true });
    const configFile = await writeRepoConfig(store, bucket, 'pg', home);
    // backup-push runs as root, which must not use postgres's spool: a spool of its own.
    const spool = join(await tempDir('wv-bmem-root'), 'spool');
    env = { WALVAULT_CONFIG: configFile, WALVAULT_SPOOL: spool, AWS_EC2_METADATA_DISABLED: 'true', WALVAULT_BACKUP_WAIT_TIMEOUT: '120' };
    const bin = await walvaultBin();
    pg = await PgCluster.create({
      conf: { archive_mode: 'on', archive_command: `${bin} --config ${configFile} wal-push %p %f`, archive_timeout: 0, max_wal_size: '2GB' },
    });
    await pg.start({ env: { AWS_EC2_METADATA_DISABLED: 'true' } });
  }, 120_000);

  afterAll(async () => {
    await pg?.destroy();
    await cleanupAll();
  });

  /** pgbench -i -s scale, then one backup with 4 jobs: its peak RSS (MiB) and the bytes it read. */
  async function backupAt(scale: number): Promise<{ rssMiB: number; sizeBytes: number; secs: number }> {
    await pg.pgbench(['-i', '-s', String(scale), '-q'], 600_000);
    await pg.query('CHECKPOINT');
    const r = await runWalvault(['backup-push', '--method', 'files', '--jobs', '4'], { env: { ...env, ...pg.connectionEnv() }, prefix: RSS_PREFIX, timeoutMs: 600_000 });
    expect(r.code, r.stderr).toBe(0);
    const m = /peak-rss-kib (\d+)/.exec(r.stderr);
    expect(m, r.stderr).not.toBeNull();
    const listed = await runWalvault(['backup-list', '--json'], { env });
    expect(listed.code, listed.stderr).toBe(0);
    const info = (JSON.parse(listed.stdout) as Array<{ id: string; sizeBytes: number }>).find((b) => b.id === r.stdout.trim())!;
    return { rssMiB: Number(m![1]) / 1024, sizeBytes: info.sizeBytes, secs: r.ms / 1000 };
  }

  it('memory: peak RSS at pgbench -s 40 is within 1.25x + 16 MiB of -s 5 and under 256 MiB (jobs 4)', async () => {
    const small = await backupAt(5);
    const large = await backupAt(40);
    console.log(
      `backup-push --method files --jobs 4 peak RSS: ${(small.sizeBytes / MiB).toFixed(0)} MiB database ${small.rssMiB.toFixed(0)} MiB (${small.secs.toFixed(1)} s), ` +
        `${(large.sizeBytes / MiB).toFixed(0)} MiB database ${large.rssMiB.toFixed(0)} MiB (${large.secs.toFixed(1)} s)`,
    );
    // The sizes really differ (else the comparison proves nothing).
    expect(large.sizeBytes).toBeGreaterThan(5 * small.sizeBytes);
    expect(large.rssMiB).toBeLessThanOrEqual(1.25 * small.rssMiB + 16);
    expect(large.rssMiB).toBeLessThan(256);
    expect(small.rssMiB).toBeLessThan(256);
  }, 1_200_000);
});
