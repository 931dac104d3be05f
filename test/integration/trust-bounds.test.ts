// Issue 8, "bounded by what was declared": what walvault reads is bounded by what the writer recorded
// (a decompression bomb stops at the declared size, at once, without a retry), large segments are
// pushed in bounded memory, and a FIFO at %p is refused by type instead of blocking in open().
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readdirSync } from 'node:fs';
import { mkdir, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FaultProxy } from '../support/fault-proxy.js';
import { createTestBucket, deleteRaw, envFor, headRaw, putRaw, testStores } from '../support/stores.js';
import { segName, writeFakeSegment, writeLargeSegment } from '../support/wal-fixtures.js';
import { peakRssMiB, RSS_PREFIX } from '../support/peak-rss.js';
import { cleanupAll, REPO_ROOT, runWalvault, tempDir, type WalvaultResult } from '../support/walvault.js';

const MiB = 1024 * 1024;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const walKey = (prefix: string, name: string) => `${prefix}/wal/${name.slice(0, 16)}/${name}`;

async function fileSha(path: string): Promise<string> {
  const h = createHash('sha256');
  await pipeline(createReadStream(path), h);
  return h.digest('hex');
}

/** `bytes` of zeros through zstd, fed 1 MiB at a time: a few KiB that inflate to `bytes`. */
async function zstdBomb(bytes: number): Promise<Buffer> {
  const zeros = Buffer.alloc(MiB);
  const out: Buffer[] = [];
  const z = zlib.createZstdCompress();
  z.on('data', (d: Buffer) => out.push(d));
  const done = new Promise((resolve, reject) => z.once('end', resolve).once('error', reject));
  for (let i = 0; i < bytes / MiB; i++) if (!z.write(zeros)) await new Promise((r) => z.once('drain', r));
  z.end();
  await done;
  return Buffer.concat(out);
}

/** The one error line: exactly one ERROR line on stderr, the last, naming the class. */
function expectOneError(r: WalvaultResult, cls: RegExp, context: string): void {
  const errors = r.stderr.split('\n').filter((l) => / ERROR: /.test(l));
  expect(errors, context).toHaveLength(1);
  expect(errors[0], context).toMatch(cls);
}

const stores = testStores().filter((s) => s.name === 'rgw');

describe.each(stores)('trust: bounded by what was declared ($name)', (store) => {
  let bucket: string;
  let work: string;
  const proxies: FaultProxy[] = [];

  beforeAll(async () => {
    bucket = await createTestBucket(store, 'bounds');
    work = await tempDir('wv-bounds');
  });
  afterAll(async () => {
    await Promise.all(proxies.map((p) => p.close()));
    await cleanupAll();
  });

  it('trust: decompression stops at the declared size', async () => {
    const dir = join(work, 'bomb');
    const pgdata = join(dir, 'pgdata');
    await mkdir(join(pgdata, 'pg_wal'), { recursive: true });
    await writeFile(join(pgdata, 'recovery.signal'), '');
    const prefix = 'bomb';
    const env = { ...envFor(store, bucket, prefix), WALVAULT_SPOOL: join(dir, 'spool'), WALVAULT_PREFETCH: '0' };
    const seg = await writeFakeSegment(dir, 3, { seed: 1 });
    const pushed = await runWalvault(['wal-push', seg.path, seg.name], { env });
    expect(pushed.code, pushed.stderr).toBe(0);

    // The archived object replaced by 256 MiB of zeros in zstd, still declaring the 1 MiB segment.
    const key = walKey(prefix, seg.name);
    const bomb = await zstdBomb(256 * MiB);
    expect(bomb.length).toBeLessThan(MiB);
    await putRaw(store, bucket, key, bomb, { 'walvault-sha256': sha(seg.data), 'walvault-size': String(seg.data.length), 'walvault-codec': 'zstd' });

    const proxy = await FaultProxy.start({ upstream: store.endpoint });
    proxies.push(proxy);
    const r = await runWalvault(['wal-fetch', seg.name, 'pg_wal/RECOVERYXLOG'], {
      env: { ...env, AWS_ENDPOINT_URL_S3: proxy.url, WALVAULT_DEADLINE: '60', WALVAULT_RETRY_MIN_DELAY: '0.05', WALVAULT_RETRY_MAX_DELAY: '0.2' },
      cwd: pgdata,
    });
    const gets = proxy.seen('GET', new RegExp(`/${escape(key)}(\\?|$)`)).length;
    const context = `exit ${r.code} in ${Math.round(r.ms)} ms, ${gets} GETs\n${r.stderr}`;
    expect(r.signal, context).toBeNull();
    expect(r.code, context).toBe(255);
    expectOneError(r, /IntegrityError: .*yields more than its declared 1048576 bytes.*exiting 255/, context);
    // A deterministic failure: one GET, no retry, and no time spent inflating the rest.
    expect(gets, context).toBe(1);
    expect(r.stderr, context).not.toMatch(/retrying/);
    expect(r.ms, context).toBeLessThan(8000);
    expect(existsSync(join(pgdata, 'pg_wal', 'RECOVERYXLOG')), context).toBe(false);
    expect(readdirSync(join(pgdata, 'pg_wal')), context).toEqual([]);
  });

  it('trust: a FIFO at %p is refused, never a hang', async () => {
    const dir = join(work, 'fifo');
    const pgWal = join(dir, 'pg_wal');
    await mkdir(join(pgWal, 'archive_status'), { recursive: true });
    const env = { ...envFor(store, bucket, 'fifo'), WALVAULT_SPOOL: join(dir, 'spool'), WALVAULT_DEADLINE: '5' };

    // %p itself is a FIFO: LocalFileError (5), at once.
    const fifoName = segName(9);
    execFileSync('mkfifo', [join(pgWal, fifoName)]);
    const r = await runWalvault(['wal-push', join(pgWal, fifoName), fifoName], { env, timeoutMs: 30_000 });
    const context = `exit ${r.code} signal ${r.signal} in ${Math.round(r.ms)} ms\n${r.stderr}`;
    expect(r.signal, context).toBeNull();
    expect(r.code, context).toBe(5);
    expectOneError(r, /LocalFileError: .*is a FIFO, not a WAL file/, context);
    expect(r.ms, context).toBeLessThan(5000);

    // A FIFO among the look-ahead candidates: the requested segment is pushed, the FIFO skipped,
    // the regular file after it uploaded ahead and recorded.
    const seg = await writeFakeSegment(pgWal, 8, { seed: 8 });
    const ahead = await writeFakeSegment(pgWal, 10, { seed: 10 });
    for (const n of [seg.name, fifoName, ahead.name]) await writeFile(join(pgWal, 'archive_status', `${n}.ready`), '');
    const la = await runWalvault(['wal-push', seg.path, seg.name], { env, timeoutMs: 30_000 });
    const laContext = `exit ${la.code} signal ${la.signal} in ${Math.round(la.ms)} ms\n${la.stderr}`;
    expect(la.signal, laContext).toBeNull();
    expect(la.code, laContext).toBe(0);
    expect(la.stderr, laContext).toMatch(new RegExp(`look-ahead upload of ${fifoName} failed .*is a FIFO`));
    expect(la.stderr, laContext).toMatch(new RegExp(`look-ahead uploaded 1 more \\(${ahead.name}\\)`));
    expect(la.ms, laContext).toBeLessThan(5000 + 3000);

    // The recorded file replaced by a FIFO: the fast path (which re-reads it) does not block either.
    await unlink(ahead.path);
    execFileSync('mkfifo', [ahead.path]);
    const fp = await runWalvault(['wal-push', ahead.path, ahead.name], { env, timeoutMs: 30_000 });
    const fpContext = `exit ${fp.code} signal ${fp.signal} in ${Math.round(fp.ms)} ms\n${fp.stderr}`;
    expect(fp.signal, fpContext).toBeNull();
    expect(fp.code, fpContext).toBe(5);
    expectOneError(fp, /LocalFileError: .*is a FIFO, not a WAL file/, fpContext);
  });

  it('trust: large segments are pushed in bounded memory', { timeout: 300_000 }, async () => {
    const dir = join(work, 'large');
    const pgWal = join(dir, 'pg_wal');
    await mkdir(join(pgWal, 'archive_status'), { recursive: true });
    const prefix = 'large';
    const env = { ...envFor(store, bucket, prefix), WALVAULT_SPOOL: join(dir, 'spool'), WALVAULT_PREFETCH: '0', WALVAULT_DEADLINE: '120' };
    // 128 MiB segments of random bytes: compression cannot shrink them, so a body held in memory
    // would show as >= 128 MiB of RSS. The bound below does not depend on the segment size.
    const segSize = 128 * MiB;
    const BOUND_MIB = 150;
    const segs = [];
    for (const segno of [2, 3, 4]) segs.push(await writeLargeSegment(pgWal, segno, { segSize, fill: 'random', seed: segno }));
    const [a, b, c] = segs as [(typeof segs)[0], (typeof segs)[0], (typeof segs)[0]];

    // zstd, look-ahead on: b is uploaded by a's wal-push in the same process.
    for (const s of [a, b]) await writeFile(join(pgWal, 'archive_status', `${s.name}.ready`), '');
    const z = await runWalvault(['wal-push', a.path, a.name], { env: { ...env, WALVAULT_COMPRESSION: 'zstd' }, prefix: RSS_PREFIX });
    const zRss = peakRssMiB(z);
    expect(z.code, z.stderr).toBe(0);
    expect(z.stderr, z.stderr).toMatch(new RegExp(`look-ahead uploaded 1 more \\(${b.name}\\)`));
    expect(zRss, `zstd + look-ahead peak RSS ${zRss.toFixed(0)} MiB\n${z.stderr}`).toBeLessThan(BOUND_MIB);

    // codec none: the WAL file itself is the body.
    const n = await runWalvault(['wal-push', c.path, c.name], { env: { ...env, WALVAULT_COMPRESSION: 'none', WALVAULT_LOOKAHEAD: '0' }, prefix: RSS_PREFIX });
    const nRss = peakRssMiB(n);
    expect(n.code, n.stderr).toBe(0);
    expect(nRss, `codec none peak RSS ${nRss.toFixed(0)} MiB\n${n.stderr}`).toBeLessThan(BOUND_MIB);
    expect((await headRaw(store, bucket, walKey(prefix, c.name)))?.size).toBe(segSize);

    // Nothing spooled is left behind.
    expect(readdirSync(join(dir, 'spool', 'tmp')), 'spooled bodies left').toEqual([]);

    // Round trip: every byte comes back.
    const restore = join(dir, 'restore');
    await mkdir(join(restore, 'pg_wal'), { recursive: true });
    await writeFile(join(restore, 'standby.signal'), '');
    for (const s of [a, b, c]) {
      const f = await runWalvault(['wal-fetch', s.name, `pg_wal/${s.name}`], { env, cwd: restore });
      expect(f.code, f.stderr).toBe(0);
      expect(await fileSha(join(restore, 'pg_wal', s.name)), s.name).toBe(s.sha256);
    }
    for (const s of [a, b, c]) await deleteRaw(store, bucket, walKey(prefix, s.name)); // memstore capacity
    console.log(`trust-bounds: 128 MiB random segments, peak RSS zstd+look-ahead ${zRss.toFixed(0)} MiB, none ${nRss.toFixed(0)} MiB`);
  });
});

describe('trust: large segments are pushed in bounded memory (file:// repository)', () => {
  afterAll(cleanupAll);

  it('stores a streamed body (compressed and uncompressed) and fetches the same bytes', { timeout: 120_000 }, async () => {
    const dir = await tempDir('wv-bounds-file');
    const repo = join(dir, 'repo');
    await mkdir(join(dir, 'pg_wal'), { recursive: true });
    await mkdir(repo);
    const restore = join(dir, 'restore');
    await mkdir(join(restore, 'pg_wal'), { recursive: true });
    await writeFile(join(restore, 'standby.signal'), '');
    const env = { WALVAULT_REPO: `file://${repo}`, WALVAULT_SPOOL: join(dir, 'spool'), WALVAULT_PREFETCH: '0', WALVAULT_LOOKAHEAD: '0' };
    for (const [segno, codec] of [[2, 'zstd'], [3, 'none']] as const) {
      const s = await writeLargeSegment(join(dir, 'pg_wal'), segno, { segSize: 32 * MiB, fill: 'random', seed: segno });
      const p = await runWalvault(['wal-push', s.path, s.name], { env: { ...env, WALVAULT_COMPRESSION: codec } });
      expect(p.code, p.stderr).toBe(0);
      const f = await runWalvault(['wal-fetch', s.name, `pg_wal/${s.name}`], { env, cwd: restore });
      expect(f.code, f.stderr).toBe(0);
      expect(await fileSha(join(restore, 'pg_wal', s.name)), `${codec}\n${p.stderr}`).toBe(s.sha256);
    }
    expect(readdirSync(join(dir, 'spool', 'tmp')), 'spooled bodies left').toEqual([]);
  });
});
