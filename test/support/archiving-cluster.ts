import { join } from 'node:path';
import { loadConfig } from '../../src/common/config.js';
import { openStorage } from '../../src/storage/open.js';
import type { Storage } from '../../src/storage/types.js';
import { PgCluster } from './pg.js';
import { createTestBucket, writeRepoConfig, type TestStore } from './stores.js';
import { tempDir, walvaultBin } from './walvault.js';

// The setup the base-backup tests share: a new bucket, a repository config (5 MiB parts), a spool,
// a PostgreSQL 15 cluster with 1 MiB segments archiving through walvault wal-push, and a storage
// handle on the repository for the tests' own checks.

export interface ArchivingCluster {
  pg: PgCluster;
  bucket: string;
  /** A directory postgres can read (the config file lives there). */
  home: string;
  configFile: string;
  /** WALVAULT_CONFIG and a root-owned spool for the walvault commands the test runs. */
  env: Record<string, string>;
  storage: Storage;
}

/**
 * `opts.settings` go into the config file postgres's archive_command reads; `opts.env` into the
 * environment of the tests' own (root) walvault commands, which overrides the file. `opts.bucket`:
 * archive into this existing bucket (e.g. one with a bucket policy) instead of a new one.
 */
export async function startArchivingCluster(
  store: TestStore,
  name: string,
  opts: { settings?: Record<string, unknown>; env?: Record<string, string>; bucket?: string } = {},
): Promise<ArchivingCluster> {
  const bucket = opts.bucket ?? (await createTestBucket(store, name));
  const home = await tempDir(`wv-${name}`, { forPostgres: true });
  const configFile = await writeRepoConfig(store, bucket, 'pg', home, { s3PartSize: '5MiB', ...opts.settings });
  const spool = join(await tempDir(`wv-${name}-root`), 'spool');
  const env = { WALVAULT_CONFIG: configFile, WALVAULT_SPOOL: spool, AWS_EC2_METADATA_DISABLED: 'true', WALVAULT_BACKUP_WAIT_TIMEOUT: '60', ...opts.env };
  const storage = await openStorage(loadConfig({}, env).config);
  const bin = await walvaultBin();
  const pg = await PgCluster.create({
    walSegSizeMb: 1,
    conf: { archive_mode: 'on', archive_command: `${bin} --config ${configFile} wal-push %p %f`, archive_timeout: 0 },
  });
  await pg.start({ env: { AWS_EC2_METADATA_DISABLED: 'true' } });
  return { pg, bucket, home, configFile, env, storage };
}

/** Switches WAL and waits until the archiver has archived the segment that was being written. */
export async function switchAndWaitArchived(pg: PgCluster, timeoutMs = 60_000): Promise<void> {
  const last = await pg.query('SELECT pg_walfile_name(pg_switch_wal())');
  await pg.waitFor("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver", (out) => out >= last, timeoutMs);
}
