// Trust at the edges (issue 8, items 1 and 13), through the fault proxy in front of a real store.
// Only the bucket's own answers count: a 404 that is not S3's NoSuchKey (an HTML page, an empty
// body, another error code, and every HEAD 404 until a GET confirms it) and a "listing" that is not a
// ListBucketResult are endpoint errors, retried, then the recovery-mode policy; never "not found",
// never "no objects". A store that accepts If-None-Match and ignores it is detected once per store,
// remembered in the spool, and never overwrites an archived segment.
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createS3Storage } from '../../src/storage/s3/driver.js';
import type { Storage } from '../../src/storage/types.js';
import { FAST_TIMEOUTS, fault, FaultProxy, type FaultAction } from '../support/fault-proxy.js';
import { createTestBucket, envFor, getRaw, listKeys, s3OptionsFor, testStores, type TestStore } from '../support/stores.js';
import { segName, writeFakeSegment } from '../support/wal-fixtures.js';
import { failure } from '../support/rejection.js';
import { cleanupAll, runWalvault, tempDir, type WalvaultResult } from '../support/walvault.js';

const GAVE_UP = /StorageUnavailable: .*gave up after \d+ attempts? in [\d.]+s/;
const NOT_AUTHORITATIVE = /not an authoritative "not found"/;
const STOP = /exiting 255 to stop recovery/;
const STANDBY = /exiting 1 so PostgreSQL retries or streams \(standby\.signal present\)/;
const CONDITIONAL_WARNING = /WARN: .*accepts If-None-Match but does not enforce it.*using HEAD then PUT/g;

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const show = (r: WalvaultResult, proxy?: FaultProxy) =>
  `exit ${r.code} in ${Math.round(r.ms)} ms\n${r.stderr}${r.stdout}${proxy ? `\nproxy: ${JSON.stringify(proxy.stats())}` : ''}`;

/**
 * Retries end by count, not by the deadline: nine walvault processes start at once on a loaded
 * 2-core machine, and a 5 s deadline can run out before the SDK has even loaded.
 */
const FEW_RETRIES = { WALVAULT_RETRIES: '2', WALVAULT_DEADLINE: '60', WALVAULT_ATTEMPT_TIMEOUT: '20' };

const NOT_S3_404: [string, FaultAction][] = [
  ['html 404', fault.html404()],
  ['empty 404', fault.empty404()],
  ['a 404 with another S3 error code', fault.status(404, 'NoSuchWebsiteConfiguration', 'The specified bucket does not have a website configuration')],
];
/** Cheap driver-level checks also cover a body that is not XML at all. */
const ANY_404: [string, FaultAction][] = [...NOT_S3_404, ['plain-text 404', fault.text404()]];

describe.each(testStores())('trust at the edges on $name', (store: TestStore) => {
  let bucket: string;
  let work: string;
  let n = 0;
  const proxies: FaultProxy[] = [];
  const opened: Storage[] = [];

  beforeAll(async () => {
    bucket = await createTestBucket(store, `trust-${store.name}`);
    work = await tempDir('wv-trust');
  });
  afterAll(async () => {
    for (const s of opened) s.close();
    await Promise.all(proxies.map((p) => p.close()));
    await cleanupAll();
  });

  async function proxyFor(): Promise<FaultProxy> {
    const p = await FaultProxy.start({ upstream: store.endpoint, secretAccessKey: store.secretAccessKey });
    proxies.push(p);
    return p;
  }

  /** A fresh repository prefix, working directory and spool; env straight to the store or via a proxy. */
  async function fresh() {
    const i = ++n;
    const dir = join(work, `t${i}`);
    await mkdir(dir, { recursive: true });
    const prefix = `t${i}`;
    const direct = { ...envFor(store, bucket, prefix), WALVAULT_SPOOL: join(dir, 'spool'), WALVAULT_PREFETCH: '0' };
    const via = (p: FaultProxy, extra: Record<string, string> = {}) => ({ ...direct, AWS_ENDPOINT_URL_S3: p.url, ...FAST_TIMEOUTS, ...extra });
    const storage = (endpoint: string) => {
      const s = createS3Storage(s3OptionsFor(store, bucket, { prefix, endpoint }));
      opened.push(s);
      return s;
    };
    return { dir, prefix, direct, via, storage, keyOf: (name: string) => `${prefix}/wal/${name.slice(0, 16)}/${name}` };
  }

  /** A PGDATA-like working directory with the signal file of that recovery mode. */
  async function pgdataFor(dir: string, signal: 'none' | 'recovery' | 'standby'): Promise<string> {
    const pgdata = join(dir, `pgdata-${signal}`);
    await mkdir(join(pgdata, 'pg_wal'), { recursive: true });
    if (signal !== 'none') await writeFile(join(pgdata, `${signal}.signal`), '');
    return pgdata;
  }

  it.concurrent.for(NOT_S3_404)('trust: %s is not "not found"', async ([, action]) => {
    const t = await fresh();
    const proxy = await proxyFor();
    // Every read under the repository answers like that: a misrouted gateway, a proxy's error page.
    proxy.addRule({ method: ['GET', 'HEAD'], path: new RegExp(`^/${escape(bucket)}/${escape(t.prefix)}/`), action });
    const name = segName(20);
    const keyRe = new RegExp(`/${escape(t.keyOf(name))}(\\?|$)`);
    const runs = await Promise.all(
      (['none', 'recovery', 'standby'] as const).map(async (signal) => {
        const pgdata = await pgdataFor(t.dir, signal);
        const r = await runWalvault(['wal-fetch', name, 'pg_wal/RECOVERYXLOG'], { env: t.via(proxy, FEW_RETRIES), cwd: pgdata });
        return { signal, r, pgdata };
      }),
    );
    for (const { signal, r, pgdata } of runs) {
      const context = `${signal}: ${show(r, proxy)}`;
      expect(r.signal, context).toBeNull();
      expect(r.code, context).toBe(signal === 'standby' ? 1 : 255);
      expect(r.stderr, context).toMatch(/StorageUnavailable: .*gave up after 3 attempts/);
      expect(r.stderr, context).toMatch(NOT_AUTHORITATIVE);
      expect(r.stderr, context).toMatch(signal === 'standby' ? STANDBY : STOP);
      expect(r.stderr, context).not.toMatch(/\(not found\)/);
      expect(r.stderr.split('\n').filter((l) => / ERROR: /.test(l)), context).toHaveLength(1);
      // Nothing at %p, no temp file beside it.
      expect(readdirSync(join(pgdata, 'pg_wal')), context).toEqual([]);
    }
    // Retried like any endpoint error (not a definite answer): more than one GET per run.
    expect(proxy.seen('GET', keyRe).length, JSON.stringify(proxy.stats())).toBeGreaterThan(3);
  });

  it('trust: S3 NoSuchKey is still "not found" (exit 1 in archive recovery)', async () => {
    const t = await fresh();
    const proxy = await proxyFor();
    const pgdata = await pgdataFor(t.dir, 'recovery');
    // A repository (walvault.json present): one without it is missing, never "not found".
    const first = await writeFakeSegment(t.dir, 1);
    expect((await runWalvault(['wal-push', first.path, first.name], { env: t.direct })).code).toBe(0);
    const r = await runWalvault(['wal-fetch', segName(21), 'pg_wal/RECOVERYXLOG'], { env: t.via(proxy, { WALVAULT_DEADLINE: '30' }), cwd: pgdata });
    expect(r.code, show(r, proxy)).toBe(1);
    expect(r.stderr).toMatch(/is not in .* \(not found\); exiting 1/);
    expect(readdirSync(join(pgdata, 'pg_wal'))).toEqual([]);
    // And at the driver: GET and HEAD (confirmed by a ranged GET) say null.
    const s = t.storage(proxy.url);
    expect(await s.get('wal/nope')).toBeNull();
    expect(await s.head('wal/nope')).toBeNull();
  });

  it('trust: a HEAD 404 is "not found" only when a GET confirms it with NoSuchKey', async () => {
    const t = await fresh();
    const proxy = await proxyFor();
    const s = t.storage(proxy.url);
    const body = randomBytes(3000);
    const meta = { sha256: sha(body), size: String(body.length), codec: 'none' };
    await s.put('wal/exists', body, meta);

    // Every HEAD gets a web server's 404; the GET that confirms it reaches the bucket.
    proxy.addRule({ method: 'HEAD', action: fault.html404() });
    expect(await s.head('wal/missing')).toBeNull();
    expect(await s.head('wal/exists')).toMatchObject({ key: 'wal/exists', storedSize: body.length, meta });
    expect(proxy.seen('GET', /\/wal\/exists(\?|$)/)).toHaveLength(1);

    // Both HEAD and GET answered by something that is not the bucket: an error, for either key.
    for (const [label, action] of ANY_404) {
      const rule = proxy.addRule({ method: 'GET', action });
      for (const key of ['wal/missing', 'wal/exists']) {
        for (const call of [() => s.head(key), () => s.get(key)]) {
          const e = await failure(call());
          expect(e.code, `${label} ${key}: ${e.message}`).toBe('StorageUnavailable');
          expect(e.retryable).toBe(true);
          expect(e.message).toMatch(NOT_AUTHORITATIVE);
          expect(e.message).toMatch(/HTTP 404/);
          expect(e.message).not.toContain('\n');
        }
      }
      proxy.removeRule(rule);
    }
  });

  it('trust: a HEAD 404 from a proxy never lets wal-push overwrite or fail an archived segment', async () => {
    const t = await fresh();
    const proxy = await proxyFor();
    const a = await writeFakeSegment(await pgdataFor(t.dir, 'none'), 22, { seed: 1 });
    const pushed = await runWalvault(['wal-push', a.path, a.name], { env: t.direct });
    expect(pushed.code, show(pushed)).toBe(0);
    const key = t.keyOf(a.name);
    const before = await getRaw(store, bucket, key);
    proxy.addRule({ method: 'HEAD', path: new RegExp(`/${escape(key)}(\\?|$)`), action: fault.html404() });
    // Its own spool: the direct push's record would answer the identical re-push without a request.
    const spool = { WALVAULT_SPOOL: join(t.dir, 'spool-proxy') };

    // HEAD then PUT (conditional writes off): the 404 page must not read as "free to write".
    const otherDir = join(t.dir, 'other');
    await mkdir(otherDir);
    const b = await writeFakeSegment(otherDir, 22, { seed: 2 });
    const off = await runWalvault(['wal-push', b.path, b.name], { env: t.via(proxy, { ...spool, WALVAULT_S3_CONDITIONAL_WRITES: 'off' }) });
    expect(off.code, show(off, proxy)).toBe(7);
    expect(off.stderr).toMatch(/ArchiveConflict: .*already archived with different content/);
    const after = await getRaw(store, bucket, key);
    expect(after!.body.equals(before!.body), 'archived segment overwritten').toBe(true);
    expect(after!.metadata).toEqual(before!.metadata);

    // A re-push of identical content after a 412 (rgw) or a HEAD (Swift): the object is found.
    const same = await runWalvault(['wal-push', a.path, a.name], { env: t.via(proxy, { ...spool, WALVAULT_DEADLINE: '30' }) });
    expect(same.code, show(same, proxy)).toBe(0);
    expect(same.stderr).toMatch(/already archived .*identical content/);
  });

  it('trust: an Object Lock bucket refusing the probe does not stop wal-push', async () => {
    const t = await fresh();
    const proxy = await proxyFor();
    // What an Object Lock bucket answers a PutObject without Content-MD5 (or a checksum); here for
    // any probe PUT, like a bucket policy denying the probe's key: an answer the probe cannot read.
    const probeRe = new RegExp(`^/${escape(bucket)}/${escape(t.prefix)}/state/probe/`);
    proxy.addRule({
      method: 'PUT',
      path: probeRe,
      action: fault.status(400, 'InvalidRequest', 'Content-MD5 OR x-amz-checksum- HTTP header is required for Put Object requests with Object Lock parameters'),
    });
    const env = t.via(proxy, { WALVAULT_S3_CONDITIONAL_WRITES: 'auto', WALVAULT_LOOKAHEAD: '0', WALVAULT_DEADLINE: '30' });
    const dir = await pgdataFor(t.dir, 'none');
    for (const segno of [1, 2]) {
      const s = await writeFakeSegment(dir, segno);
      const before = proxy.seen('PUT', probeRe).length;
      const r = await runWalvault(['wal-push', s.path, s.name], { env });
      expect(r.code, show(r, proxy)).toBe(0);
      expect(r.stderr.match(/WARN: .*If-None-Match probe failed .*HTTP 400 InvalidRequest.*using HEAD then PUT/g), r.stderr).toHaveLength(1);
      // Not remembered: every process asks again (the bucket may be fixed, or the answer passing).
      expect(proxy.seen('PUT', probeRe).length).toBeGreaterThan(before);
      expect((await getRaw(store, bucket, t.keyOf(s.name)))?.metadata['walvault-sha256']).toBe(sha(s.data));
    }
  });

  it('trust: a web page or a 404 page is not an empty listing', async () => {
    const t = await fresh();
    const proxy = await proxyFor();
    const listRe = /[?&]list-type=2(&|$)/;
    // A real, empty listing first: the check accepts what the store really answers.
    const ok = await runWalvault(['backup-list'], { env: t.via(proxy) });
    expect(ok.code, show(ok, proxy)).toBe(0);
    expect(ok.stdout).toBe('no backups\n');

    // 200 from something else: an empty body (a health check answer), a page that is not XML.
    const notListings: [string, FaultAction, RegExp][] = [
      ['empty 200', { type: 'status', status: 200, body: 'empty' }, /no ListBucketResult, not a listing of bucket/],
      ['HTML 200', fault.htmlPage(200), /no ListBucketResult, not a listing of bucket/],
      ['plain-text 200', { type: 'status', status: 200, body: 'text' }, /not S3's XML/],
    ];
    for (const [label, action, why] of notListings) {
      const rule = proxy.addRule({ method: 'GET', path: listRe, action });
      const r = await runWalvault(['backup-list'], { env: t.via(proxy, FEW_RETRIES) });
      expect(r.code, `${label}: ${show(r, proxy)}`).toBe(9);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(GAVE_UP);
      expect(r.stderr).toMatch(why);
      proxy.removeRule(rule);
    }

    for (const [label, action] of ANY_404) {
      const rule = proxy.addRule({ method: 'GET', path: listRe, action });
      const seenBefore = proxy.seen('GET', listRe).length;
      const e = await runWalvault(['backup-list'], { env: t.via(proxy, FEW_RETRIES) });
      expect(e.code, `${label}: ${show(e, proxy)}`).toBe(9);
      expect(e.stdout).toBe('');
      expect(e.stderr).toMatch(GAVE_UP);
      expect(e.stderr).toMatch(NOT_AUTHORITATIVE);
      expect(proxy.seen('GET', listRe).length - seenBefore, label).toBe(3);
      proxy.removeRule(rule);
    }

    // At the driver too: list() never yields "no objects" from a page.
    proxy.addRule({ method: 'GET', path: listRe, action: notListings[0]![1] });
    const s = t.storage(proxy.url);
    const e = await failure((async () => {
      for await (const _ of s.list('wal/')) void _;
    })());
    expect(e.code).toBe('StorageUnavailable');
    expect(e.retryable).toBe(true);
  });

  it('trust: a store that ignores If-None-Match is never overwritten', async () => {
    const t = await fresh();
    const proxy = await proxyFor();
    proxy.addRule({ method: 'PUT', action: fault.ignoreIfNoneMatch() });
    const probeRe = new RegExp(`^/${escape(bucket)}/${escape(t.prefix)}/state/probe/`);
    const a = await writeFakeSegment(await pgdataFor(t.dir, 'none'), 23, { seed: 1 });
    const key = t.keyOf(a.name);
    const env = t.via(proxy, { WALVAULT_DEADLINE: '30' });

    // First push: the probe finds out (two conditional PUTs of a probe key, both accepted), says so
    // once, removes its probe object, and pushes with HEAD then PUT.
    const first = await runWalvault(['wal-push', a.path, a.name], { env });
    expect(first.code, show(first, proxy)).toBe(0);
    expect(first.stderr.match(CONDITIONAL_WARNING), show(first, proxy)).toHaveLength(1);
    expect(proxy.seen('PUT', probeRe)).toHaveLength(2);
    expect(await listKeys(store, bucket, `${t.prefix}/state/probe/`)).toEqual([]);
    const before = await getRaw(store, bucket, key);
    expect(before!.body.length).toBeGreaterThan(0);
    const file = join(t.direct.WALVAULT_SPOOL, 'repos');
    const capabilities = readdirSync(file).map((d) => join(file, d, 's3-capabilities.json')).filter((f) => existsSync(f));
    expect(capabilities).toHaveLength(1);
    expect(JSON.parse(readFileSync(capabilities[0]!, 'utf8'))).toEqual({ conditionalWrites: { [`${proxy.url}|${bucket}`]: 'ignored' } });

    // Another cluster's segment under the same name: the remembered answer is used (no probe, no
    // warning), HEAD finds the archived object, and nothing is overwritten.
    const otherDir = join(t.dir, 'other');
    await mkdir(otherDir);
    const b = await writeFakeSegment(otherDir, 23, { seed: 2 });
    const second = await runWalvault(['wal-push', b.path, b.name], { env });
    expect(second.code, show(second, proxy)).toBe(7);
    expect(second.stderr).toMatch(/ArchiveConflict: .*already archived with different content/);
    expect(second.stderr).not.toMatch(CONDITIONAL_WARNING);
    expect(proxy.seen('PUT', probeRe)).toHaveLength(2);
    const after = await getRaw(store, bucket, key);
    expect(after!.body.equals(before!.body), 'archived segment overwritten').toBe(true);
    expect(after!.metadata).toEqual(before!.metadata);

    // s3ConditionalWrites=on refuses such a store (fresh spool: probed again, exit 4).
    const on = await runWalvault(['wal-push', b.path, b.name], { env: { ...env, WALVAULT_SPOOL: join(t.dir, 'spool-on'), WALVAULT_S3_CONDITIONAL_WRITES: 'on' } });
    expect(on.code, show(on, proxy)).toBe(4);
    expect(on.stderr).toMatch(/ConfigError: .*does not enforce it.*could overwrite an archived object.*set conditional writes to auto or off/);
    expect(proxy.seen('PUT', probeRe)).toHaveLength(4);
    expect((await getRaw(store, bucket, key))!.body.equals(before!.body)).toBe(true);

    // The answer belongs to the endpoint, not to the repository: straight to the store, the same
    // spool keeps another repository directory (the spool is keyed by endpoint), probes again and
    // records that store's own answer there; the proxy's answer is untouched.
    const c = await writeFakeSegment(otherDir, 24, { seed: 3 });
    const direct = await runWalvault(['wal-push', c.path, c.name], { env: t.direct });
    expect(direct.code, show(direct)).toBe(0);
    const all = readdirSync(file).map((d) => join(file, d, 's3-capabilities.json')).filter((f) => existsSync(f));
    expect(all).toHaveLength(2);
    expect(JSON.parse(readFileSync(capabilities[0]!, 'utf8'))).toEqual({ conditionalWrites: { [`${proxy.url}|${bucket}`]: 'ignored' } });
    const directFile = all.find((f) => f !== capabilities[0])!;
    expect(JSON.parse(readFileSync(directFile, 'utf8'))).toEqual({
      conditionalWrites: { [`${store.endpoint}|${bucket}`]: store.conditionalWrites ? 'enforced' : 'unsupported' },
    });
  });
});
