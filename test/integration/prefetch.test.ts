// Prefetching wal-fetch: after serving a segment, a detached worker downloads the next ones into the
// spool; later calls hand them over after re-hashing them (and ask the running worker, which has the
// SDK loaded, for the rest). Correctness only: a corrupted spool file is never served, a timeline
// switch never serves one timeline's segment for another, a miss inside the archived range stays a
// gap, and two restores on one machine keep separate spools.
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { existsSync, linkSync, readFileSync, statSync, utimesSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fault, FaultProxy } from '../support/fault-proxy.js';
import { createTestBucket, deleteRaw, envFor, testStores, type TestStore } from '../support/stores.js';
import { fakeSegment, segName } from '../support/wal-fixtures.js';
import { cleanupAll, findFiles, runWalvault, tempDir } from '../support/walvault.js';
import { until } from '../support/until.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const store: TestStore = testStores().find((s) => s.name === 'rgw') ?? testStores()[0]!;


describe(`prefetching wal-fetch on ${store.name}`, () => {
  let bucket: string;
  let work: string;
  beforeAll(async () => {
    bucket = await createTestBucket(store, 'prefetch');
    work = await tempDir('wv-prefetch');
  });
  afterAll(async () => {
    for (const lock of findFiles(work, (n) => n === 'worker.lock')) {
      try {
        process.kill(Number(readFileSync(lock, 'utf8')), 'SIGTERM');
      } catch {
        // gone
      }
    }
    await cleanupAll();
  });

  /** A repository with the given files pushed (name -> bytes), and a PGDATA-like working directory. */
  async function setup(label: string, files: Array<[string, Buffer]>) {
    const dir = join(work, label);
    await mkdir(dir, { recursive: true });
    const env = { ...envFor(store, bucket, label), WALVAULT_SPOOL: join(dir, 'spool'), WALVAULT_LOOKAHEAD: '0', WALVAULT_DEADLINE: '20', WALVAULT_HIGH_WATER_INTERVAL: '0.001' };
    for (const [name, data] of files) {
      await writeFile(join(dir, name), data);
      const r = await runWalvault(['wal-push', join(dir, name), name], { env });
      expect(r.code, r.stderr).toBe(0);
    }
    const pgdata = join(dir, 'pgdata');
    await mkdir(join(pgdata, 'pg_wal'), { recursive: true });
    await writeFile(join(pgdata, 'recovery.signal'), '');
    const fetch = async (name: string, cwd = pgdata, over: Record<string, string> = {}) => {
      const r = await runWalvault(['wal-fetch', name, 'pg_wal/RECOVERYXLOG'], { env: { ...env, ...over }, cwd });
      return { r, bytes: r.code === 0 ? await readFile(join(cwd, 'pg_wal/RECOVERYXLOG')) : undefined };
    };
    const spoolFiles = (name: string, spool = 'spool') => findFiles(join(dir, spool), (n) => n === name);
    const key = (name: string) => `${label}/wal/${name.slice(0, 16)}/${name}`;
    return { dir, pgdata, env, fetch, spoolFiles, key };
  }

  const seg = (segno: number, tli = 1, seed = segno) => [segName(segno, tli), fakeSegment({ segno: BigInt(segno), seed: seed + tli * 1000 })] as [string, Buffer];

  it('hands over prefetched segments only verified, and never a corrupted one', async () => {
    const segs = [1, 2, 3, 4, 5, 6].map((n) => seg(n));
    const t = await setup('basic', segs);
    const first = await t.fetch(segs[0]![0]);
    expect(first.r.code, first.r.stderr).toBe(0);
    expect(first.bytes!.equals(segs[0]![1])).toBe(true);
    await until('the worker to prefetch segment 3', () => t.spoolFiles(segs[2]![0]).length === 1 && t.spoolFiles(`${segs[2]![0]}.json`).length === 1);

    const second = await t.fetch(segs[1]![0]);
    expect(second.r.code, second.r.stderr).toBe(0);
    expect(second.r.stderr).toMatch(/fetched 000000010000000000000002 from the prefetch spool \(1\.00 MiB, verified SHA-256/);
    expect(second.bytes!.equals(segs[1]![1])).toBe(true);

    // Bytes changed in the spool behind walvault's back: not served, fetched again from the store.
    const [spooled] = t.spoolFiles(segs[2]![0]);
    const bad = readFileSync(spooled!);
    bad[bad.length >> 1]! ^= 0xff;
    await writeFile(spooled!, bad);
    const third = await t.fetch(segs[2]![0]);
    expect(third.r.code, third.r.stderr).toBe(0);
    expect(third.r.stderr).toMatch(/prefetched 000000010000000000000003 not used \(SHA-256 [0-9a-f]{64} differs/);
    expect(third.bytes!.equals(segs[2]![1])).toBe(true);
    expect(sha(third.bytes!)).toBe(sha(segs[2]![1]));

    // PostgreSQL asks for the last segment again at the end of recovery: still answered locally.
    const again = await t.fetch(segs[2]![0]);
    expect(again.r.code, again.r.stderr).toBe(0);
    expect(again.bytes!.equals(segs[2]![1])).toBe(true);

    for (const [name, data] of segs.slice(3)) {
      const f = await t.fetch(name);
      expect(f.r.code, f.r.stderr).toBe(0);
      expect(f.bytes!.equals(data), name).toBe(true);
    }
    // Past the end: 1, and nothing at %p (the worker asked the store for this very request).
    const end = await t.fetch(segName(7));
    expect(end.r.code, end.r.stderr).toBe(1);
    expect(end.r.stderr).toMatch(/000000010000000000000007 is not in s3:\/\/.* \(not found/);
  });

  it('does not serve segments of timeline 1 for timeline 2 after a switch', async () => {
    const history = Buffer.from('1\t0/4000000\tno recovery target specified\n');
    const tli1 = [1, 2, 3, 4, 5, 6].map((n) => seg(n, 1));
    const tli2 = [4, 5, 6].map((n) => seg(n, 2)); // same segment numbers, other bytes
    const t = await setup('timeline', [...tli1, ...tli2, ['00000002.history', history]]);
    expect(tli2[0]![1].equals(tli1[3]![1])).toBe(false);

    expect((await t.fetch(tli1[1]![0])).r.code).toBe(0);
    expect((await t.fetch(tli1[2]![0])).r.code).toBe(0);
    await until('timeline 1 segments 4-6 in the spool', () => [3, 4, 5].every((i) => t.spoolFiles(tli1[i]![0]).length === 1));

    // The promotion's history file: timeline 1 entries are dropped.
    const h = await t.fetch('00000002.history');
    expect(h.r.code, h.r.stderr).toBe(0);
    expect(h.bytes!.equals(history)).toBe(true);
    for (const i of [3, 4, 5]) expect(t.spoolFiles(tli1[i]![0])).toEqual([]);

    for (const [name, data] of tli2) {
      const f = await t.fetch(name);
      expect(f.r.code, `${name}: ${f.r.stderr}`).toBe(0);
      expect(f.bytes!.equals(data), `${name} must be timeline 2's bytes`).toBe(true);
    }
    // A late timeline-1 request (another recovery) still gets timeline 1's own bytes.
    const late = await t.fetch(tli1[4]![0]);
    expect(late.bytes!.equals(tli1[4]![1])).toBe(true);
  });

  it('answers a segment missing inside the archived range as a gap, even when the worker is asked', async () => {
    const segs = [1, 2, 3, 4, 5].map((n) => seg(n));
    const t = await setup('gap', segs);
    await deleteRaw(store, bucket, t.key(segs[3]![0]));
    expect((await t.fetch(segs[0]![0])).r.code).toBe(0);
    expect((await t.fetch(segs[1]![0])).r.code).toBe(0);
    expect((await t.fetch(segs[2]![0])).r.code).toBe(0);
    const gap = await t.fetch(segs[3]![0]);
    expect(gap.r.code, gap.r.stderr).toBe(255);
    expect(gap.r.stderr).toMatch(/WalGap: 000000010000000000000004 is missing/);
    expect(existsSync(join(t.pgdata, 'pg_wal', 'RECOVERYXLOG')) && readFileSync(join(t.pgdata, 'pg_wal', 'RECOVERYXLOG')).equals(segs[3]![1])).toBe(false);
  });

  it('keeps two restores of one repository on one machine apart', async () => {
    const segs = [1, 2, 3, 4].map((n) => seg(n));
    const t = await setup('two', segs);
    const other = join(t.dir, 'pgdata2');
    await mkdir(join(other, 'pg_wal'), { recursive: true });
    expect((await t.fetch(segs[0]![0])).r.code).toBe(0);
    expect((await t.fetch(segs[0]![0], other)).r.code).toBe(0);
    await until('both restores to have prefetched segment 3', () => t.spoolFiles(segs[2]![0]).length === 2);
    const dirs = t.spoolFiles(segs[2]![0]).map((p) => p.split('/').slice(-2, -1)[0]);
    expect(new Set(dirs).size).toBe(2);
    for (const d of dirs) expect(d).toMatch(/^\d+-[0-9a-f]{12}$/);
    const a = await t.fetch(segs[1]![0]);
    const b = await t.fetch(segs[1]![0], other);
    expect(a.r.stderr).toMatch(/prefetch spool/);
    expect(b.r.stderr).toMatch(/prefetch spool/);
    expect(a.bytes!.equals(segs[1]![1]) && b.bytes!.equals(segs[1]![1])).toBe(true);
  });

  it('trust: a worker of another endpoint never serves a fetch', async () => {
    // Endpoint B is a proxy in front of the same radosgw that answers NoSuchKey for segment 2: the
    // same bucket name, another endpoint, another answer. A's worker has segment 2 in the spool.
    const segs = [1, 2, 3, 4].map((n) => seg(n));
    const t = await setup('endpoint', segs);
    expect((await t.fetch(segs[0]![0])).r.code).toBe(0);
    await until('endpoint A to have prefetched segment 2', () => t.spoolFiles(`${segs[1]![0]}.json`).length === 1);

    const proxy = await FaultProxy.start({ upstream: store.endpoint });
    try {
      proxy.addRule({ method: ['GET', 'HEAD'], path: new RegExp(`/${t.key(segs[1]![0])}(\\?|$)`), action: fault.status(404, 'NoSuchKey') });
      const viaB = { ...t.env, AWS_ENDPOINT_URL_S3: proxy.url };
      const asked = (name: string) => proxy.log.some((r) => r.url.includes(t.key(name)));
      const target = join(t.pgdata, 'pg_wal', 'RECOVERYXLOG');
      await writeFile(target, 'not a segment');

      const b2 = await runWalvault(['wal-fetch', segs[1]![0], 'pg_wal/RECOVERYXLOG'], { env: viaB, cwd: t.pgdata });
      expect(b2.code, b2.stderr).not.toBe(0);
      expect(b2.stderr).not.toMatch(/prefetch spool/);
      expect(asked(segs[1]![0])).toBe(true);
      expect(readFileSync(target).equals(segs[1]![1])).toBe(false);

      const b3 = await runWalvault(['wal-fetch', segs[2]![0], 'pg_wal/RECOVERYXLOG'], { env: viaB, cwd: t.pgdata });
      expect(b3.code, b3.stderr).toBe(0);
      expect(asked(segs[2]![0])).toBe(true);
      expect(readFileSync(target).equals(segs[2]![1])).toBe(true);
    } finally {
      await proxy.close();
    }
    // A's own spool still serves A.
    const a2 = await t.fetch(segs[1]![0]);
    expect(a2.r.stderr).toMatch(/prefetch spool/);
    expect(a2.bytes!.equals(segs[1]![1])).toBe(true);
  });

  /** A data directory whose global/pg_control names `sysid` and a checkpoint whose redo is in `redoSegno`. */
  async function pgControl(pgdata: string, sysid: bigint, redoSegno: number): Promise<void> {
    const b = Buffer.alloc(8192);
    b.writeBigUInt64LE(sysid, 0);
    b.writeUInt32LE(1300, 8);
    b.writeBigUInt64LE(BigInt(redoSegno) * 1024n * 1024n + 0x28n, 40);
    b.writeUInt32LE(1, 48);
    await mkdir(join(pgdata, 'global'), { recursive: true });
    await writeFile(join(pgdata, 'global', 'pg_control'), b);
  }

  it("the first request of a restore starts the worker, which answers it and prefetches where replay starts", async () => {
    const segs = [1, 2, 3, 4, 5, 6].map((n) => seg(n));
    const t = await setup('boot', segs);
    await pgControl(t.pgdata, 7000000000000000001n, 3);
    // A new machine: no spool yet, so no copy of the repository manifest to key the prefetch spool.
    const fresh = { WALVAULT_SPOOL: join(t.dir, 'spool2') };
    const h = await t.fetch('00000002.history', t.pgdata, fresh);
    expect(h.r.code, h.r.stderr).toBe(1);
    // Answered by the worker this call started (the SDK loads there, once), not by loading it here.
    expect(h.r.stderr).toMatch(/00000002\.history is not in s3:\/\/.* \(not found, asked by the prefetch worker/);
    // Prefetching began at pg_control's redo segment before PostgreSQL asked for any segment.
    await until('segment 3 prefetched from the pg_control hint', () => t.spoolFiles(segs[2]![0], 'spool2').length === 1);
    expect(t.spoolFiles(segs[0]![0], 'spool2')).toEqual([]);
    expect(findFiles(join(t.dir, 'spool2'), (n) => n === 'walvault.json')).toHaveLength(1); // cached by the worker
    const f = await t.fetch(segs[2]![0], t.pgdata, fresh);
    expect(f.r.code, f.r.stderr).toBe(0);
    expect(f.r.stderr).toMatch(/fetched 000000010000000000000003 from the prefetch spool \(1\.00 MiB, verified SHA-256 by the prefetch worker, unchanged since/);
    expect(f.bytes!.equals(segs[2]![1])).toBe(true);
  });

  it('a worker keyed by a data directory of another system refuses to work: the normal fetch answers', async () => {
    const segs = [1, 2, 3].map((n) => seg(n));
    const t = await setup('othersys', segs);
    await pgControl(t.pgdata, 7000000000000000099n, 1);
    const fresh = { WALVAULT_SPOOL: join(t.dir, 'spool2') };
    const h = await t.fetch('00000002.history', t.pgdata, fresh);
    expect(h.r.code, h.r.stderr).toBe(1);
    expect(h.r.stderr).not.toMatch(/asked by the prefetch worker/);
    expect(h.r.stderr).toMatch(/00000002\.history is not in s3:\/\/.* \(not found\); exiting 1/);
    expect(findFiles(join(t.dir, 'spool2'), (n) => /^[0-9A-F]{24}$/.test(n))).toEqual([]);
    const f = await t.fetch(segs[0]![0], t.pgdata, fresh);
    expect(f.r.code, f.r.stderr).toBe(0);
    expect(f.bytes!.equals(segs[0]![1])).toBe(true);
  });

  it('hands over by identity, and re-hashes a prefetched file whose identity changed', async () => {
    const segs = [1, 2, 3, 4].map((n) => seg(n));
    const t = await setup('identity', segs);
    expect((await t.fetch(segs[0]![0])).r.code).toBe(0);
    await until('segments 2 and 3 prefetched', () => [1, 2].every((i) => t.spoolFiles(`${segs[i]![0]}.json`).length === 1));
    const two = await t.fetch(segs[1]![0]);
    expect(two.r.stderr).toMatch(/from the prefetch spool \(1\.00 MiB, verified SHA-256 by the prefetch worker, unchanged since/);
    expect(two.bytes!.equals(segs[1]![1])).toBe(true);
    // Same bytes, new ctime: no longer what the worker verified, so hashed again (and still served).
    const [three] = t.spoolFiles(segs[2]![0]);
    utimesSync(three!, new Date(), new Date(0));
    const again = await t.fetch(segs[2]![0]);
    expect(again.r.code, again.r.stderr).toBe(0);
    expect(again.r.stderr).toMatch(/from the prefetch spool \(1\.00 MiB, verified SHA-256, /);
    expect(again.bytes!.equals(segs[2]![1])).toBe(true);
  });

  it('acknowledges verified segments for the shell wrapper and follows the ones it hands over', async () => {
    const segs = [1, 2, 3, 4, 5, 6, 7, 8].map((n) => seg(n));
    const t = await setup('acks', segs);
    const fast = join(t.dir, 'fast');
    await mkdir(fast, { mode: 0o700 });
    const context = `walvault-context 1\n${t.pgdata}\n0\nWALVAULT_PREFETCH=3`;
    const wrapper = { WALVAULT_WRAPPER_CONTEXT: context, WALVAULT_WRAPPER_DIR: fast, WALVAULT_PREFETCH: '3' };
    expect((await t.fetch(segs[0]![0], t.pgdata, wrapper)).r.code).toBe(0);
    const ackOf = (i: number) => join(fast, 'fetch', segs[i]![0]);
    await until('acks for segments 2-4', () => [1, 2, 3].every((i) => existsSync(ackOf(i))));
    expect(existsSync(ackOf(4))).toBe(false); // prefetch 3: the window is 2-4

    const lines = readFileSync(ackOf(1), 'utf8').split('\n');
    const [file] = t.spoolFiles(segs[1]![0]);
    expect(lines.slice(0, 3)).toEqual(['walvault-fetch-ack 1', segs[1]![0], file]);
    expect(lines[3]).toBe(execFileSync('stat', ['-c', '%d %i %s %.9Y %.9Z', file!]).toString().trim());
    expect(lines[4]).toBe(sha(segs[1]![1]));
    expect(lines[5]).toBe('info');
    const [lock] = findFiles(join(t.dir, 'spool'), (n) => n === 'worker.lock');
    expect(lines[6]).toBe(readFileSync(lock!, 'utf8')); // the worker's pid
    expect(lines.slice(7).join('\n')).toBe(`${context}\n`);

    // The wrapper hands segment 2 over as it does (a hard link to %p): the worker notices without
    // any wal-fetch, drops the ack, and moves its window on.
    linkSync(file!, join(t.pgdata, 'pg_wal', 'RECOVERYXLOG-2'));
    await until('the ack of segment 2 gone and segment 5 prefetched', () => !existsSync(ackOf(1)) && existsSync(ackOf(4)));
    for (const i of [2, 3]) linkSync(t.spoolFiles(segs[i]![0])[0]!, join(t.pgdata, 'pg_wal', `RECOVERYXLOG-${i + 1}`));
    await until('segments 6 and 7 acknowledged', () => existsSync(ackOf(5)) && existsSync(ackOf(6)));
    // PostgreSQL has gone past 2 and 3: dropped; 4 (the newest handed over) stays for a re-ask.
    await until('segments before 4 dropped', () => t.spoolFiles(segs[1]![0]).length === 0 && t.spoolFiles(segs[2]![0]).length === 0);
    expect(t.spoolFiles(segs[3]![0])).toHaveLength(1);
    const four = await t.fetch(segs[3]![0], t.pgdata, wrapper);
    expect(four.r.code, four.r.stderr).toBe(0);
    expect(four.bytes!.equals(segs[3]![1])).toBe(true);
  });

  it('stages the last segment anew once the end of WAL is known, for the shell to answer the re-asks', async () => {
    const segs = [1, 2, 3].map((n) => seg(n));
    const t = await setup('restage', segs);
    const fast = join(t.dir, 'fast');
    await mkdir(fast, { mode: 0o700 });
    const wrapper = { WALVAULT_WRAPPER_CONTEXT: `walvault-context 1\ncwd ${t.pgdata}`, WALVAULT_WRAPPER_DIR: fast };
    const ackOf = (name: string) => join(fast, 'fetch', name);
    expect((await t.fetch(segs[0]![0], t.pgdata, wrapper)).r.code).toBe(0);
    await until('segments 2 and 3 acknowledged', () => existsSync(ackOf(segs[1]![0])) && existsSync(ackOf(segs[2]![0])));
    // The shell hands over 2 and then 3 (the last one; the worker found 4 missing meanwhile).
    for (const i of [1, 2]) linkSync(t.spoolFiles(segs[i]![0])[0]!, join(t.pgdata, 'pg_wal', `RECOVERYXLOG-${i + 1}`));
    const [file] = t.spoolFiles(segs[2]![0]);
    const linked = statSync(join(t.pgdata, 'pg_wal', 'RECOVERYXLOG-3')).ino;
    // A new verified copy of 3 (another inode than the one handed over) with its own ack.
    await until('segment 3 staged anew', () => existsSync(ackOf(segs[2]![0])) && statSync(file!).ino !== linked, 20_000);
    expect(readFileSync(file!).equals(segs[2]![1])).toBe(true);
    const lines = readFileSync(ackOf(segs[2]![0]), 'utf8').split('\n');
    expect(lines[3]).toBe(execFileSync('stat', ['-c', '%d %i %s %.9Y %.9Z', file!]).toString().trim());
  });

  it('answers every repeated ask for the segment after the last one from the worker, asking the repository each time', async () => {
    const segs = [1, 2].map((n) => seg(n));
    const t = await setup('repeat-miss', segs);
    for (const [name] of segs) expect((await t.fetch(name)).r.code).toBe(0);
    for (let i = 0; i < 3; i++) {
      const end = await t.fetch(segName(3));
      expect(end.r.code, end.r.stderr).toBe(1);
      expect(end.r.stderr).toMatch(/000000010000000000000003 is not in s3:\/\/.* \(not found, asked by the prefetch worker/);
    }
    // The last segment, asked again at the end of recovery, is still served locally.
    const last = await t.fetch(segs[1]![0]);
    expect(last.r.code, last.r.stderr).toBe(0);
    expect(last.r.stderr).toMatch(/from the prefetch spool/);
  });
});
