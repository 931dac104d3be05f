import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { lstat, open, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { zstdCompressSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FileEntry } from '../../src/backup/file-list.js';
import { fault, FaultProxy } from '../support/fault-proxy.js';
import { writeFormat2Backup, type Format2Backup } from '../support/format2-fixture.js';
import { chownToPostgres, PG_BIN_DIR, PgCluster, runAsPostgres, startRestoredCluster } from '../support/pg.js';
import { createTestBucket, deleteRaw, putRaw, testStores, writeRepoConfig, type TestStore } from '../support/stores.js';
import { cleanupAll, runWalvault, tempDir, walvaultBin, type WalvaultResult } from '../support/walvault.js';
import { switchAndWaitArchived } from '../support/archiving-cluster.js';

// Issue 10 item 6: backup-fetch of a format-2 backup (file list + data objects) with --jobs, on
// radosgw and PostgreSQL 15. The backup is built by test/support/format2-fixture.ts from a real
// `pg_basebackup -Fp` of a throwaway cluster that archives its WAL through walvault, with
// pg_basebackup's own backup_manifest, so pg_verifybackup checks every restore for real.

const rgw = testStores().filter((s) => s.name === 'rgw');
const MiB = 1024 * 1024;
const ROWS = 60_000;

/** path -> SHA-256 of every file, and the directories, under `dir`. */
async function tree(dir: string, rel = '', out = new Map<string, string>()): Promise<Map<string, string>> {
  for (const name of (await readdir(join(dir, rel))).sort()) {
    const path = rel ? `${rel}/${name}` : name;
    const st = await lstat(join(dir, path));
    if (st.isDirectory()) {
      out.set(`${path}/`, 'dir');
      await tree(dir, path, out);
    } else out.set(path, createHash('sha256').update(await readFile(join(dir, path))).digest('hex'));
  }
  return out;
}

/** Owners and permission bits of everything under `dir`. */
async function owners(dir: string, rel = '', out = new Set<string>()): Promise<Set<string>> {
  for (const name of await readdir(join(dir, rel))) {
    const path = rel ? `${rel}/${name}` : name;
    const st = await lstat(join(dir, path));
    out.add(`${st.uid}:${st.gid} ${st.isDirectory() ? 'd' : 'f'}${(st.mode & 0o7777).toString(8)}`);
    if (st.isDirectory()) await owners(dir, path, out);
  }
  return out;
}

/** path -> d<mode> or f<mode> (octal permission bits) of everything under `dir`. */
async function modesOf(dir: string, rel = '', out = new Map<string, string>()): Promise<Map<string, string>> {
  for (const name of await readdir(join(dir, rel))) {
    const path = rel ? `${rel}/${name}` : name;
    const st = await lstat(join(dir, path));
    out.set(path, `${st.isDirectory() ? 'd' : 'f'}${(st.mode & 0o7777).toString(8)}`);
    if (st.isDirectory()) await modesOf(dir, path, out);
  }
  return out;
}

/** Pids of restore workers still running for `target`. */
async function restoreWorkers(target: string): Promise<string[]> {
  const workers: string[] = [];
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmd.includes('__restore-worker') && cmd.includes(target)) workers.push(pid);
  }
  return workers;
}

describe.each(rgw)('format-2 backup-fetch on $name', (store: TestStore) => {
  let pg: PgCluster;
  let bucket: string;
  let base: string;
  let env: Record<string, string>;
  let proxyEnv: Record<string, string>;
  let proxy: FaultProxy;
  let good: Format2Backup;
  let postgres: { uid: number; gid: number };
  let fixture: (o: { suffix: string; mutate?: Parameters<typeof writeFormat2Backup>[3]['mutate']; reference?: Format2Backup }) => Promise<Format2Backup>;
  const restored: PgCluster[] = [];

  /** As root through the wrapper (the restore_command it writes must be runnable by postgres). */
  const fetchAsRoot = (args: string[], e = env): Promise<WalvaultResult> => runWalvault(['backup-fetch', ...args, '--owner', 'postgres'], { env: e, wrapper: true, timeoutMs: 180_000 });
  const immediate = ['--target-immediate', '--target-action', 'promote'];

  /** The restored directory holds exactly the backed-up files (plus what backup-fetch adds for recovery). */
  async function expectSameFiles(target: string): Promise<void> {
    const got = await tree(target);
    const want = await tree(base);
    expect(got.get('recovery.signal')).toBeDefined();
    got.delete('recovery.signal');
    // backup-fetch appends the recovery settings to postgresql.auto.conf.
    expect((await readFile(join(target, 'postgresql.auto.conf'), 'utf8')).startsWith(await readFile(join(base, 'postgresql.auto.conf'), 'utf8'))).toBe(true);
    got.delete('postgresql.auto.conf');
    want.delete('postgresql.auto.conf');
    expect(got).toEqual(want);
  }

  async function expectRows(target: string): Promise<void> {
    const c = await startRestoredCluster(target, restored);
    expect(await c.query('SELECT count(*), sum(n) FROM items')).toBe(`${ROWS}|${(ROWS * (ROWS + 1)) / 2}`);
    await c.stop();
  }

  const dataGets = (id: string) => {
    const counts = new Map<string, number>();
    for (const r of proxy.log) {
      const m = new RegExp(`/backups/${id}/(data/\\d+|files\\.json)(\\?|$)`).exec(r.url);
      if (r.method === 'GET' && m) counts.set(m[1]!, (counts.get(m[1]!) ?? 0) + 1);
    }
    return counts;
  };

  beforeAll(async () => {
    bucket = await createTestBucket(store, 'restore-files');
    const home = await tempDir('wv-rfiles', { forPostgres: true });
    const configFile = await writeRepoConfig(store, bucket, 'pg', home);
    proxy = await FaultProxy.start({ upstream: store.endpoint });
    const proxyConfig = await writeRepoConfig(store, bucket, 'pg', home, { s3Endpoint: proxy.url });
    const spool = join(await tempDir('wv-rfiles-root'), 'spool');
    env = { WALVAULT_CONFIG: configFile, WALVAULT_SPOOL: spool, AWS_EC2_METADATA_DISABLED: 'true' };
    proxyEnv = { ...env, WALVAULT_CONFIG: proxyConfig };
    const bin = await walvaultBin();
    pg = await PgCluster.create({
      walSegSizeMb: 1,
      conf: { archive_mode: 'on', archive_command: `${bin} --config ${configFile} wal-push %p %f`, archive_timeout: 0 },
    });
    await pg.start({ env: { AWS_EC2_METADATA_DISABLED: 'true' } });
    await pg.query(`CREATE TABLE items AS SELECT g AS n, md5(g::text) AS h FROM generate_series(1, ${ROWS}) g`);
    await switchAndWaitArchived(pg);
    base = join(await tempDir('wv-rfiles-base', { forPostgres: true }), 'base');
    const bb = await runAsPostgres(join(PG_BIN_DIR, 'pg_basebackup'), ['-D', base, '-Fp', '-X', 'none', '--checkpoint=fast', '--manifest-checksums=SHA256', '--no-password'], {
      env: pg.connectionEnv(),
    });
    expect(bb.code, bb.stderr).toBe(0);
    await switchAndWaitArchived(pg);
    const systemIdentifier = await pg.query('SELECT system_identifier FROM pg_control_system()');
    postgres = {
      uid: Number((await runAsPostgres('id', ['-u'])).stdout.trim()),
      gid: Number((await runAsPostgres('id', ['-g'])).stdout.trim()),
    };
    // 1 MiB bundles: files from 128 KiB are objects of their own; some 30 objects in all.
    fixture = (o) => writeFormat2Backup(store, bucket, base, { prefix: 'pg', bundleSize: MiB, systemIdentifier, walSegmentSize: MiB, ...o });
    good = await fixture({ suffix: '' });
  }, 300_000);

  afterAll(async () => {
    for (const c of restored) await c.destroy();
    await pg?.destroy();
    await proxy?.close();
    await cleanupAll();
  });

  it('the fixture is what the test needs: bundles and single-file objects', () => {
    const perObject = new Map<number, number>();
    for (const e of good.list.entries) if (e.type === 'file' && e.extents[0]) perObject.set(e.extents[0].object, (perObject.get(e.extents[0].object) ?? 0) + 1);
    expect(good.list.objects.length).toBeGreaterThan(8);
    expect([...perObject.values()].some((n) => n > 20)).toBe(true);
    expect([...perObject.values()].filter((n) => n === 1).length).toBeGreaterThan(2);
  });

  it('--jobs 1 run as the data directory owner: the exact files, pg_verifybackup passes, the cluster starts with the rows', async () => {
    const target = join(await tempDir('wv-rfiles-j1', { forPostgres: true }), 'data');
    const r = await runWalvault(['backup-fetch', good.id, target, '--jobs', '1', ...immediate], {
      asPostgres: true,
      env: { WALVAULT_CONFIG: env['WALVAULT_CONFIG']!, AWS_EC2_METADATA_DISABLED: 'true' },
      timeoutMs: 180_000,
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(new RegExp(`restored .* \\(${good.list.entries.filter((e) => e.type === 'file').length} files from ${good.list.objects.length} objects, \\d+ directories\\) into ${target} with 1 job in`));
    expect(r.stderr).toMatch(/pg_verifybackup: every file matches backup_manifest/);
    await expectSameFiles(target);
    await expectRows(target);
  }, 300_000);

  it('--jobs 4 as root for owner postgres: restore workers as postgres, every file and directory postgres\'s', async () => {
    const target = join(await tempDir('wv-rfiles-j4', { forPostgres: true }), 'data');
    const r = await fetchAsRoot([good.id, target, '--jobs', '4', ...immediate]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(new RegExp(`into ${target} as uid ${postgres.uid} with 4 jobs in`));
    expect(r.stderr).toMatch(/pg_verifybackup: every file matches backup_manifest/);
    await expectSameFiles(target);
    // pg_basebackup -Fp wrote 0700 directories and 0600 files; so does the restore, as postgres.
    expect([...(await owners(target))].sort()).toEqual([`${postgres.uid}:${postgres.gid} d700`, `${postgres.uid}:${postgres.gid} f600`]);
    await expectRows(target);
  }, 300_000);

  for (const as of ['root for postgres', 'postgres'] as const) {
    it(`a connection reset in the middle of one object costs that object only (${as}: ${as === 'postgres' ? 'a bundle, in-process' : 'a large file, restore workers'})`, async () => {
      const files = new Map<number, number>();
      for (const e of good.list.entries) if (e.type === 'file' && e.extents[0]) files.set(e.extents[0].object, (files.get(e.extents[0].object) ?? 0) + 1);
      const candidates = good.list.objects.filter((_, i) => (as === 'postgres' ? (files.get(i) ?? 0) > 3 : files.get(i) === 1));
      const victim = candidates.sort((a, b) => b.storedBytes - a.storedBytes)[0]!;
      expect(victim.storedBytes).toBeGreaterThan(8 * 1024);
      // Halfway through: the files before that point were written, and are removed before the retry.
      const rule = proxy.addRule({
        method: 'GET',
        path: new RegExp(`/backups/${good.id}/${victim.name}(\\?|$)`),
        first: 1,
        action: fault.reset('response-body', Math.floor(victim.storedBytes / 2)),
      });
      proxy.log.length = 0;
      const target = join(await tempDir('wv-rfiles-reset', { forPostgres: true }), 'data');
      let r: WalvaultResult;
      try {
        r =
          as === 'postgres'
            ? await runWalvault(['backup-fetch', good.id, target, '--jobs', '4', ...immediate], {
                asPostgres: true,
                env: { WALVAULT_CONFIG: proxyEnv['WALVAULT_CONFIG']!, AWS_EC2_METADATA_DISABLED: 'true' },
                timeoutMs: 180_000,
              })
            : await fetchAsRoot([good.id, target, '--jobs', '4', ...immediate], proxyEnv);
      } finally {
        proxy.removeRule(rule);
      }
      expect(r.code, r.stderr).toBe(0);
      expect(rule.injected).toBe(1);
      expect(r.stderr).toMatch(new RegExp(`get backups/${good.id}/${victim.name}: attempt 1 failed \\(.*(ECONNRESET|reset|aborted)`));
      const expected = new Map(good.list.objects.map((o) => [o.name, o === victim ? 2 : 1]));
      expected.set('files.json', 1);
      expect(dataGets(good.id)).toEqual(expected);
      expect(r.stderr).toMatch(/pg_verifybackup: every file matches backup_manifest/);
      await expectSameFiles(target);
    }, 300_000);
  }

  it("an incremental backup with files in pieces across its own and an earlier backup's objects, as root: exact; a reset on an earlier backup's object costs that object only", async () => {
    const inc = await fixture({ suffix: '_8', reference: good });
    const pieced = inc.list.entries.filter((e): e is FileEntry => e.type === 'file' && e.extents.length === 3);
    const borrowed = inc.list.objects.filter((o) => o.backup === good.id);
    expect(pieced.length).toBeGreaterThan(2);
    expect(borrowed.length).toBe(pieced.length);
    expect(inc.list.type).toBe('incremental');
    const victim = [...borrowed].sort((a, b) => b.storedBytes - a.storedBytes)[0]!;
    const rule = proxy.addRule({ method: 'GET', path: new RegExp(`/backups/${good.id}/${victim.name}(\\?|$)`), first: 1, action: fault.reset('response-body', Math.floor(victim.storedBytes / 2)) });
    proxy.log.length = 0;
    const target = join(await tempDir('wv-rfiles-pieced', { forPostgres: true }), 'data');
    let r: WalvaultResult;
    try {
      r = await fetchAsRoot([inc.id, target, '--jobs', '4', ...immediate], proxyEnv);
    } finally {
      proxy.removeRule(rule);
    }
    expect(r.code, r.stderr).toBe(0);
    expect(rule.injected).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`get backups/${good.id}/${victim.name}: attempt 1 failed`));
    expect(r.stderr).toMatch(new RegExp(`, ${pieced.length} files in pieces, objects of 1 earlier backups\\) into ${target} as uid ${postgres.uid} with 4 jobs`));
    // Each object once (the reset one twice), its own from this backup, the borrowed ones from the earlier one.
    const own = new Map<string, number>(inc.list.objects.filter((o) => o.backup === inc.id).map((o) => [o.name, 1]));
    own.set('files.json', 1);
    expect(dataGets(inc.id)).toEqual(own);
    expect(dataGets(good.id)).toEqual(new Map(borrowed.map((o) => [o.name, o === victim ? 2 : 1])));
    expect(r.stderr).toMatch(/pg_verifybackup: every file matches backup_manifest/);
    await expectSameFiles(target);
    expect([...(await owners(target))].sort()).toEqual([`${postgres.uid}:${postgres.gid} d700`, `${postgres.uid}:${postgres.gid} f600`]);
    await expectRows(target);
  }, 300_000);

  it('trust: an incremental backup naming objects of a backup that is not in the repository is refused before anything is written', async () => {
    const ghost = 'base_000000010000000000000001_20200101T000000Z';
    const inc = await fixture({
      suffix: '_9',
      reference: good,
      mutate: (list) => {
        for (const o of list.objects) if (o.backup === good.id) o.backup = ghost;
      },
    });
    proxy.log.length = 0;
    const parent = await tempDir('wv-rfiles-ghost', { forPostgres: true });
    const r = await fetchAsRoot([inc.id, join(parent, 'data'), '--jobs', '4'], proxyEnv);
    expect(r.code, r.stderr).toBe(14);
    expect(r.stderr.trim().split('\n').at(-1)).toMatch(new RegExp(`BackupError: .*files\\.json uses objects of backup ${ghost}, which has no backup\\.json in this repository; refusing to restore backup ${inc.id}`));
    expect(await readdir(parent)).toEqual([]);
    expect([...dataGets(inc.id).keys()]).toEqual(['files.json']);
  }, 300_000);

  it('a file whose bytes do not match its SHA-256 in the list fails with IntegrityError and leaves the target empty', async () => {
    let victim: FileEntry | undefined;
    const bad = await fixture({
      suffix: '_2',
      mutate: (list) => {
        const files = list.entries.filter((e): e is FileEntry => e.type === 'file' && e.size > 0);
        // A file in the middle of a bundle: files before it in that object were already written.
        const at = (f: FileEntry) => f.extents[0]!;
        victim = files.find((f) => at(f).offset > 0 && files.some((g) => at(g).object === at(f).object && at(g).offset > at(f).offset));
        victim!.sha256 = createHash('sha256').update('not these bytes').digest('hex');
      },
    });
    const target = await tempDir('wv-rfiles-integrity', { forPostgres: true });
    const r = await fetchAsRoot([bad.id, target, '--jobs', '4', ...immediate]);
    expect(r.code, r.stderr).toBe(10);
    expect(r.stderr).toMatch(new RegExp(`ERROR: IntegrityError: .*${victim!.path} \\(bytes \\d+-\\d+ of .*\\) has SHA-256 [0-9a-f]{64}, the file list records`));
    expect(await readdir(target)).toEqual([]);
  }, 300_000);

  it('trust: a hostile files.json (a path out of the data directory, an object of another backup) is refused before anything is written', async () => {
    const escape = await fixture({
      suffix: '_3',
      mutate: (list) => {
        const f = list.entries.find((e): e is FileEntry => e.type === 'file')!;
        list.entries.push({ ...f, path: '../x' });
      },
    });
    const foreign = await fixture({
      suffix: '_4',
      mutate: (list) => {
        list.objects[0]!.backup = good.id;
      },
    });
    for (const [b, why] of [
      [escape, /BackupError: .*files\.json is not a valid backup file list: entries\[\d+\]\.path "\.\.\/x" is not a safe relative path/],
      [foreign, /BackupError: .*files\.json: data\/000000 belongs to backup \S+, not to this one; refusing to restore backup/],
    ] as const) {
      proxy.log.length = 0;
      const parent = await tempDir('wv-rfiles-hostile', { forPostgres: true });
      const r = await fetchAsRoot([b.id, join(parent, 'data'), '--jobs', '4'], proxyEnv);
      expect(r.code, r.stderr).toBe(14);
      expect(r.stderr).toMatch(why);
      expect(existsSync(join(parent, 'data'))).toBe(false);
      // (`../x` would have been <parent>/x.)
      expect(await readdir(parent)).toEqual([]);
      // files.json was read; no data object was.
      expect([...dataGets(b.id).keys()]).toEqual(['files.json']);
      expect([...dataGets(good.id).keys()]).toEqual([]);
    }
  }, 300_000);

  it('a data object missing from the store (exit 14), or not the one the list records (CorruptObject, exit 10, not retried): the target is emptied', async () => {
    const missing = await fixture({ suffix: '_6' });
    await deleteRaw(store, bucket, `pg/backups/${missing.id}/data/000001`);
    const swapped = await fixture({ suffix: '_7' });
    const other = zstdCompressSync(Buffer.from('other bytes'));
    await putRaw(store, bucket, `pg/backups/${swapped.id}/data/000002`, other, {
      'walvault-sha256': createHash('sha256').update('other bytes').digest('hex'),
      'walvault-size': '11',
      'walvault-codec': 'zstd',
    });
    for (const [b, code, why] of [
      [missing, 14, /ERROR: BackupError: .*data\/000001 is missing: backup \S+ is damaged/],
      [swapped, 10, /ERROR: CorruptObject: .*data\/000002 holds 11 bytes \(zstd\) with SHA-256 [0-9a-f]{64}; the file list records \d+ bytes/],
    ] as const) {
      proxy.log.length = 0;
      const target = await tempDir('wv-rfiles-damaged', { forPostgres: true });
      const r = await fetchAsRoot([b.id, target, '--jobs', '4'], proxyEnv);
      expect(r.code, r.stderr).toBe(code);
      expect(r.stderr.trim().split('\n').at(-1)).toMatch(why);
      expect(await readdir(target)).toEqual([]);
      expect(dataGets(b.id).get(b === missing ? 'data/000001' : 'data/000002')).toBe(1);
    }
  }, 300_000);

  it('SIGKILL in the middle of a parallel restore as root, then the same command again: it goes on, fetches only the objects not done, and the result is exact', async () => {
    const largest = [...good.list.objects].sort((a, b) => b.storedBytes - a.storedBytes)[0]!;
    const rule = proxy.addRule({ method: 'GET', path: new RegExp(`/backups/${good.id}/${largest.name}(\\?|$)`), first: 1, action: fault.stall('response-body', 4096) });
    const target = join(await tempDir('wv-rfiles-kill', { forPostgres: true }), 'data');
    const args = [good.id, target, '--jobs', '4', ...immediate];
    const child = spawn(await walvaultBin(), ['backup-fetch', ...args, '--owner', 'postgres'], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root', ...proxyEnv },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const closed = new Promise<number | null>((resolve) => child.on('close', resolve));
    const record = join(target, 'walvault.restore');
    const doneLines = async () => (await readFile(record, 'utf8').catch(() => '')).split('\n').filter((l) => l.startsWith('done backups/'));
    try {
      // Every object but the stalled one done (the stalled one holds one of the four jobs).
      const until = Date.now() + 90_000;
      while ((await doneLines()).length < good.list.objects.length - 1 && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
      expect((await doneLines()).length, stderr).toBe(good.list.objects.length - 1);
      child.kill('SIGKILL');
      await closed;
    } finally {
      proxy.removeRule(rule);
      child.kill('SIGKILL');
    }
    for (let i = 0; i < 100 && (await restoreWorkers(target)).length > 0; i++) await new Promise((r) => setTimeout(r, 100));
    expect(await restoreWorkers(target)).toEqual([]);
    // Half-restored: PostgreSQL cannot start on it (no global/pg_control until the very end).
    expect(existsSync(join(target, 'global/pg_control'))).toBe(false);
    const done = new Set((await doneLines()).map((l) => l.slice('done backups/'.length + good.id.length + 1)));
    expect(done.has(largest.name)).toBe(false);

    // Another backup into it is refused, and leaves it as it is.
    const other = await fixture({ suffix: '_10' });
    const refused = await fetchAsRoot([other.id, target, '--jobs', '4', ...immediate], proxyEnv);
    expect(refused.code, refused.stderr).toBe(14);
    expect(refused.stderr.trim().split('\n').at(-1)).toMatch(`${target} holds an interrupted restore of backup ${good.id}, not of ${other.id}`);
    expect(existsSync(record)).toBe(true);

    proxy.log.length = 0;
    const r = await fetchAsRoot(args, proxyEnv);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(`resuming the restore of ${good.id} into ${target}: ${done.size} of ${good.list.objects.length} objects were restored before`);
    const expected = new Map(good.list.objects.filter((o) => !done.has(o.name)).map((o) => [o.name, 1]));
    expected.set('files.json', 1);
    expect(dataGets(good.id)).toEqual(expected);
    console.log(`resumed after SIGKILL: ${done.size} of ${good.list.objects.length} objects done before, ${expected.size - 1} fetched by the second run`);
    expect(r.stderr).toMatch(/pg_verifybackup: every file matches backup_manifest/);
    await expectSameFiles(target);
    expect([...(await owners(target))].sort()).toEqual([`${postgres.uid}:${postgres.gid} d700`, `${postgres.uid}:${postgres.gid} f600`]);
    await expectRows(target);
  }, 300_000);

  it('--delta over a restored cluster that ran and changed rows: refused while it runs, then exact again, fetching only the objects of the files that changed', async () => {
    const target = join(await tempDir('wv-rfiles-delta', { forPostgres: true }), 'data');
    const first = await fetchAsRoot([good.id, target, '--jobs', '4', ...immediate]);
    expect(first.code, first.stderr).toBe(0);
    const c = await startRestoredCluster(target, restored);
    await c.query("UPDATE items SET h = 'changed' WHERE n <= 2000");
    await c.query('CHECKPOINT');
    const running = await fetchAsRoot([good.id, target, '--delta', ...immediate], proxyEnv);
    expect(running.code, running.stderr).toBe(14);
    expect(running.stderr.trim().split('\n').at(-1)).toMatch(new RegExp(`BackupError: ${target} is in use: postmaster.pid names process \\d+, which is running; stop PostgreSQL`));
    expect(await c.query("SELECT count(*) FROM items WHERE h = 'changed'")).toBe('2000');
    await c.stop();

    // The objects holding a file that is not what the backup holds (global/pg_control is always rewritten).
    const changed = new Set<string>();
    for (const e of good.list.entries) {
      if (e.type !== 'file' || e.extents.length === 0) continue;
      const now = await readFile(join(target, e.path)).catch(() => null);
      if (!now || e.path === 'global/pg_control' || createHash('sha256').update(now).digest('hex') !== e.sha256) {
        for (const x of e.extents) changed.add(good.list.objects[x.object]!.name);
      }
    }
    expect(changed.size).toBeGreaterThan(0);
    expect(changed.size).toBeLessThan(good.list.objects.length);
    proxy.log.length = 0;
    const r = await fetchAsRoot([good.id, target, '--delta', '--jobs', '4', ...immediate], proxyEnv);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(new RegExp(`--delta: \\d+ of \\d+ files in ${target} already match the backup and stay, \\d+ other entries removed .*; ${changed.size} of ${good.list.objects.length} objects to fetch`));
    const expected = new Map([...changed].map((n) => [n, 1]));
    expected.set('files.json', 1);
    expect(dataGets(good.id)).toEqual(expected);
    console.log(`--delta: ${/--delta: [^\n]*/.exec(r.stderr)?.[0]}`);
    expect(r.stderr).toMatch(/pg_verifybackup: every file matches backup_manifest/);
    await expectSameFiles(target);
    expect([...(await owners(target))].sort()).toEqual([`${postgres.uid}:${postgres.gid} d700`, `${postgres.uid}:${postgres.gid} f600`]);
    await expectRows(target);
  }, 300_000);

  it('--delta refuses a data directory of another system, or none, before removing anything', async () => {
    const other = await PgCluster.create({ walSegSizeMb: 1 });
    restored.push(other);
    const before = (await tree(other.dataDir)).size;
    const r = await fetchAsRoot([good.id, other.dataDir, '--delta']);
    expect(r.code, r.stderr).toBe(14);
    expect(r.stderr.trim().split('\n').at(-1)).toMatch(new RegExp(`BackupError: ${other.dataDir} belongs to database system \\d+, the backup to ${good.info.systemIdentifier}; backup-fetch --delta restores over the same system only`));
    expect((await tree(other.dataDir)).size).toBe(before);
    const parent = await tempDir('wv-rfiles-delta-none', { forPostgres: true });
    const none = await fetchAsRoot([good.id, join(parent, 'data'), '--delta']);
    expect(none.code, none.stderr).toBe(14);
    expect(none.stderr).toMatch(/does not exist: backup-fetch --delta restores over an existing data directory/);
  }, 300_000);

  it('SIGTERM in the middle of a parallel restore as root: exit 14 within seconds, no restore worker left, the new directory removed', async () => {
    const largest = [...good.list.objects].sort((a, b) => b.storedBytes - a.storedBytes)[0]!;
    const rule = proxy.addRule({ method: 'GET', path: new RegExp(`/backups/${good.id}/${largest.name}(\\?|$)`), first: 1, action: fault.stall('response-body', 4096) });
    const parent = await tempDir('wv-rfiles-term', { forPostgres: true });
    const target = join(parent, 'data');
    const child = spawn(await walvaultBin(), ['backup-fetch', good.id, target, '--owner', 'postgres', '--jobs', '4'], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root', ...proxyEnv },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const closed = new Promise<number | null>((resolve) => child.on('close', resolve));
    try {
      const until = Date.now() + 60_000;
      while (rule.injected === 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
      expect(rule.injected, stderr).toBe(1);
      await new Promise((r) => setTimeout(r, 500));
      const sent = Date.now();
      child.kill('SIGTERM');
      const code = await closed;
      expect(code, stderr).toBe(14);
      expect(Date.now() - sent).toBeLessThan(15_000);
      expect(stderr.trim().split('\n').at(-1)).toMatch(/BackupError: interrupted by SIGTERM/);
    } finally {
      proxy.removeRule(rule);
      child.kill('SIGKILL');
    }
    expect(existsSync(target)).toBe(false);
    expect(await restoreWorkers(target)).toEqual([]);
  }, 300_000);

  it('memory: a 250 MB file and 32 MiB bundles restore with jobs 4 in a bounded peak RSS (as postgres, in-process)', async () => {
    // Its own larger backup, taken after the others so they stay small. The large file is written
    // straight into the data directory (pg_basebackup copies every file there): a table that size
    // made ~300 MB of WAL to archive first, over a minute of the suite on 2 cores. Hex text, which
    // compresses about as a table of md5 values did.
    await writeLargeFile(join(pg.dataDir, 'walvault-test-large-file'), 250 * 1000 * 1000);
    const bigBase = join(await tempDir('wv-rfiles-big', { forPostgres: true }), 'base');
    const bb = await runAsPostgres(join(PG_BIN_DIR, 'pg_basebackup'), ['-D', bigBase, '-Fp', '-X', 'none', '--checkpoint=fast', '--manifest-checksums=SHA256', '--no-password'], {
      env: pg.connectionEnv(),
    });
    expect(bb.code, bb.stderr).toBe(0);
    await switchAndWaitArchived(pg);
    const systemIdentifier = await pg.query('SELECT system_identifier FROM pg_control_system()');
    const big = await writeFormat2Backup(store, bucket, bigBase, { prefix: 'pg', bundleSize: 32 * MiB, systemIdentifier, walSegmentSize: MiB, suffix: '_5' });
    const largest = Math.max(...big.list.entries.map((e) => (e.type === 'file' ? e.size : 0)));
    expect(largest).toBeGreaterThan(200 * 1000 * 1000);
    const target = join(await tempDir('wv-rfiles-mem', { forPostgres: true }), 'data');
    // As postgres through the wrapper (sh execs node: the pid is walvault's), VmHWM polled.
    const child = spawn(await walvaultBin(), ['backup-fetch', big.id, target, '--jobs', '4', ...immediate], {
      uid: postgres.uid,
      gid: postgres.gid,
      cwd: '/',
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/var/lib/postgresql', WALVAULT_CONFIG: env['WALVAULT_CONFIG']!, AWS_EC2_METADATA_DISABLED: 'true' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    let peakKib = 0;
    const poll = setInterval(() => {
      readFile(`/proc/${child.pid}/status`, 'utf8').then(
        (t) => (peakKib = Math.max(peakKib, Number(/VmHWM:\s+(\d+)/.exec(t)?.[1] ?? 0))),
        () => undefined,
      );
    }, 20);
    const started = Date.now();
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    clearInterval(poll);
    const secs = (Date.now() - started) / 1000;
    expect(code, stderr).toBe(0);
    console.log(`format-2 restore of ${(big.info.sizeBytes / MiB).toFixed(0)} MiB in ${big.list.objects.length} objects, jobs 4, as postgres: ${secs.toFixed(1)} s, peak RSS ${(peakKib / 1024).toFixed(0)} MiB`);
    expect(peakKib / 1024).toBeLessThan(256);
    expect(stderr).toMatch(/pg_verifybackup: every file matches backup_manifest/);
  }, 600_000);
});

// The round trip with the real writer (backup-push --method files, file-engine.ts), on a cluster
// initialised with group access (initdb -g: directories 0750, files 0640), restored as the owner
// with four jobs: the modes come back as they were, the files as pg_verifybackup expects.
describe.each(rgw)('round trip: backup-push --method files, backup-fetch --jobs 4, on $name', (store: TestStore) => {
  let pg: PgCluster;
  let configFile: string;
  const restored: PgCluster[] = [];

  beforeAll(async () => {
    const bucket = await createTestBucket(store, 'files-roundtrip');
    const home = await tempDir('wv-rtrip', { forPostgres: true });
    configFile = await writeRepoConfig(store, bucket, 'pg', home);
    const bin = await walvaultBin();
    pg = await PgCluster.create({
      walSegSizeMb: 1,
      initdbArgs: ['-g'],
      conf: { archive_mode: 'on', archive_command: `${bin} --config ${configFile} wal-push %p %f`, archive_timeout: 0 },
    });
    await pg.start({ env: { AWS_EC2_METADATA_DISABLED: 'true' } });
    await pg.query(`CREATE TABLE items AS SELECT g AS n, md5(g::text) AS h FROM generate_series(1, ${ROWS}) g`);
  }, 300_000);

  afterAll(async () => {
    for (const c of restored) await c.destroy();
    await pg?.destroy();
    await cleanupAll();
  });

  it('restores what backup-push --method files stored: same files and modes, pg_verifybackup passes, the rows are there', async () => {
    const env = { WALVAULT_CONFIG: configFile, AWS_EC2_METADATA_DISABLED: 'true', WALVAULT_BACKUP_WAIT_TIMEOUT: '60' };
    const push = await runWalvault(['backup-push', '--method', 'files', '--jobs', '2', '--backup-bundle-size', '1MiB'], {
      asPostgres: true,
      env: { ...env, ...pg.connectionEnv() },
      timeoutMs: 240_000,
    });
    expect(push.code, push.stderr).toBe(0);
    const id = push.stdout.trim();
    const target = join(await tempDir('wv-rtrip-restore', { forPostgres: true }), 'data');
    const r = await runWalvault(['backup-fetch', id, target, '--jobs', '4', '--target-immediate', '--target-action', 'promote'], { asPostgres: true, env, timeoutMs: 240_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/with 4 jobs in .*; SHA-256 of every object and file verified/);
    expect(r.stderr).toMatch(/pg_verifybackup: every file matches backup_manifest/);
    // Every directory and file below the top keeps the group bits initdb -g gave it; 0600: the
    // files backup-fetch writes after the extraction, and backup_label, which backup-push records so.
    const modes = await modesOf(target);
    const owner = [...modes].filter(([, m]) => m === 'f600').map(([p]) => p).sort();
    expect(owner).toEqual(['backup_label', 'backup_manifest', 'recovery.signal']);
    expect(new Set([...modes].filter(([p]) => !owner.includes(p)).map(([, m]) => m))).toEqual(new Set(['d750', 'f640']));
    const c = await startRestoredCluster(target, restored);
    expect(await c.query('SELECT count(*), sum(n) FROM items')).toBe(`${ROWS}|${(ROWS * (ROWS + 1)) / 2}`);
  }, 300_000);
});

/** `size` bytes of random hex text (compresses about 2:1, as md5 text does), owned by postgres. */
async function writeLargeFile(path: string, size: number): Promise<void> {
  const fh = await open(path, 'wx', 0o600);
  try {
    for (let written = 0; written < size; ) {
      const chunk = Buffer.from(randomBytes(MiB / 2).toString('hex')).subarray(0, Math.min(MiB, size - written));
      await fh.write(chunk);
      written += chunk.length;
    }
  } finally {
    await fh.close();
  }
  await chownToPostgres(path);
}
