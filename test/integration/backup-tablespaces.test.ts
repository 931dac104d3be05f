// Tablespaces round trip (issue 10 item 4): a PostgreSQL 15 cluster archiving through walvault to
// radosgw with a table (and an index, and an unlogged table) in a tablespace outside the data
// directory; backup-push --method files; backup-fetch elsewhere with --tablespace-map, refused first
// at the (non-empty) original location; then, with the original cluster and location gone, back to
// the original location. Each restore passes pg_verifybackup (the manifest lists the tablespace's
// files under pg_tblspc/<oid>/...), starts, and shows every row.
import { spawn } from 'node:child_process';
import { lstat, readFile, readdir, readlink, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKUP_ID_GRAMMAR } from '../../src/backup/backup-info.js';
import { parseFileList, type FileList } from '../../src/backup/file-list.js';
import { readVerifiedSmall } from '../../src/archive/small-objects.js';
import { loadConfig, retryPolicy } from '../../src/common/config.js';
import { Deadline } from '../../src/common/retry.js';
import type { Storage } from '../../src/storage/types.js';
import { fault, FaultProxy } from '../support/fault-proxy.js';
import { PgCluster, startRestoredCluster } from '../support/pg.js';
import { listKeys, testStores, writeRepoConfig, type TestStore } from '../support/stores.js';
import { cleanupAll, runWalvault, tempDir, walvaultBin, type WalvaultResult } from '../support/walvault.js';
import { startArchivingCluster, switchAndWaitArchived } from '../support/archiving-cluster.js';

const rgw = testStores().filter((s) => s.name === 'rgw');
const show = (r: WalvaultResult) => `exit ${r.code}\n${r.stderr}${r.stdout}`;

describe.each(rgw)('tablespaces with backup-push --method files on $name', (store: TestStore) => {
  let pg: PgCluster;
  let bucket: string;
  let env: Record<string, string>;
  let storage: Storage;
  let location: string;
  let oid: string;
  let backupId: string;
  let list: FileList;
  let proxy: FaultProxy;
  let proxyEnv: Record<string, string>;
  const restored: PgCluster[] = [];

  const fetch = (args: string[]) => runWalvault(['backup-fetch', ...args, '--owner', 'postgres', '--jobs', '2', '--target-immediate', '--target-action', 'promote'], { env, wrapper: true, timeoutMs: 240_000 });

  /** Starts a restored data directory and checks every row, in the tablespace and out of it. */
  async function startAndCount(dataDir: string): Promise<PgCluster> {
    const c = await startRestoredCluster(dataDir, restored);
    expect(await c.query('SELECT count(*), sum(n) FROM in_ts')).toBe('5000|12502500');
    expect(await c.query("SELECT count(*) FROM in_ts WHERE n = 4242 AND pad = 'row 4242'")).toBe('1');
    expect(await c.query('SELECT count(*) FROM outside_ts')).toBe('77');
    expect(await c.query("SELECT spcname FROM pg_tablespace t JOIN pg_class c ON c.reltablespace = t.oid WHERE c.relname = 'in_ts_n'")).toBe('wv_ts');
    // The unlogged table comes back empty (its init fork only), as from pg_basebackup.
    expect(await c.query('SELECT count(*) FROM unlogged_ts')).toBe('0');
    return c;
  }

  beforeAll(async () => {
    const cluster = await startArchivingCluster(store, 'tblspc');
    ({ pg, bucket, env, storage } = cluster);
    proxy = await FaultProxy.start({ upstream: store.endpoint });
    proxyEnv = { ...env, WALVAULT_CONFIG: await writeRepoConfig(store, bucket, 'pg', cluster.home, { s3Endpoint: proxy.url }) };
    // CREATE TABLESPACE wants an empty directory owned by postgres.
    location = await tempDir('wv-ts-location', { forPostgres: true });
    await pg.query(`CREATE TABLESPACE wv_ts LOCATION '${location}'`);
    oid = await pg.query("SELECT oid FROM pg_tablespace WHERE spcname = 'wv_ts'");
    await pg.query("CREATE TABLE in_ts TABLESPACE wv_ts AS SELECT n, 'row ' || n AS pad FROM generate_series(1, 5000) AS n");
    await pg.query('CREATE INDEX in_ts_n ON in_ts (n) TABLESPACE wv_ts');
    await pg.query('CREATE UNLOGGED TABLE unlogged_ts TABLESPACE wv_ts AS SELECT generate_series(1, 300) AS n');
    await pg.query('CREATE TABLE outside_ts AS SELECT generate_series(1, 77) AS n');
    await switchAndWaitArchived(pg);
  });

  afterAll(async () => {
    storage?.close();
    await proxy?.close();
    for (const c of restored) await c.destroy();
    await pg?.destroy();
    await cleanupAll();
  });

  it('backs up the tablespace: its link, its files under pg_tblspc/<oid>/PG_15_*, tablespace_map, in objects of their own', async () => {
    const r = await runWalvault(['backup-push', '--method', 'files', '--jobs', '2', '--backup-bundle-size', '1MiB'], { env: { ...env, ...pg.connectionEnv() }, timeoutMs: 240_000 });
    expect(r.code, show(r)).toBe(0);
    backupId = r.stdout.trim();
    expect(backupId).toMatch(BACKUP_ID_GRAMMAR);
    const deadline = new Deadline(60_000);
    const read = async (name: string) =>
      (await readVerifiedSmall(storage, `backups/${backupId}/${name}`, { policy: retryPolicy(loadConfig({}, env).config), deadline, what: name, maxSize: 64 << 20 }))!;
    list = parseFileList((await read('files.json')).toString(), backupId, 'files.json', BACKUP_ID_GRAMMAR);
    const manifest = JSON.parse((await read('backup_manifest')).toString()) as { Files: Array<{ Path: string }> };
    deadline.dispose();

    expect(list.entries.find((e) => e.path === `pg_tblspc/${oid}`)).toMatchObject({ type: 'link', target: location });
    const versionDir = (await readdir(location)).find((n) => n.startsWith('PG_15_'))!;
    const relfile = await pg.query("SELECT pg_relation_filepath('in_ts')");
    expect(relfile).toMatch(new RegExp(`^pg_tblspc/${oid}/${versionDir}/\\d+/\\d+$`));
    const tsFiles = list.entries.filter((e) => e.type === 'file' && e.path.startsWith(`pg_tblspc/${oid}/${versionDir}/`)).map((e) => e.path);
    expect(tsFiles).toContain(relfile);
    // The unlogged table: its init fork only.
    const unlogged = await pg.query("SELECT pg_relation_filepath('unlogged_ts')");
    expect(tsFiles).toContain(`${unlogged}_init`);
    expect(tsFiles).not.toContain(unlogged);
    // PostgreSQL's manifest names tablespace files the same way; pg_verifybackup checks them at restore.
    expect(manifest.Files.map((f) => f.Path)).toEqual(expect.arrayContaining([relfile, 'tablespace_map', 'backup_label']));
    const map = list.entries.find((e) => e.path === 'tablespace_map');
    expect(map?.type).toBe('file');
    // No object mixes the tablespace's files with the data directory's.
    const roots = new Map<number, Set<boolean>>();
    for (const e of list.entries) {
      if (e.type !== 'file') continue;
      for (const x of e.extents) roots.set(x.object, (roots.get(x.object) ?? new Set()).add(e.path.startsWith('pg_tblspc/')));
    }
    expect([...roots.values()].every((s) => s.size === 1)).toBe(true);
  });

  it('refuses the original location while it is not empty, before writing anything', async () => {
    expect(backupId).toBeDefined();
    const target = join(await tempDir('wv-ts-refused', { forPostgres: true }), 'data');
    const before = await readdir(location);
    const r = await fetch([backupId, target]);
    expect(r.code, show(r)).toBe(14);
    const lines = r.stderr.trim().split('\n');
    expect(lines.at(-1)).toMatch(new RegExp(`BackupError: tablespace ${oid}: .*${location}.* is not empty.*--tablespace-map ${oid}=<dir>`));
    await expect(lstat(target)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await readdir(location)).toEqual(before);
    // An OID the backup does not have is a usage error.
    const u = await fetch([backupId, target, '--tablespace-map', '1=/tmp/x']);
    expect(u.code, show(u)).toBe(2);
    expect(u.stderr).toMatch(new RegExp(`has no tablespace 1 \\(its tablespaces: ${oid}\\)`));
  });

  it('restores elsewhere with --tablespace-map: pg_tblspc/<oid> links to the new location, tablespace_map names it, every row is there', async () => {
    const base = await tempDir('wv-ts-moved', { forPostgres: true });
    const target = join(base, 'data');
    const moved = join(base, 'ts-moved');
    const r = await fetch([backupId, target, '--tablespace-map', `${oid}=${moved}`]);
    expect(r.code, show(r)).toBe(0);
    expect(r.stderr).toMatch(/pg_verifybackup: every file matches backup_manifest/);
    expect(await readlink(join(target, 'pg_tblspc', oid))).toBe(moved);
    expect(await readFile(join(target, 'tablespace_map'), 'utf8')).toBe(`${oid} ${moved}\n`);
    expect((await readdir(moved)).filter((n) => n.startsWith('PG_15_'))).toHaveLength(1);
    const c = await startAndCount(target);
    // Recovery recreated the link from tablespace_map: still the new location.
    expect(await readlink(join(c.dataDir, 'pg_tblspc', oid))).toBe(moved);
    expect(await c.query("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'wv_ts'")).toBe(moved);
    // The original is untouched: still the live cluster's.
    expect(await pg.query('SELECT count(*) FROM in_ts')).toBe('5000');
    await c.stop();
  });

  it('SIGKILL during a restore with a tablespace, then the same command again: the tablespace objects done are not fetched again, the result starts', async () => {
    const tsObjects = new Set(list.entries.flatMap((e) => (e.type === 'file' && e.path.startsWith('pg_tblspc/') ? e.extents.map((x) => list.objects[x.object]!.name) : [])));
    expect(tsObjects.size).toBeGreaterThan(0);
    // The largest object of the data directory stalls: the tablespace's objects finish meanwhile.
    const stalled = list.objects.filter((o) => !tsObjects.has(o.name)).sort((a, b) => b.storedBytes - a.storedBytes)[0]!;
    const rule = proxy.addRule({ method: 'GET', path: new RegExp(`/backups/${backupId}/${stalled.name}(\\?|$)`), first: 1, action: fault.stall('response-body', 4096) });
    const base = await tempDir('wv-ts-resume', { forPostgres: true });
    const target = join(base, 'data');
    const moved = join(base, 'ts');
    const args = ['backup-fetch', backupId, target, '--owner', 'postgres', '--jobs', '2', '--target-immediate', '--target-action', 'promote', '--tablespace-map', `${oid}=${moved}`];
    const child = spawn(await walvaultBin(), args, { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root', ...proxyEnv }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const closed = new Promise<number | null>((resolve) => child.on('close', resolve));
    const done = async () => (await readFile(join(moved, 'walvault.restore'), 'utf8').catch(() => '')).split('\n').filter((l) => l.startsWith('done backups/'));
    try {
      const until = Date.now() + 90_000;
      while ((await done()).length < tsObjects.size && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
      expect((await done()).length, stderr).toBe(tsObjects.size);
      child.kill('SIGKILL');
      await closed;
    } finally {
      proxy.removeRule(rule);
      child.kill('SIGKILL');
    }
    await new Promise((r) => setTimeout(r, 1000));
    proxy.log.length = 0;
    const r = await runWalvault(args.slice(), { env: proxyEnv, wrapper: true, timeoutMs: 240_000 });
    expect(r.code, show(r)).toBe(0);
    expect(r.stderr).toMatch(`resuming the restore of ${backupId} into ${target}`);
    expect(r.stderr).toMatch(/pg_verifybackup: every file matches backup_manifest/);
    const fetched = proxy.log.filter((q) => q.method === 'GET' && q.url.includes(`/backups/${backupId}/data/`)).map((q) => q.url.replace(/^.*\/(data\/\d+).*$/, '$1'));
    expect(fetched.filter((n) => tsObjects.has(n))).toEqual([]);
    expect(fetched).toContain(stalled.name);
    await expect(lstat(join(moved, 'walvault.restore'))).rejects.toMatchObject({ code: 'ENOENT' });
    const c = await startAndCount(target);
    await c.stop();
  }, 300_000);

  it('restores to the original location once the cluster and its tablespace directory are gone', async () => {
    await pg.destroy();
    await rm(location, { recursive: true, force: true });
    const target = join(await tempDir('wv-ts-original', { forPostgres: true }), 'data');
    const r = await fetch([backupId, target]);
    expect(r.code, show(r)).toBe(0);
    expect(r.stderr).toMatch(/pg_verifybackup: every file matches backup_manifest/);
    expect(await readlink(join(target, 'pg_tblspc', oid))).toBe(location);
    const st = await lstat(location);
    expect(st.isDirectory() && (st.mode & 0o777).toString(8)).toBe('700');
    await startAndCount(target);
    const keys = await listKeys(store, bucket, `pg/backups/${backupId}/`);
    expect(keys.length).toBeGreaterThan(3);
  });
});
