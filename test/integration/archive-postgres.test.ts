import { createHash } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PgCluster } from '../support/pg.js';
import { createTestBucket, getRaw, listKeys, testStores, writeRepoConfig } from '../support/stores.js';
import { cleanupAll, tempDir, walvaultBin } from '../support/walvault.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

// The real thing: PostgreSQL's archiver runs walvault as the postgres user, with its own
// environment, so the repository and credentials come from a config file, as an operator would do.
describe.each(testStores())('PostgreSQL 15 archiving through walvault on $name', (store) => {
  const clusters: PgCluster[] = [];
  afterAll(async () => {
    for (const c of clusters) await c.destroy();
    await cleanupAll();
  });

  it('archives every segment under pgbench load with matching SHA-256 and no failures', async () => {
    const bucket = await createTestBucket(store, 'walarch');
    const home = await tempDir('wv-arch', { forPostgres: true });
    const configFile = await writeRepoConfig(store, bucket, 'pg', home);
    const bin = await walvaultBin();

    const pg = await PgCluster.create({
      walSegSizeMb: 1,
      conf: {
        archive_mode: 'on',
        archive_command: `${bin} --config ${configFile} wal-push %p %f`,
        archive_timeout: 0,
        wal_keep_size: '512MB', // keep every segment so the test can compare it with the archive
      },
    });
    clusters.push(pg);
    await pg.start({ env: { AWS_EC2_METADATA_DISABLED: 'true' } });

    const init = await pg.pgbench(['-i', '-s', '2', '-q']);
    expect(init.code, init.stderr).toBe(0);
    const load = await pg.pgbench(['-c', '4', '-j', '2', '-T', '8', '-n']);
    expect(load.code, load.stderr).toBe(0);
    const last = await pg.query('SELECT pg_walfile_name(pg_switch_wal())');
    await pg.waitFor(
      "SELECT coalesce(last_archived_wal, '') || ' ' || failed_count FROM pg_stat_archiver",
      (out) => out.split(' ')[0]! >= last,
      120_000,
    );
    const stats = await pg.query('SELECT archived_count, failed_count FROM pg_stat_archiver');
    const [archived, failed] = stats.split('|').map(Number);
    const failures = async () => (await pg.readLog()).split('\n').filter((l) => /walvault|archive command failed/.test(l) && /ERROR|WARN|failed/.test(l)).slice(-10).join('\n');
    expect(failed, failed ? await failures() : '').toBe(0);
    expect(archived).toBeGreaterThan(10);

    // Every archived segment still in pg_wal must be in the store with the same SHA-256.
    const keys = new Set(await listKeys(store, bucket, 'pg/wal/'));
    const walDir = join(pg.dataDir, 'pg_wal');
    const done = (await readdir(join(walDir, 'archive_status'))).filter((n) => n.endsWith('.done')).map((n) => n.slice(0, -5));
    expect(done.length).toBeGreaterThanOrEqual(archived! - 1);
    let compared = 0;
    for (const name of done) {
      if (!/^[0-9A-F]{24}$/.test(name)) continue;
      const key = `pg/wal/${name.slice(0, 16)}/${name}`;
      expect(keys.has(key), `${key} missing from the store`).toBe(true);
      const obj = await getRaw(store, bucket, key);
      expect(obj!.metadata['walvault-sha256'], name).toBe(sha(await readFile(join(walDir, name))));
      compared++;
    }
    expect(compared).toBeGreaterThan(10);
    const manifest = await getRaw(store, bucket, 'pg/walvault.json');
    const sysid = await pg.query('SELECT system_identifier FROM pg_control_system()');
    expect(JSON.parse(manifest!.body.toString()).systemIdentifier).toBe(sysid);
    expect(JSON.parse(manifest!.body.toString()).walSegmentSize).toBe(1024 * 1024);
  });
});
