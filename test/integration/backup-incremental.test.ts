// backup-push --method files --incremental end to end on PostgreSQL 15 and radosgw: a full backup,
// pgbench changes on ~1 % of pgbench_accounts' pages, an incremental, more changes, a second
// incremental. Each stores only changed blocks (bounded against the full), does not read files
// unchanged since its reference (an unreadable unchanged file does not stop it), names the real
// objects of earlier backups (laid out from them, every file's SHA-256 and pg_verifybackup pass),
// and restores (backup-fetch) with exactly the rows of its time, PITR included. A damaged reference
// makes --incremental fail clearly.
import { createHash } from 'node:crypto';
import { chmod, mkdir, utimes, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { buffer } from 'node:stream/consumers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseStoredMeta, smallObjectMeta } from '../../src/archive/objects.js';
import { BACKUP_ID_GRAMMAR } from '../../src/backup/backup-info.js';
import { parseFileList, type FileList } from '../../src/backup/file-list.js';
import { decompressStream } from '../../src/codec/codec.js';
import type { Storage } from '../../src/storage/types.js';
import { chownToPostgres, PG_BIN_DIR, PgCluster, startRestoredCluster } from '../support/pg.js';
import { listKeys, testStores, type TestStore } from '../support/stores.js';
import { cleanupAll, runWalvault, tempDir, type WalvaultResult } from '../support/walvault.js';
import { runCommand } from '../support/run-command.js';
import { startArchivingCluster, switchAndWaitArchived } from '../support/archiving-cluster.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const rgw = testStores().filter((s) => s.name === 'rgw');

const run = runCommand;

describe.each(rgw)('backup-push --incremental on $name', (store: TestStore) => {
  let pg: PgCluster;
  let bucket: string;
  let env: Record<string, string>;
  let storage: Storage;
  const ids: { full?: string; inc1?: string; inc2?: string } = {};
  const infos = new Map<string, Record<string, unknown>>();
  const expected = new Map<string, string>();
  let between = '';
  const restored: PgCluster[] = [];

  // As postgres (as the database host's cron would run it): root would read a mode-000 file anyway.
  const wv = (args: string[], asPostgres = true): Promise<WalvaultResult> => {
    const { WALVAULT_SPOOL: _rootSpool, ...common } = env;
    return runWalvault(args, { env: { ...(asPostgres ? common : env), ...pg.connectionEnv() }, asPostgres, timeoutMs: 240_000 });
  };
  const show = (r: WalvaultResult) => `exit ${r.code}\n${r.stderr}${r.stdout}`;
  const push = (...extra: string[]) => wv(['backup-push', '--method', 'files', '--jobs', '2', '--backup-bundle-size', '1MiB', ...extra]);
  const rows = (c: PgCluster) => c.query('SELECT batch, count(*) FROM items GROUP BY batch ORDER BY batch');
  const balances = (c: PgCluster) => c.query('SELECT sum(abalance), count(*) FILTER (WHERE abalance <> 0) FROM pgbench_accounts');

  /** One row on ~1 % of pgbench_accounts' pages, chosen at random. */
  async function touchOnePercentOfPages(): Promise<void> {
    await pg.query(
      'UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid IN ' +
        "(SELECT 1 + (random() * (SELECT count(*) - 1 FROM pgbench_accounts))::int FROM generate_series(1, (SELECT greatest(relpages / 100, 1) FROM pg_class WHERE relname = 'pgbench_accounts')))",
    );
  }

  async function sentinel(id: string): Promise<Record<string, unknown>> {
    const listed = await wv(['backup-list', '--json']);
    expect(listed.code, show(listed)).toBe(0);
    const info = (JSON.parse(listed.stdout) as Array<Record<string, unknown>>).find((b) => b['id'] === id);
    expect(info, listed.stdout).toBeDefined();
    infos.set(id, info!);
    return info!;
  }

  async function getObject(key: string): Promise<Buffer> {
    const got = await storage.get(key);
    expect(got, key).not.toBeNull();
    const meta = parseStoredMeta(got!.info, key);
    const z = decompressStream(meta.codec);
    const bytes = await buffer(z ? got!.body.pipe(z) : got!.body);
    expect(sha(bytes), key).toBe(meta.sha256);
    return bytes;
  }

  async function fileList(id: string): Promise<FileList> {
    return parseFileList((await getObject(`backups/${id}/files.json`)).toString('utf8'), id, 'files.json', BACKUP_ID_GRAMMAR);
  }

  /** Own objects' uncompressed bytes: what this backup stored of the files. */
  const ownBytes = (list: FileList) => list.objects.filter((o) => o.backup === list.backup).reduce((a, o) => a + o.size, 0);

  async function restore(id: string, target: string[]): Promise<PgCluster> {
    const dir = join(await tempDir('wv-inc-restore', { forPostgres: true }), 'data');
    const r = await runWalvault(['backup-fetch', id, dir, '--owner', 'postgres', '--jobs', '2', ...target, '--target-action', 'promote'], {
      env,
      wrapper: true,
      timeoutMs: 240_000,
    });
    expect(r.code, show(r)).toBe(0);
    expect(r.stderr).toMatch(/pg_verifybackup: every file matches backup_manifest/);
    return startRestoredCluster(dir, restored);
  }

  beforeAll(async () => {
    ({ pg, bucket, env, storage } = await startArchivingCluster(store, 'incr'));
    await pg.pgbench(['-i', '-s', '5', '-q']);
    await pg.query('CREATE TABLE items (batch int, n int)');
    await pg.query('INSERT INTO items SELECT 1, g FROM generate_series(1, 100) g');
    // A file nobody writes, last modified an hour ago: the incrementals must not even open it.
    const still = join(pg.dataDir, 'walvault_still');
    await writeFile(still, Buffer.alloc(100_000, 7));
    await chownToPostgres(still);
    const anHourAgo = new Date(Date.now() - 3_600_000);
    await utimes(still, anHourAgo, anHourAgo);
    await pg.query('CHECKPOINT');
    await switchAndWaitArchived(pg);
    // Files last written within MTIME_GUARD_MS (10 s) before a reference started are read again.
    await new Promise((r) => setTimeout(r, 11_000));
  }, 300_000);

  afterAll(async () => {
    await chmod(join(pg.dataDir, 'walvault_still'), 0o600).catch(() => undefined);
    storage?.close();
    for (const c of restored) await c.destroy();
    await pg?.destroy();
    await cleanupAll();
  });

  it('refuses --incremental with --method stream', async () => {
    const r = await wv(['backup-push', '--method', 'stream', '--incremental']);
    expect(r.code, show(r)).toBe(14);
    expect(r.stderr.trim().split('\n').at(-1)).toMatch(/--incremental needs --method files/);
  });

  it('--incremental with no earlier backup takes a full one and says so', async () => {
    const r = await push('--incremental');
    expect(r.code, show(r)).toBe(0);
    expect(r.stderr).toMatch(/--incremental: no complete format-2 backup of system \d+ on timeline 1 or its ancestors; taking a full backup/);
    ids.full = r.stdout.trim();
    expected.set(ids.full, `${await rows(pg)}#${await balances(pg)}`);
    const info = await sentinel(ids.full);
    expect(info).toMatchObject({ format: 2, method: 'files', type: 'full' });
    expect(info['reference']).toBeUndefined();
    const list = await fileList(ids.full);
    expect(list.type).toBe('full');
    expect(list.blockSize).toBe(8192);
    // Every file above one block has its map; a map object goes with each data object that needs one.
    const big = list.entries.filter((e) => e.type === 'file' && e.size > 8192);
    expect(big.length).toBeGreaterThan(10);
    expect(big.every((e) => e.type === 'file' && e.blocks?.backup === ids.full)).toBe(true);
    const keys = await listKeys(store, bucket, `pg/backups/${ids.full}/blocks/`);
    expect(keys.length).toBeGreaterThan(0);
  });

  it('an incremental after a 1 % page change stores a small fraction, reads only changed files, names the full\'s objects', async () => {
    await chmod(join(pg.dataDir, 'walvault_still'), 0o000);
    await touchOnePercentOfPages();
    await pg.query('INSERT INTO items SELECT 2, g FROM generate_series(1, 100) g');
    await pg.query('CHECKPOINT');
    const r = await push('--incremental');
    expect(r.code, show(r)).toBe(0);
    ids.inc1 = r.stdout.trim();
    expected.set(ids.inc1, `${await rows(pg)}#${await balances(pg)}`);
    expect(r.stderr).toContain(`--incremental: reference backup ${ids.full} (full,`);
    const m = /(\d+) files unchanged since (\S+) \(not read\), (\d+) read/.exec(r.stderr);
    expect(m, r.stderr).not.toBeNull();
    expect(m![2]).toBe(ids.full);
    expect(Number(m![1])).toBeGreaterThan(Number(m![3]));

    const info = await sentinel(ids.inc1);
    expect(info).toMatchObject({ type: 'incremental', reference: ids.full });
    const full = infos.get(ids.full!)!;
    const list = await fileList(ids.inc1);
    expect(list).toMatchObject({ type: 'incremental', reference: ids.full });
    const fullList = await fileList(ids.full!);
    const ratioStored = (info['storedBytes'] as number) / (full['storedBytes'] as number);
    const ratioBytes = ownBytes(list) / ownBytes(fullList);
    console.log(`incremental 1: ${m![1]} files unchanged (not read), ${m![3]} read; stored ${info['storedBytes']} of the full's ${full['storedBytes']} (${(100 * ratioStored).toFixed(2)} %), ` +
      `file bytes ${ownBytes(list)} of ${ownBytes(fullList)} (${(100 * ratioBytes).toFixed(2)} %)`);
    expect(ratioBytes).toBeLessThan(0.1);
    expect(ratioStored).toBeLessThan(0.25);
    expect(new Set(list.objects.map((o) => o.backup))).toEqual(new Set([ids.full, ids.inc1]));
    const still = list.entries.find((e) => e.path === 'walvault_still');
    expect(still?.type === 'file' && still.extents.every((x) => list.objects[x.object]!.backup === ids.full)).toBe(true);
    // pgbench_accounts' main fork changed in a few blocks: pieces of the full and of this backup.
    const rel = await pg.query("SELECT pg_relation_filepath('pgbench_accounts')");
    const accounts = list.entries.find((e) => e.path === rel);
    expect(accounts?.type).toBe('file');
    const backups = new Set(accounts!.type === 'file' ? accounts!.extents.map((x) => list.objects[x.object]!.backup) : []);
    expect(backups).toEqual(new Set([ids.full, ids.inc1]));
    await chmod(join(pg.dataDir, 'walvault_still'), 0o600);
  });

  it('a second incremental builds on the first; laid out from the objects it names, every file and pg_verifybackup check', async () => {
    await pg.query('INSERT INTO items SELECT 3, g FROM generate_series(1, 100) g');
    await switchAndWaitArchived(pg);
    await pg.query('SELECT pg_sleep(1.2)');
    between = await pg.query('SELECT now()');
    await pg.query('SELECT pg_sleep(1.2)');
    await pg.query('INSERT INTO items SELECT 4, g FROM generate_series(1, 100) g');
    await touchOnePercentOfPages();
    await pg.query('CHECKPOINT');
    const r = await push('--incremental');
    expect(r.code, show(r)).toBe(0);
    ids.inc2 = r.stdout.trim();
    expected.set(ids.inc2, `${await rows(pg)}#${await balances(pg)}`);
    expect(r.stderr).toContain(`--incremental: reference backup ${ids.inc1} (incremental,`);
    expect(await sentinel(ids.inc2)).toMatchObject({ type: 'incremental', reference: ids.inc1 });
    const table = await wv(['backup-list']);
    expect(table.stdout.split('\n')[0]).toMatch(/^id\s+type\s+start/);
    expect(table.stdout).toMatch(new RegExp(`${ids.full}\\s+full\\s`));
    expect(table.stdout).toMatch(new RegExp(`${ids.inc2}\\s+incremental\\s`));
    const list = await fileList(ids.inc2);
    // No chain: the list names the objects themselves, in whichever backup stored them.
    expect([...new Set(list.objects.map((o) => o.backup))].sort()).toEqual([ids.full, ids.inc1, ids.inc2].sort());
    const keys = new Set(list.objects.map((o) => `${o.backup}/${o.name}`));
    expect(keys.size).toBe(list.objects.length);

    const contents = new Map<number, Buffer>();
    for (const [i, o] of list.objects.entries()) contents.set(i, await getObject(`backups/${o.backup}/${o.name}`));
    const dir = join(await tempDir('wv-inc-layout'), 'data');
    await mkdir(dir, { mode: 0o700 });
    for (const e of list.entries) {
      if (e.type === 'dir') await mkdir(join(dir, e.path), { mode: 0o700 });
      if (e.type !== 'file') continue;
      const bytes = Buffer.concat(e.extents.map((x) => contents.get(x.object)!.subarray(x.offset, x.offset + x.size)));
      expect(sha(bytes), e.path).toBe(e.sha256);
      await mkdir(dirname(join(dir, e.path)), { recursive: true });
      await writeFile(join(dir, e.path), bytes, { mode: 0o600 });
    }
    await writeFile(join(dir, 'backup_manifest'), await getObject(`backups/${ids.inc2}/backup_manifest`));
    const v = await run(join(PG_BIN_DIR, 'pg_verifybackup'), ['-n', dir]);
    expect(v.code, v.out).toBe(0);
  });

  it.each([['full'], ['inc1'], ['inc2']] as const)('restores the %s backup with exactly its rows', async (which) => {
    const id = ids[which]!;
    expect(id).toBeDefined();
    const c = await restore(id, ['--target-immediate']);
    expect(`${await rows(c)}#${await balances(c)}`).toBe(expected.get(id));
    await c.stop('immediate');
  }, 300_000);

  it('PITR from the first incremental to a time between the incrementals has exactly the rows of that time', async () => {
    const c = await restore(ids.inc1!, ['--target-time', between]);
    expect(await rows(c)).toBe('1|100\n2|100\n3|100');
    await c.stop('immediate');
  }, 300_000);

  it('a damaged reference makes --incremental fail with one clear line, and leaves nothing behind', async () => {
    const garbage = Buffer.from('{"format":2}\n');
    await storage.put(`backups/${ids.inc2}/files.json`, garbage, smallObjectMeta(garbage));
    const before = await listKeys(store, bucket, 'pg/backups/');
    const r = await push('--incremental');
    expect(r.code, show(r)).toBe(14);
    expect(r.stderr.trim().split('\n').at(-1)).toMatch(
      new RegExp(`BackupError: the reference backup ${ids.inc2} is damaged \\(.*files\\.json has SHA-256 [0-9a-f]{64}, its backup\\.json records`),
    );
    expect(r.stdout).toBe('');
    expect(await listKeys(store, bucket, 'pg/backups/')).toEqual(before);
  });
});
