// backup-push --method files (format 2) end to end: a PostgreSQL 15 cluster archiving through
// walvault to radosgw, pgbench data, a backup read file by file with two jobs into many 1 MiB
// bundles; every object, file slice, files.json and backup_manifest checked, and the files laid out
// from the objects verified by pg_verifybackup against the manifest walvault built.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, mkdir, unlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { buffer } from 'node:stream/consumers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseStoredMeta } from '../../src/archive/objects.js';
import { BACKUP_ID_GRAMMAR } from '../../src/backup/backup-info.js';
import { parseFileList, type FileList } from '../../src/backup/file-list.js';
import { decompressStream } from '../../src/codec/codec.js';
import type { Storage } from '../../src/storage/types.js';
import { chownToPostgres, PG_BIN_DIR, PgCluster, startRestoredCluster } from '../support/pg.js';
import { listKeys, testStores, type TestStore } from '../support/stores.js';
import { cleanupAll, runWalvault, tempDir, walvaultBin, type WalvaultResult } from '../support/walvault.js';
import { runCommand } from '../support/run-command.js';
import { startArchivingCluster, switchAndWaitArchived } from '../support/archiving-cluster.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const rgw = testStores().filter((s) => s.name === 'rgw');

const run = runCommand;

describe.each(rgw)('backup-push --method files on $name', (store: TestStore) => {
  let pg: PgCluster;
  let bucket: string;
  let configFile: string;
  let env: Record<string, string>;
  let storage: Storage;
  let backupId: string;
  const restored: PgCluster[] = [];

  // As postgres, the spool the config file names (root's own spool is not postgres's to use).
  const wv = (args: string[], extra: Record<string, string> = {}, asPostgres = false): Promise<WalvaultResult> => {
    const { WALVAULT_SPOOL: _rootSpool, ...common } = env;
    return runWalvault(args, { env: { ...(asPostgres ? common : env), ...extra }, asPostgres, timeoutMs: 240_000 });
  };
  const show = (r: WalvaultResult) => `exit ${r.code}\n${r.stderr}${r.stdout}`;

  async function getObject(key: string): Promise<{ bytes: Buffer; meta: ReturnType<typeof parseStoredMeta>; stored: number }> {
    const got = await storage.get(key);
    expect(got, key).not.toBeNull();
    const meta = parseStoredMeta(got!.info, key);
    const z = decompressStream(meta.codec);
    const bytes = await buffer(z ? got!.body.pipe(z) : got!.body);
    expect({ sha256: sha(bytes), size: bytes.length }, key).toEqual({ sha256: meta.sha256, size: meta.size });
    return { bytes, meta, stored: got!.info.storedSize };
  }

  beforeAll(async () => {
    ({ pg, bucket, env, storage, configFile } = await startArchivingCluster(store, 'files'));
    await pg.pgbench(['-i', '-s', '2', '-q']);
    await pg.query('CREATE TABLE marker AS SELECT generate_series(1, 1234) AS n');
    await switchAndWaitArchived(pg);
  });

  afterAll(async () => {
    storage?.close();
    for (const c of restored) await c.destroy();
    await pg?.destroy();
    await cleanupAll();
  });

  it('backs up file by file into many bundles, and every object, slice and manifest checksum verifies', async () => {
    const r = await wv(['backup-push', '--method', 'files', '--jobs', '2', '--backup-bundle-size', '1MiB'], pg.connectionEnv());
    expect(r.code, show(r)).toBe(0);
    const id = r.stdout.trim();
    expect(id).toMatch(BACKUP_ID_GRAMMAR);
    backupId = id;
    expect(r.stderr).toMatch(/with 2 jobs/);
    expect(r.stderr).toMatch(/WAL segment [0-9A-F]{24} that ends the backup is archived/);

    const listed = await wv(['backup-list', '--json']);
    expect(listed.code, show(listed)).toBe(0);
    const info = (JSON.parse(listed.stdout) as Array<Record<string, unknown>>).find((b) => b['id'] === id)!;
    const sysid = await pg.query('SELECT system_identifier FROM pg_control_system()');
    expect(info).toMatchObject({ format: 2, method: 'files', pgVersion: 15, systemIdentifier: sysid, codec: 'zstd' });

    const dir = `backups/${id}/`;
    const keys = (await listKeys(store, bucket, `pg/${dir}`)).map((k) => k.slice(`pg/${dir}`.length));
    expect(keys).toEqual(expect.arrayContaining(['backup.json', 'backup_manifest', 'files.json']));
    const sentinel = JSON.parse((await getObject(`${dir}backup.json`)).bytes.toString('utf8')) as Record<string, unknown>;
    expect(sentinel).toMatchObject({ ...info, backupFrom: 'primary' });
    const files = await getObject(`${dir}files.json`);
    expect(files.meta.codec).toBe('zstd');
    expect(sentinel['sha256']).toBe(files.meta.sha256);
    const list: FileList = parseFileList(files.bytes.toString('utf8'), id, 'files.json', BACKUP_ID_GRAMMAR);
    expect(keys.filter((k) => k.startsWith('data/')).sort()).toEqual(list.objects.map((o) => o.name).sort());
    // pgbench -s 2 is ~30 MB: with 1 MiB bundles and large tables alone, many objects.
    expect(list.objects.length).toBeGreaterThan(10);

    // Every object as listed, every file slice as listed.
    const contents: Buffer[] = [];
    let stored = files.stored;
    for (const o of list.objects) {
      const got = await getObject(`${dir}${o.name}`);
      expect(got.meta, o.name).toEqual({ sha256: o.sha256, size: o.size, codec: o.codec });
      expect(got.stored).toBe(o.storedBytes);
      stored += got.stored;
      contents.push(got.bytes);
    }
    // Block maps (blocks/<n>, for incrementals) are stored with the backup too.
    for (const k of keys.filter((k) => k.startsWith('blocks/'))) stored += (await storage.head(`${dir}${k}`))!.storedSize;
    expect(info['storedBytes']).toBe(stored);
    let total = 0;
    const restore = join(await tempDir('wv-files-layout'), 'data');
    await mkdir(restore, { mode: 0o700 });
    for (const e of list.entries) {
      if (e.type === 'dir') await mkdir(join(restore, e.path), { mode: e.mode });
      if (e.type !== 'file') continue;
      const x = e.extents[0];
      const slice = x ? contents[x.object]!.subarray(x.offset, x.offset + x.size) : Buffer.alloc(0);
      expect(sha(slice), e.path).toBe(e.sha256);
      await mkdir(dirname(join(restore, e.path)), { recursive: true });
      await writeFile(join(restore, e.path), slice, { mode: e.mode });
      total += e.size;
    }
    expect(info['sizeBytes']).toBe(total);
    const paths = list.entries.map((e) => e.path);
    expect(paths).toEqual(expect.arrayContaining(['PG_VERSION', 'global/pg_control', 'backup_label', 'base', 'pg_wal']));
    expect(paths.filter((p) => p.startsWith('pg_wal/') && !p.startsWith('pg_wal/archive_status'))).toEqual([]);
    expect(paths).not.toContain('postmaster.pid');
    const label = list.entries.find((e) => e.path === 'backup_label')!;
    const at = label.type === 'file' ? label.extents[0]! : undefined;
    expect(at && contents[at.object]!.subarray(at.offset, at.offset + at.size).toString()).toMatch(/^START WAL LOCATION: /);

    // The manifest walvault built: what pg_verifybackup checks the laid-out files against.
    const manifest = await getObject(`${dir}backup_manifest`);
    expect(sentinel['manifestSha256']).toBe(manifest.meta.sha256);
    const m = JSON.parse(manifest.bytes.toString('utf8')) as { Files: Array<{ Path: string; Size: number; Checksum: string }> };
    const inList = list.entries.flatMap((e) => (e.type === 'file' ? [[e.path, e.size, e.sha256]] : []));
    expect(m.Files.map((f) => [f.Path, f.Size, f.Checksum]).sort()).toEqual(inList.sort());
    await writeFile(join(restore, 'backup_manifest'), manifest.bytes);
    const v = await run(join(PG_BIN_DIR, 'pg_verifybackup'), ['-n', restore]);
    expect(v.code, v.out).toBe(0);
  });

  it('restores with backup-fetch: pg_verifybackup passes and the cluster starts with every row', async () => {
    expect(backupId).toBeDefined();
    const target = join(await tempDir('wv-files-restore', { forPostgres: true }), 'data');
    const r = await runWalvault(['backup-fetch', backupId, target, '--owner', 'postgres', '--jobs', '2', '--target-immediate', '--target-action', 'promote'], {
      env,
      wrapper: true,
      timeoutMs: 240_000,
    });
    expect(r.code, show(r)).toBe(0);
    expect(r.stderr).toMatch(/pg_verifybackup: every file matches backup_manifest/);
    const c = await startRestoredCluster(target, restored);
    expect(await c.query('SELECT count(*) FROM pgbench_accounts')).toBe('200000');
    expect(await c.query('SELECT count(*), sum(n) FROM marker')).toBe('1234|761995');
    expect(await c.query('SELECT system_identifier FROM pg_control_system()')).toBe(await pg.query('SELECT system_identifier FROM pg_control_system()'));
  }, 300_000);

  it('backs up a cluster under write load; the restore is consistent (pgbench balances add up)', async () => {
    const load = pg.pgbench(['-c', '2', '-T', '12', '-n'], 120_000);
    await new Promise((r) => setTimeout(r, 1500));
    const r = await wv(['backup-push', '--method', 'files', '--jobs', '2', '--backup-bundle-size', '1MiB'], pg.connectionEnv());
    expect(r.code, show(r)).toBe(0);
    await load;
    const target = join(await tempDir('wv-files-live', { forPostgres: true }), 'data');
    const f = await runWalvault(['backup-fetch', r.stdout.trim(), target, '--owner', 'postgres', '--target-immediate', '--target-action', 'promote'], { env, wrapper: true, timeoutMs: 240_000 });
    expect(f.code, show(f)).toBe(0);
    const c = await startRestoredCluster(target, restored);
    const sums = await c.query(
      'SELECT (SELECT sum(abalance) FROM pgbench_accounts), (SELECT sum(bbalance) FROM pgbench_branches), (SELECT sum(tbalance) FROM pgbench_tellers), (SELECT sum(delta) FROM pgbench_history), (SELECT count(*) FROM pgbench_history)',
    );
    const [a, b, t, h, n] = sums.split('|');
    expect(Number(n), sums).toBeGreaterThan(0);
    expect([b, t, h], sums).toEqual([a, a, a]);
    expect(await c.query('SELECT count(*) FROM pgbench_accounts')).toBe('200000');
  }, 300_000);

  it('stops on SIGTERM: exit 14, the server backup ended, nothing of the backup left', async () => {
    const before = await listKeys(store, bucket, 'pg/backups/');
    const bin = await walvaultBin();
    const child = spawn(bin, ['backup-push', '--method', 'files', '--jobs', '1', '--backup-bundle-size', '1MiB'], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root', ...env, ...pg.connectionEnv(), WALVAULT_LOG_LEVEL: 'debug' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    let stdout = '';
    let killed = false;
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (/started at/.test(stderr) && !killed) killed = child.kill('SIGTERM');
    });
    const [code, signal] = await new Promise<[number | null, string | null]>((resolve) => child.on('close', (c, s) => resolve([c, s])));
    expect({ code, signal }, stderr).toEqual({ code: 14, signal: null });
    expect(stderr.trim().split('\n').at(-1)).toMatch(/BackupError: interrupted by SIGTERM/);
    expect(stdout).toBe('');
    expect(await listKeys(store, bucket, 'pg/backups/')).toEqual(before);
    await pg.waitFor("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'walvault%'", (out) => out === '0', 10_000);
  });

  it('refuses a file it cannot read with one clear line, and leaves nothing behind', async () => {
    const bad = join(pg.dataDir, 'base', 'walvault_unreadable');
    await writeFile(bad, 'secret');
    await chownToPostgres(bad);
    await chmod(bad, 0o000);
    try {
      const before = await listKeys(store, bucket, 'pg/backups/');
      const r = await wv(['backup-push', '--method', 'files', '--jobs', '2', '--backup-bundle-size', '1MiB'], pg.connectionEnv(), true);
      expect(r.code, show(r)).toBe(14);
      const lines = r.stderr.trim().split('\n');
      expect(lines.at(-1)).toMatch(new RegExp(`BackupError: cannot read ${bad}: EACCES`));
      expect(r.stdout).toBe('');
      expect(await listKeys(store, bucket, 'pg/backups/')).toEqual(before);
      // The server's backup ended with the session: a new one starts at once.
      await pg.waitFor("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'walvault%'", (out) => out === '0', 10_000);
    } finally {
      await unlink(bad);
    }
  });

  it('checks the cluster against the repository before reading anything', async () => {
    const other = await PgCluster.create({ walSegSizeMb: 1 });
    try {
      await other.start();
      const before = await listKeys(store, bucket, 'pg/backups/');
      const r = await wv(['backup-push', '--method', 'files'], other.connectionEnv());
      expect(r.code, show(r)).toBe(14);
      expect(r.stderr).toMatch(/has system identifier \d+ but s3:\/\/.* archives WAL of system \d+/);
      expect(r.stderr).not.toMatch(/started at/);
      expect(await listKeys(store, bucket, 'pg/backups/')).toEqual(before);
    } finally {
      await other.destroy();
    }
  });

  it('--method stream still refuses a cluster with a tablespace, before uploading anything (--method files backs it up: backup-tablespaces.test.ts)', async () => {
    const location = await tempDir('wv-files-ts', { forPostgres: true });
    await pg.query(`CREATE TABLESPACE wv_ts LOCATION '${location}'`);
    try {
      const before = await listKeys(store, bucket, 'pg/backups/');
      const r = await wv(['backup-push', '--method', 'stream'], pg.connectionEnv());
      expect(r.code, show(r)).toBe(14);
      expect(r.stderr.trim().split('\n').at(-1)).toMatch(/the cluster has more than one tablespace; backup-push --method stream .* does not support tablespaces: use --method files/);
      expect(await listKeys(store, bucket, 'pg/backups/')).toEqual(before);
    } finally {
      await pg.query('DROP TABLESPACE wv_ts');
    }
  });

  it('is refused --max-rate, which only pg_basebackup honours', async () => {
    const r = await wv(['backup-push', '--method', 'files', '--max-rate', '10M'], pg.connectionEnv());
    expect(r.code, show(r)).toBe(14);
    expect(r.stderr).toMatch(/--max-rate applies to --method stream only/);
  });
});
