// backup-push without --method: files when the server's data directory is readable here and holds
// the server's own cluster (same system identifier in global/pg_control), else stream with an info
// line saying why; an explicit --method wins. The "elsewhere" cases run backup-push in a mount
// namespace of its own (unshare, as root) where the server's data directory path shows another
// directory, as it does from a container: another cluster's, or an empty one.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PgCluster } from '../support/pg.js';
import { createTestBucket, testStores, writeRepoConfig, type TestStore } from '../support/stores.js';
import { cleanupAll, runWalvault, tempDir, walvaultBin, type WalvaultResult } from '../support/walvault.js';

const rgw = testStores().filter((s) => s.name === 'rgw');

describe.each(rgw)('backup-push method choice on $name', (store: TestStore) => {
  let pg: PgCluster;
  let other: PgCluster;
  let env: Record<string, string>;

  /** backup-push; with `seen`, where the server's data directory path shows that directory instead. */
  const push = (args: string[] = [], seen?: string): Promise<WalvaultResult> =>
    runWalvault(['backup-push', ...args], {
      env: { ...env, ...pg.connectionEnv(), PATH: `${pg.binDir}:${process.env.PATH ?? '/usr/bin:/bin'}` },
      timeoutMs: 120_000,
      ...(seen ? { prefix: ['unshare', '--mount', '--propagation', 'private', 'sh', '-c', 'mount --bind "$1" "$2" && shift 2 && exec "$@"', 'sh', seen, pg.dataDir] } : {}),
    });
  const show = (r: WalvaultResult) => `exit ${r.code}\n${r.stderr}`;
  const list = async () => {
    const r = await runWalvault(['backup-list', '--json'], { env });
    expect(r.code, r.stderr).toBe(0);
    return JSON.parse(r.stdout) as Array<{ id: string; format: number; method?: string }>;
  };

  beforeAll(async () => {
    const bucket = await createTestBucket(store, 'bmethod');
    const home = await tempDir('wv-bmethod', { forPostgres: true });
    const configFile = await writeRepoConfig(store, bucket, 'pg', home);
    const spool = join(await tempDir('wv-bmethod-root'), 'spool');
    env = { WALVAULT_CONFIG: configFile, WALVAULT_SPOOL: spool, AWS_EC2_METADATA_DISABLED: 'true', WALVAULT_BACKUP_WAIT_TIMEOUT: '60' };
    const bin = await walvaultBin();
    pg = await PgCluster.create({
      walSegSizeMb: 1,
      conf: { archive_mode: 'on', archive_command: `${bin} --config ${configFile} wal-push %p %f`, archive_timeout: 0 },
    });
    await pg.start({ env: { AWS_EC2_METADATA_DISABLED: 'true' } });
    await pg.query('CREATE TABLE t AS SELECT generate_series(1, 1000) AS n');
    other = await PgCluster.create({ walSegSizeMb: 1 }); // never started: only its pg_control matters
  }, 120_000);

  afterAll(async () => {
    await pg?.destroy();
    await other?.destroy();
    await cleanupAll();
  });

  it('the data directory readable here: files (format 2), saying why', async () => {
    const r = await push();
    expect(r.code, show(r)).toBe(0);
    expect(r.stderr).toContain(`INFO: using --method files: the server's data directory ${pg.dataDir} is readable here`);
    expect((await list()).find((b) => b.id === r.stdout.trim())).toMatchObject({ format: 2, method: 'files' });
  });

  it('the path holds another cluster: stream (format 2 method stream), naming both system identifiers', async () => {
    const mine = await pg.query('SELECT system_identifier FROM pg_control_system()');
    const r = await push([], other.dataDir);
    expect(r.code, show(r)).toBe(0);
    const m = /INFO: using --method stream: (\S+) here holds another cluster \(system identifier (\d+), the server's is (\d+)\)/.exec(r.stderr);
    expect(m, r.stderr).not.toBeNull();
    expect(m![1]).toBe(pg.dataDir);
    expect(m![3]).toBe(mine);
    expect(m![2]).not.toBe(mine);
    expect((await list()).find((b) => b.id === r.stdout.trim())).toMatchObject({ format: 2, method: 'stream' });
  });

  it('no pg_control at the path here (a server on another host): stream; an explicit --method files fails instead', async () => {
    const empty = await tempDir('wv-bmethod-empty');
    const [auto, files] = [await push([], empty), await push(['--method', 'files'], empty)];
    expect(auto!.code, show(auto!)).toBe(0);
    expect(auto!.stderr).toContain(`INFO: using --method stream: the server's data directory ${pg.dataDir} is not readable here (ENOENT)`);
    expect((await list()).find((b) => b.id === auto!.stdout.trim())).toMatchObject({ format: 2, method: 'stream' });
    expect(files!.code, show(files!)).toBe(14);
    expect(files!.stderr).toMatch(/cannot read the server's data directory .* here \(ENOENT\)/);
    expect(files!.stderr).not.toContain('using --method');
  });

  it('an explicit --method stream wins over a readable data directory; --max-rate means stream', async () => {
    const stream = await push(['--method', 'stream']);
    expect(stream.code, show(stream)).toBe(0);
    expect(stream.stderr).not.toContain('using --method');
    const rate = await push(['--max-rate', '100M']);
    expect(rate.code, show(rate)).toBe(0);
    expect(rate.stderr).toContain('INFO: using --method stream: --max-rate limits pg_basebackup only');
    const byId = new Map((await list()).map((b) => [b.id, b]));
    expect(byId.get(stream.stdout.trim())).toMatchObject({ format: 2, method: 'stream' });
    expect(byId.get(rate.stdout.trim())).toMatchObject({ format: 2, method: 'stream' });
  });
});
