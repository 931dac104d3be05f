// Look-ahead push (wal-push also uploads the next .ready files and records them in the spool) and its
// fast path (PostgreSQL's own call for such a file is answered from the record when the local file's
// identity, or else its SHA-256, is unchanged: no network, no AWS SDK), then the whole thing under a
// real PostgreSQL: an archive made with look-ahead, restored through restore_command with prefetch.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { cp, mkdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chownToPostgres, PgCluster, PG_BIN_DIR, runAsPostgres } from '../support/pg.js';
import { fault, FaultProxy } from '../support/fault-proxy.js';
import { createTestBucket, envFor, getRaw, listKeys, testStores, writeRepoConfig, type TestStore } from '../support/stores.js';
import { newestMark } from '../support/marks.js';
import { writeFakeSegment } from '../support/wal-fixtures.js';
import { cleanupAll, REPO_ROOT, runWalvault, tempDir, walvaultBin } from '../support/walvault.js';
import { until } from '../support/until.js';
import { RACY_MARGIN_NS } from '../../src/fs/file-identity.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const store: TestStore = testStores().find((s) => s.name === 'rgw') ?? testStores()[0]!;
type Seg = Awaited<ReturnType<typeof writeFakeSegment>>;

/** Look-ahead records (pushed/<name>.json) below a spool. */
function findRecords(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...findRecords(p));
    else if (p.includes('/pushed/') && e.name.endsWith('.json')) out.push(e.name);
  }
  return out;
}

/** Kills prefetch workers a test left behind (they exit by themselves after a few idle seconds). */
function killWorkers(dir: string): void {
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name === 'worker.lock') {
        try {
          process.kill(Number(readFileSync(p, 'utf8')), 'SIGTERM');
        } catch {
          // gone already
        }
      }
    }
  };
  try {
    walk(dir);
  } catch {
    // nothing there
  }
}

describe(`look-ahead push on ${store.name}`, () => {
  let bucket: string;
  let work: string;
  const proxies: FaultProxy[] = [];
  beforeAll(async () => {
    bucket = await createTestBucket(store, 'lookahead');
    work = await tempDir('wv-lookahead');
  });
  afterAll(async () => {
    killWorkers(work);
    for (const p of proxies) await p.close();
    await cleanupAll();
  });

  async function setup(label: string, segnos: number[], extra: string[] = []) {
    const dir = join(work, label);
    const pgdata = join(dir, 'pgdata');
    const walDir = join(pgdata, 'pg_wal');
    await mkdir(join(walDir, 'archive_status'), { recursive: true });
    const segs: Seg[] = [];
    for (const n of segnos) {
      const seg = await writeFakeSegment(walDir, n, { seed: n });
      await writeFile(join(walDir, 'archive_status', `${seg.name}.ready`), '');
      segs.push(seg);
    }
    for (const name of extra) await writeFile(join(walDir, 'archive_status', `${name}.ready`), '');
    // Files changed within RACY_MARGIN_NS before the look-ahead reads them get no identity recorded
    // (src/fs/file-identity.ts); PostgreSQL's segments are older than that by the time they are ready.
    await new Promise((r) => setTimeout(r, Number(RACY_MARGIN_NS / 1_000_000n) + 50));
    // The store is reached through a proxy so that it can be "down" at the same endpoint: the spool
    // (and its look-ahead records) belongs to one endpoint, another endpoint is another repository.
    const proxy = await FaultProxy.start({ upstream: store.endpoint });
    proxies.push(proxy);
    const env = { ...envFor(store, bucket, label), AWS_ENDPOINT_URL_S3: proxy.url, WALVAULT_SPOOL: join(dir, 'spool'), WALVAULT_DEADLINE: '20', WALVAULT_HIGH_WATER_INTERVAL: '0.001' };
    const down = { ...env, WALVAULT_DEADLINE: '2', WALVAULT_RETRY_MAX_DELAY: '0.2' };
    /** Runs `fn` while every request to the store is refused. */
    const offline = async <T>(fn: () => T | Promise<T>): Promise<T> => {
      const rule = proxy.addRule({ name: 'store down', action: fault.reset('before') });
      try {
        return await fn();
      } finally {
        proxy.removeRule(rule);
      }
    };
    const push = (seg: { name: string }, e: Record<string, string> = env) => {
      const run = () => runWalvault(['wal-push', `pg_wal/${seg.name}`, seg.name], { env: e, cwd: pgdata });
      return e === down ? offline(run) : run();
    };
    const stored = async (name: string) => {
      const key = /^[0-9A-F]{24}$/.test(name) ? `${label}/wal/${name.slice(0, 16)}/${name}` : `${label}/wal/${name}`;
      return (await getRaw(store, bucket, key))?.metadata['walvault-sha256'];
    };
    return { dir, pgdata, walDir, segs, env, down, offline, push, stored };
  }

  it('uploads the next ready files with their SHA-256, and their own wal-push needs neither the network nor the SDK', async () => {
    const history = '1\t0/3000000\tno recovery target specified\n';
    const t = await setup('basic', [1, 2, 3, 4, 5, 6], ['00000002.history']);
    await writeFile(join(t.walDir, '00000002.history'), history);
    const [s1, s2, s3, s4] = t.segs as [Seg, Seg, Seg, Seg];

    const r = await t.push(s1);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/pushed 000000010000000000000001 .*look-ahead uploaded 6 more \(000000010000000000000002\.\.00000002\.history\)/);
    for (const seg of t.segs) expect(await t.stored(seg.name), seg.name).toBe(sha(seg.data));
    expect(await t.stored('00000002.history')).toBe(sha(Buffer.from(history)));
    // The archived range may now claim the whole contiguous run.
    const mark = await newestMark(store, bucket, 'basic');
    expect(mark!.mark).toMatchObject({ first: s1.name, last: t.segs[5]!.name });

    // PostgreSQL's own call for s2, with the store unreachable: answered from the record, the file
    // unread because its identity is the one recorded around the upload's read.
    const fast = await t.push(s2, t.down);
    expect(fast.code, fast.stderr).toBe(0);
    expect(fast.stderr).toMatch(/000000010000000000000002 was uploaded ahead to s3:\/\/.*\(verified by identity: .*SHA-256 [0-9a-f]{16}\.\.\. was computed\)/);
    expect(fast.ms).toBeLessThan(2000);

    // The same from a build without the S3 driver chunks: the fast path never imports the SDK.
    const noSdk = join(t.dir, 'nosdk');
    await cp(join(REPO_ROOT, 'dist'), noSdk, { recursive: true });
    const removed: string[] = [];
    for (const f of readdirSync(join(noSdk, 'chunks'))) {
      // (esbuild names each bundled module's source path, relative and possibly through a symlinked
      // node_modules such as a git worktree's; package.json's text merely lists the SDK)
      if (/^\/\/ (?:\.\.\/)*(?:[\w.-]+\/)*node_modules\/@aws-sdk\//m.test(readFileSync(join(noSdk, 'chunks', f), 'utf8'))) {
        await rm(join(noSdk, 'chunks', f));
        removed.push(f);
      }
    }
    expect(removed.length).toBeGreaterThan(0);
    const run = (seg: Seg) =>
      spawnSync(process.execPath, [join(noSdk, 'walvault.mjs'), 'wal-push', `pg_wal/${seg.name}`, seg.name], {
        cwd: t.pgdata,
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: t.dir, ...t.down },
        encoding: 'utf8',
      });
    const viaNoSdk = await t.offline(() => run(s3));
    expect(viaNoSdk.status, viaNoSdk.stderr).toBe(0);
    expect(viaNoSdk.stderr).toMatch(/uploaded ahead/);
    // ...and that build really cannot reach S3: a file without a record fails there.
    await rm(join(t.dir, 'spool', 'repos'), { recursive: true });
    const slow = await t.offline(() => run(s4));
    expect(slow.status).not.toBe(0);
    expect(slow.stderr).toMatch(/Cannot find module|ERR_MODULE_NOT_FOUND|InternalError/);
  });

  it('never takes a changed file under a recorded name for uploaded', async () => {
    const t = await setup('stale', [0x11, 0x12, 0x13, 0x14]);
    const [s1, s2, s3, s4] = t.segs as [Seg, Seg, Seg, Seg];
    expect((await t.push(s1)).code).toBe(0);
    expect(await t.stored(s2.name)).toBe(sha(s2.data));

    // Same name, other bytes (a rewound or re-initialised cluster): with the store down, not 0.
    const other = Buffer.from(s2.data);
    other[5000]! ^= 0xff;
    await writeFile(s2.path, other);
    const offline = await t.push(s2, t.down);
    expect(offline.code, offline.stderr).not.toBe(0);
    expect(offline.stderr).toMatch(/look-ahead record for 000000010000000000000012 not trusted \(SHA-256 /);
    // With the store up: the normal no-overwrite rule refuses it, the archived object stays.
    const conflict = await t.push(s2);
    expect(conflict.code, conflict.stderr).toBe(7);
    expect(conflict.stderr).toContain(sha(other));
    expect(await t.stored(s2.name)).toBe(sha(s2.data));

    // Truncated: not trusted either.
    await writeFile(s3.path, s3.data.subarray(0, 4096));
    const truncated = await t.push(s3, t.down);
    expect(truncated.code).not.toBe(0);
    expect(truncated.stderr).toMatch(/not trusted \(size 4096 differs/);

    // The same bytes written anew (another inode, another mtime): content decides, still trusted.
    await rm(s4.path);
    await writeFile(s4.path, s4.data);
    const rewritten = await t.push(s4, t.down);
    expect(rewritten.code, rewritten.stderr).toBe(0);
  });

  it('answers by identity only while the file is unchanged: a rewrite of the same size is re-hashed and refused, and fastPathHash always re-hashes', async () => {
    const t = await setup('identity', [0x51, 0x52, 0x53, 0x54]);
    const [s1, s2, s3, s4] = t.segs as [Seg, Seg, Seg, Seg];
    expect((await t.push(s1)).code).toBe(0);
    for (const seg of [s2, s3, s4]) expect(await t.stored(seg.name), seg.name).toBe(sha(seg.data));

    const byIdentity = await t.push(s2, t.down);
    expect(byIdentity.code, byIdentity.stderr).toBe(0);
    expect(byIdentity.stderr).toMatch(/000000010000000000000052 was uploaded ahead .*\(verified by identity: /);

    // Forced re-hash (environment): the same answer, earned by reading the file.
    const hashed = await t.push(s3, { ...t.down, WALVAULT_FAST_PATH_HASH: 'true' });
    expect(hashed.code, hashed.stderr).toBe(0);
    expect(hashed.stderr).toMatch(/000000010000000000000053 was uploaded ahead .*\(SHA-256 [0-9a-f]{16}\.\.\. verified\)/);
    expect(hashed.stderr).not.toMatch(/by identity/);

    // Other bytes of the same size, the mtime set back to the recorded one: only ctime tells, and
    // it sends the file to the re-hash, which refuses it; with the store up, exit 7 as before.
    const before = await stat(s4.path);
    const other = Buffer.from(s4.data);
    other[5000]! ^= 0xff;
    await writeFile(s4.path, other);
    await utimes(s4.path, before.atime, before.mtime);
    const offline = await t.push(s4, t.down);
    expect(offline.code, offline.stderr).not.toBe(0);
    expect(offline.stderr).toMatch(/look-ahead record for 000000010000000000000054 not trusted \(SHA-256 /);
    expect(offline.stderr).not.toMatch(/uploaded ahead .*unchanged/);
    const conflict = await t.push(s4);
    expect(conflict.code, conflict.stderr).toBe(7);
    expect(await t.stored(s4.name)).toBe(sha(s4.data));
  });

  it('lets the high-water mark claim only the contiguous run, and never uploads older or already recorded files', async () => {
    const t = await setup('gaps', [0x21, 0x22, 0x23, 0x25]);
    const s21 = t.segs[0]!;
    // 0x20 is ready too but older than the file being archived: PostgreSQL did it first.
    const old = await writeFakeSegment(t.walDir, 0x20, { seed: 0x20 });
    await writeFile(join(t.walDir, 'archive_status', `${old.name}.ready`), '');
    const env = { ...t.env, WALVAULT_LOOKAHEAD: '3' };
    const r = await t.push(s21, env);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/look-ahead uploaded 3 more \(000000010000000000000022\.\.000000010000000000000025\)/);
    expect(await t.stored(old.name)).toBeUndefined();
    const mark = await newestMark(store, bucket, 'gaps');
    expect(mark!.mark.last).toBe('000000010000000000000023');
    // 0x22, 0x23, 0x25 are recorded: pushing 0x21 again (a crash before .done) takes only the new one.
    const s26 = await writeFakeSegment(t.walDir, 0x26, { seed: 0x26 });
    await writeFile(join(t.walDir, 'archive_status', `${s26.name}.ready`), '');
    const again = await t.push(s21, env);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toMatch(/look-ahead uploaded 1 more \(000000010000000000000026\)/);
    expect(await t.stored(old.name)).toBeUndefined();
  });

  it('hands a backlog beyond the look-ahead to a worker, which a wal-push for a file it has not recorded yet asks, and leaves no high-water write pending when it exits', async () => {
    const segnos = Array.from({ length: 14 }, (_, i) => 0x31 + i);
    const t = await setup('worker', segnos);
    // A long mark interval: only the worker's write on its way out can bring the mark to the end.
    const env = { ...t.env, WALVAULT_LOOKAHEAD: '2', WALVAULT_HIGH_WATER_INTERVAL: '3600' };
    const first = await t.push(t.segs[0]!, env);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stderr).toMatch(/look-ahead uploaded 2 more/);
    // The last one is asked for at once: the worker takes it before the rest of the backlog.
    const last = t.segs.at(-1)!;
    const asked = await t.push(last, env);
    expect(asked.code, asked.stderr).toBe(0);
    expect(asked.stderr).toMatch(new RegExp(`${last.name} was uploaded ahead .*verified`));
    // Everything else arrives without any further wal-push, each with its SHA-256.
    await until('the worker to upload the backlog', () => findRecords(join(t.dir, 'spool')).length >= segnos.length - 1, 30_000);
    for (const seg of t.segs) expect(await t.stored(seg.name), seg.name).toBe(sha(seg.data));
    // PostgreSQL's calls are all answered from the records, with the store unreachable.
    for (const seg of t.segs.slice(1, -1)) {
      const r = await t.push(seg, t.down);
      expect(r.code, `${seg.name}: ${r.stderr}`).toBe(0);
    }
    // The worker extends the high-water mark over the whole run, at the latest when it exits idle
    // (remote writes are rate-limited, so the last one may wait for that).
    const mark = async () => (await newestMark(store, bucket, 'worker'))!.mark;
    await until('the worker to extend the high-water mark', async () => (await mark()).last === last.name, 30_000, 250);
    expect(await mark()).toMatchObject({ first: t.segs[0]!.name, last: last.name });
  });
});

// The real thing: PostgreSQL archives through walvault with look-ahead (the archiver meets a backlog,
// so most calls take the fast path), then a base backup is restored with restore_command = walvault
// wal-fetch and recovers through the prefetch worker to the same data.
describe(`PostgreSQL archiving with look-ahead and recovery with prefetch on ${store.name}`, () => {
  const clusters: PgCluster[] = [];
  let home: string;
  afterAll(async () => {
    for (const c of clusters) await c.destroy();
    killWorkers(home);
    await cleanupAll();
  });

  it('archives every segment with failed_count 0, and a restore replays them all', async () => {
    const bucket = await createTestBucket(store, 'lapg');
    home = await tempDir('wv-lapg', { forPostgres: true });
    const configFile = await writeRepoConfig(store, bucket, 'pg', home);
    const bin = await walvaultBin();
    const walvault = `${bin} --config ${configFile}`;

    const pg = await PgCluster.create({
      walSegSizeMb: 1,
      conf: { archive_mode: 'on', archive_command: `${walvault} wal-push %p %f`, archive_timeout: 0, wal_keep_size: '256MB' },
    });
    clusters.push(pg);
    await pg.start({ env: { AWS_EC2_METADATA_DISABLED: 'true' } });
    await pg.pgbench(['-i', '-s', '1', '-q']);
    // (pg_basebackup waits until the backup's last segment is archived)
    const backup = join(home, 'backup');
    const bb = await runAsPostgres(join(PG_BIN_DIR, 'pg_basebackup'), ['-D', backup, '-X', 'none', '-c', 'fast', '-h', pg.host, '-p', String(pg.port), '-U', 'postgres']);
    expect(bb.code, bb.stderr).toBe(0);

    // A backlog (archive_command fails meanwhile), then walvault again: look-ahead meets many ready files.
    const setArchiveCommand = async (cmd: string) => {
      await pg.query(`ALTER SYSTEM SET archive_command = '${cmd}'`);
      await pg.query('SELECT pg_reload_conf()');
    };
    await setArchiveCommand('false');
    await pg.pgbench(['-c', '2', '-j', '2', '-t', '1000', '-n']);
    await pg.query("CREATE TABLE filler AS SELECT g, repeat(md5(g::text), 16) AS pad FROM generate_series(1, 40000) g");
    await setArchiveCommand(`${walvault} wal-push %p %f`);
    await pg.query("SELECT pg_stat_reset_shared('archiver')");
    await pg.pgbench(['-c', '2', '-j', '2', '-t', '500', '-n']);
    const last = await pg.query('SELECT pg_walfile_name(pg_switch_wal())');
    await pg.waitFor("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver", (out) => out >= last, 120_000);
    const [archived, failed] = (await pg.query('SELECT archived_count, failed_count FROM pg_stat_archiver')).split('|').map(Number);
    expect(failed, await pg.readLog()).toBe(0);
    expect(archived).toBeGreaterThan(20);
    const log = await pg.readLog();
    expect(log).toMatch(/look-ahead uploaded 8 more/);
    expect((log.match(/was uploaded ahead to .* verified/g) ?? []).length).toBeGreaterThan(10);
    // PostgreSQL's archiver (sh -c, as postgres) got most of them from the installed command's shell
    // fast path, without a Node start (scripts/wrapper/push.bash).
    expect((log.match(/was uploaded ahead to .* checked by the wrapper/g) ?? []).length).toBeGreaterThan(5);

    // Every archived segment still in pg_wal is in the store with its SHA-256.
    const keys = new Set(await listKeys(store, bucket, 'pg/wal/'));
    const walDir = join(pg.dataDir, 'pg_wal');
    let compared = 0;
    for (const n of readdirSync(join(walDir, 'archive_status'))) {
      const name = n.replace(/\.done$/, '');
      if (!n.endsWith('.done') || !/^[0-9A-F]{24}$/.test(name)) continue;
      expect(keys.has(`pg/wal/${name.slice(0, 16)}/${name}`), name).toBe(true);
      expect((await getRaw(store, bucket, `pg/wal/${name.slice(0, 16)}/${name}`))!.metadata['walvault-sha256']).toBe(sha(await readFile(join(walDir, name))));
      compared++;
    }
    expect(compared).toBeGreaterThan(20);
    const check = 'SELECT (SELECT sum(abalance) FROM pgbench_accounts), (SELECT count(*) FROM filler)';
    const expected = await pg.query(check);
    await pg.stop();

    // Restore: the base backup + restore_command through walvault (prefetch on, the default).
    await writeFile(join(backup, 'recovery.signal'), '');
    await writeFile(
      join(backup, 'postgresql.auto.conf'),
      `restore_command = '${walvault} wal-fetch %f %p'\narchive_mode = off\nrecovery_target_action = 'promote'\n`,
    );
    const restored = await PgCluster.fromDataDir(backup);
    clusters.push(restored);
    await restored.start({ env: { AWS_EC2_METADATA_DISABLED: 'true' } });
    await restored.waitFor('SELECT pg_is_in_recovery()', (out) => out === 'f', 120_000);
    expect(await restored.query(check)).toBe(expected);
    const rlog = await restored.readLog();
    expect(rlog).toMatch(new RegExp(`restored log file "${last}" from archive`));
    expect((rlog.match(/from the prefetch spool/g) ?? []).length).toBeGreaterThan(10);
    expect(rlog).not.toMatch(/not used|IntegrityError|PANIC/);
  });
});
