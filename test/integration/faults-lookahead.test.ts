// Faults on the speed paths: look-ahead push (wal-push also uploads the next .ready files and
// records them in the spool, so that their own wal-push later exits 0 without the network) and
// prefetch (a detached worker downloads the next segments into the spool for later wal-fetch calls).
// Whatever fails on those paths, the contract stays: wal-push exits 0 only for a file that is in the
// store with its bytes, and wal-fetch hands over only the verified, complete segment.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FAST_TIMEOUTS, fault, FaultProxy } from '../support/fault-proxy.js';
import { createTestBucket, envFor, getRaw, testStores } from '../support/stores.js';
import { writeFakeSegment } from '../support/wal-fixtures.js';
import { cleanupAll, runWalvault, tempDir } from '../support/walvault.js';
import { until } from '../support/until.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const maybeStore = testStores().find((s) => s.name === 'rgw') ?? testStores()[0];
const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
type Seg = Awaited<ReturnType<typeof writeFakeSegment>>;

/** Every file named `name` below `dir`. */
function findFiles(dir: string, name: string): string[] {
  const out: string[] = [];
  if (!existsSync(dir)) return out;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...findFiles(p, name));
    else if (e.name === name) out.push(p);
  }
  return out;
}

describe.skipIf(!maybeStore)(`look-ahead push and prefetch under faults on ${maybeStore?.name}`, () => {
  if (!maybeStore) return;
  const store = maybeStore;
  let bucket: string;
  let work: string;
  const proxies: FaultProxy[] = [];
  beforeAll(async () => {
    bucket = await createTestBucket(store, 'lookahead');
    work = await tempDir('wv-la');
  });
  afterAll(async () => {
    await Promise.all(proxies.map((p) => p.close()));
    await cleanupAll();
  });

  async function setup(label: string) {
    const dir = join(work, label);
    const pgdata = join(dir, 'pgdata');
    const walDir = join(pgdata, 'pg_wal');
    await mkdir(join(walDir, 'archive_status'), { recursive: true });
    const proxy = await FaultProxy.start({ upstream: store.endpoint });
    proxies.push(proxy);
    const direct = { ...envFor(store, bucket, label), WALVAULT_SPOOL: join(dir, 'spool') };
    const viaProxy = { ...direct, AWS_ENDPOINT_URL_S3: proxy.url, ...FAST_TIMEOUTS, WALVAULT_DEADLINE: '20' };
    const keyOf = (name: string) => `${label}/wal/${name.slice(0, 16)}/${name}`;
    const re = (name: string) => new RegExp(`/${escape(keyOf(name))}(\\?|$)`);
    return { dir, pgdata, walDir, proxy, direct, viaProxy, keyOf, re };
  }

  it.concurrent('look-ahead uploads that fail, lose their response, are corrupted or stall never turn into a false exit 0', async ({ expect }) => {
    const t = await setup('push');
    const segs: Seg[] = [];
    for (let n = 0x40; n < 0x45; n++) {
      const seg = await writeFakeSegment(t.walDir, n, { seed: n });
      await writeFile(join(t.walDir, 'archive_status', `${seg.name}.ready`), '');
      segs.push(seg);
    }
    const [s0, s1, s2, s3, s4] = segs as [Seg, Seg, Seg, Seg, Seg];
    t.proxy.addRule({ method: 'PUT', path: t.re(s1.name), action: fault.slowDown() }); // forever
    t.proxy.addRule({ method: 'PUT', path: t.re(s2.name), first: 1, action: fault.reset('after') }); // stored, response lost
    t.proxy.addRule({ method: 'PUT', path: t.re(s3.name), action: fault.flip(500, 1, 'request') }); // forever: BadDigest
    t.proxy.addRule({ method: 'PUT', path: t.re(s4.name), first: 1, action: fault.stall('before') });

    const stored = async (name: string) => (await getRaw(store, bucket, t.keyOf(name)))?.metadata['walvault-sha256'];
    // PostgreSQL's archiver, by hand: one wal-push per file in order; .ready becomes .done on exit 0.
    const archive = async (seg: Seg) => {
      const r = await runWalvault(['wal-push', `pg_wal/${seg.name}`, seg.name], { env: t.viaProxy, cwd: t.pgdata });
      if (r.code === 0) {
        // The contract, checked at the moment PostgreSQL would recycle the file.
        expect(await stored(seg.name), `${seg.name} exited 0 but is not stored\n${r.stderr}`).toBe(sha(seg.data));
        await rename(join(t.walDir, 'archive_status', `${seg.name}.ready`), join(t.walDir, 'archive_status', `${seg.name}.done`));
      }
      return r;
    };

    const first = await archive(s0);
    expect(first.code, first.stderr).toBe(0);
    expect(t.proxy.seen('PUT', t.re(s1.name)).length, 'the look-ahead tried the next file').toBeGreaterThan(0);

    // s1's own push while its fault persists: an error, never 0.
    const r1 = await archive(s1);
    expect(r1.code, r1.stderr).toBe(9);
    expect(await stored(s1.name)).toBeUndefined();
    const r1b = await runWalvault(['wal-push', `pg_wal/${s1.name}`, s1.name], { env: t.viaProxy, cwd: t.pgdata });
    expect(r1b.code, r1b.stderr).toBe(9);

    t.proxy.clearRules();
    t.proxy.addRule({ method: 'PUT', path: t.re(s3.name), action: fault.flip(500, 1, 'request') });
    for (const seg of [s1, s2]) {
      const r = await archive(seg);
      expect(r.code, `${seg.name}: ${r.stderr}`).toBe(0);
    }
    const r3 = await archive(s3);
    expect(r3.code, r3.stderr).toBe(10);
    expect(r3.stderr).toMatch(/IntegrityError: .*(BadDigest|XAmzContentSHA256Mismatch)/);
    expect(await stored(s3.name)).toBeUndefined();
    t.proxy.clearRules();
    for (const seg of [s3, s4]) {
      const r = await archive(seg);
      expect(r.code, `${seg.name}: ${r.stderr}`).toBe(0);
    }

    // Every object really holds its bytes: a verified fetch of each, straight from the store.
    for (const seg of segs) {
      const f = await runWalvault(['wal-fetch', seg.name, join(t.dir, 'check')], { env: { ...t.direct, WALVAULT_PREFETCH: '0' }, cwd: t.dir });
      expect(f.code, f.stderr).toBe(0);
      expect((await readFile(join(t.dir, 'check'))).equals(seg.data)).toBe(true);
    }
  });

  it.concurrent('prefetch that downloads corrupted, truncated or failing bodies never serves them', async ({ expect }) => {
    const t = await setup('prefetch');
    const segs: Seg[] = [];
    for (let n = 0x50; n < 0x55; n++) {
      const seg = await writeFakeSegment(t.dir, n, { seed: n });
      const r = await runWalvault(['wal-push', seg.path, seg.name], { env: t.direct });
      expect(r.code, r.stderr).toBe(0);
      segs.push(seg);
    }
    const [s0, s1, s2, s3, s4] = segs as [Seg, Seg, Seg, Seg, Seg];
    t.proxy.addRule({ method: 'GET', path: t.re(s1.name), action: fault.flip() });
    t.proxy.addRule({ method: 'GET', path: t.re(s2.name), action: fault.truncate() });
    t.proxy.addRule({ method: 'GET', path: t.re(s3.name), action: fault.slowDown() });
    const env = { ...t.viaProxy, WALVAULT_PREFETCH: '4' };
    await writeFile(join(t.pgdata, 'standby.signal'), '');

    const fetch = async (name: string) => {
      const r = await runWalvault(['wal-fetch', name, 'pg_wal/RECOVERYXLOG'], { env, cwd: t.pgdata });
      return { r, bytes: r.code === 0 ? await readFile(join(t.walDir, 'RECOVERYXLOG')) : undefined };
    };
    const f0 = await fetch(s0.name);
    expect(f0.r.code, f0.r.stderr).toBe(0);
    expect(f0.bytes!.equals(s0.data)).toBe(true);
    // The worker (a detached process) tries the next segments through the faulty proxy.
    await until('the prefetch worker to try every next segment', () =>
      [s1, s2, s3, s4].every((s) => t.proxy.seen('GET', t.re(s.name)).length > 0),
    );
    await until('the prefetch worker to finish', () => findFiles(join(t.dir, 'spool'), `${s4.name}.inflight`).length === 0 && findFiles(join(t.dir, 'spool'), s4.name).length > 0);
    await new Promise((r) => setTimeout(r, 500));
    for (const bad of [s1, s2, s3]) expect(findFiles(join(t.dir, 'spool'), bad.name), `${bad.name} kept in the spool`).toEqual([]);

    // PostgreSQL asks for the next ones while the faults persist: errors (1 on a standby), no file.
    const f1 = await fetch(s1.name);
    expect(f1.r.code, f1.r.stderr).toBe(1);
    expect(f1.r.stderr).toMatch(/IntegrityError: .*exiting 1 so PostgreSQL retries/);
    expect(existsSync(join(t.walDir, 'RECOVERYXLOG')) && readFileSync(join(t.walDir, 'RECOVERYXLOG')).equals(s1.data)).toBe(false);

    // Faults gone: every segment arrives complete and verified; s4 straight from the spool.
    t.proxy.clearRules();
    for (const seg of [s1, s2, s3, s4]) {
      const f = await fetch(seg.name);
      expect(f.r.code, `${seg.name}: ${f.r.stderr}`).toBe(0);
      expect(f.bytes!.equals(seg.data), `${seg.name} content`).toBe(true);
      if (seg === s4) expect(f.r.stderr).toMatch(/from the prefetch spool/);
    }
  });

  it.concurrent('a prefetch worker killed mid-download leaves nothing that is served', async ({ expect }) => {
    const t = await setup('prefetch-kill');
    const segs: Seg[] = [];
    for (let n = 0x60; n < 0x63; n++) {
      const seg = await writeFakeSegment(t.dir, n, { seed: n });
      expect((await runWalvault(['wal-push', seg.path, seg.name], { env: t.direct })).code).toBe(0);
      segs.push(seg);
    }
    const [s0, s1] = segs as [Seg, Seg];
    t.proxy.addRule({ method: 'GET', path: t.re(s1.name), action: fault.stall('response-body', 16 * 1024) });
    const env = { ...t.viaProxy, WALVAULT_PREFETCH: '2', WALVAULT_ATTEMPT_TIMEOUT: '30', WALVAULT_IDLE_TIMEOUT: '30' };
    await writeFile(join(t.pgdata, 'recovery.signal'), '');
    const f0 = await runWalvault(['wal-fetch', s0.name, 'pg_wal/RECOVERYXLOG'], { env, cwd: t.pgdata });
    expect(f0.code, f0.stderr).toBe(0);

    await until('the worker to be stuck on the stalled body', () =>
      t.proxy.seen('GET', t.re(s1.name)).length > 0 && findFiles(join(t.dir, 'spool'), 'worker.lock').length > 0,
    );
    await new Promise((r) => setTimeout(r, 300));
    const lock = findFiles(join(t.dir, 'spool'), 'worker.lock')[0]!;
    const pid = Number(readFileSync(lock, 'utf8'));
    expect(pid).toBeGreaterThan(0);
    process.kill(pid, 'SIGKILL');
    await until('the worker to die', () => {
      try {
        process.kill(pid, 0);
        return false;
      } catch {
        return true;
      }
    });
    // Whatever the worker left (a partial download, an in-flight marker, its lock), it is not served.
    t.proxy.clearRules();
    const f1 = await runWalvault(['wal-fetch', s1.name, 'pg_wal/RECOVERYXLOG'], { env: { ...env, ...FAST_TIMEOUTS, WALVAULT_DEADLINE: '20' }, cwd: t.pgdata });
    expect(f1.code, f1.stderr).toBe(0);
    const got = await readFile(join(t.walDir, 'RECOVERYXLOG'));
    expect(got.equals(s1.data)).toBe(true);
    expect(statSync(join(t.walDir, 'RECOVERYXLOG')).size).toBe(s1.data.length);
    expect(readdirSync(t.walDir).filter((n) => n.startsWith('.walvault-tmp.'))).toEqual([]);
  });
});
