// Fault table: one row per fault x command, each run through the fault proxy in front of a real
// store. Every row asserts the exit code, the one-line error on stderr, the state of %p (absent, or
// complete and identical) and of the store (the object intact and verified, absent, or unchanged;
// no multipart upload left). Rows are independent (own proxy, own key prefix, own spool) and run
// concurrently: most of their time is spent in deliberate timeouts and backoff.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { FAST_TIMEOUTS, fault, FaultProxy, type FaultAction, type FaultRule } from '../support/fault-proxy.js';
import { manifestFromHeader } from '../../src/archive/manifest.js';
import { parseWalHeader } from '../../src/wal/header.js';
import { createTestBucket, envFor, getRaw, listKeys, listMultipartUploads, putRaw, testStores, type TestStore } from '../support/stores.js';
import { writeFakeSegment } from '../support/wal-fixtures.js';
import { cleanupAll, runWalvault, tempDir, type WalvaultResult } from '../support/walvault.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

const DEADLINE_MS = Number(FAST_TIMEOUTS.WALVAULT_DEADLINE) * 1000;
/**
 * Wall-time slack on top of the deadline: Node start-up and the SDK load, which on a loaded 2-core
 * machine took up to 5 s. The tight check is on walvault's own "gave up after N attempts in X s".
 */
const SLACK_MS = 8000;

/**
 * Which key a fault hits: the segment's object, the repository manifest, the high-water mark
 * (state/), or the If-None-Match probe's key (state/probe/, written by the first push to a store).
 */
type Target = 'segment' | 'manifest' | 'state' | 'probe';
interface Fault {
  method: string;
  action: FaultAction;
  /** Only the first N matching requests; default: every one (a persistent fault). */
  first?: number;
  on?: Target;
  /** Only on these stores (default: all). */
  stores?: TestStore['name'][];
}

interface Row {
  name: string;
  cmd: 'push' | 'fetch';
  faults: Fault[];
  /** wal-fetch: the signal file in PGDATA (the command's working directory). */
  signal?: 'recovery' | 'standby';
  env?: Record<string, string>;
  /** push: an object with different content is already stored under the segment's key. */
  conflict?: boolean;
  /**
   * Swift answers 501 to If-None-Match and walvault falls back to HEAD then PUT; rows run there with
   * conditional writes off so that PUT faults hit the PUT that carries the data. This row keeps auto.
   */
  autoConditional?: boolean;
  /** The repository manifest is not created beforehand (rows about the manifest itself). */
  freshRepo?: boolean;
  /** fetch: the segment was never archived. */
  missing?: boolean;
  code: number;
  stderr?: RegExp;
  /** Wall time bounds, ms. */
  maxMs?: number;
  minMs?: number;
  /** At least this many requests of `method` to the segment key reached the proxy. */
  minRequests?: [string, number];
  /** Exactly this many (no retry of a definite answer). */
  exactRequests?: [string, number];
  stores?: TestStore['name'][];
}

const GAVE_UP = /StorageUnavailable: .*gave up after \d+ attempts? in [\d.]+s/;
const STOP = /exiting 255 to stop recovery/;
const STANDBY = /exiting 1 so PostgreSQL retries or streams \(standby\.signal present\)/;

const PUSH_ROWS: Row[] = [
  { name: '500 on the first 2 PUTs, then success', cmd: 'push', autoConditional: true, faults: [{ method: 'PUT', action: fault.internalError(), first: 2 }], code: 0, stderr: /attempt 2 failed .*HTTP 500 InternalError/, minRequests: ['PUT', 3] },
  { name: '503 SlowDown on the first 2 PUTs, then success', cmd: 'push', faults: [{ method: 'PUT', action: fault.slowDown(), first: 2 }], code: 0, stderr: /attempt 2 failed .*HTTP 503 SlowDown/, minRequests: ['PUT', 3] },
  { name: '503 forever (retries run out)', cmd: 'push', faults: [{ method: 'PUT', action: fault.slowDown() }], code: 9, stderr: GAVE_UP, maxMs: DEADLINE_MS + SLACK_MS },
  { name: '503 forever (unlimited retries: the deadline ends it)', cmd: 'push', faults: [{ method: 'PUT', action: fault.slowDown() }], env: { WALVAULT_RETRIES: '10000' }, code: 9, stderr: GAVE_UP, minMs: DEADLINE_MS - 500, maxMs: DEADLINE_MS + SLACK_MS },
  { name: '403 AccessDenied: not retried', cmd: 'push', faults: [{ method: 'PUT', action: fault.accessDenied() }], code: 8, stderr: /AccessDenied: S3 PutObject.* HTTP 403 AccessDenied/, exactRequests: ['PUT', 1] },
  { name: 'stall without a byte on the first PUT: attempt timeout, retried', cmd: 'push', faults: [{ method: 'PUT', action: fault.stall('before'), first: 1 }], code: 0, stderr: /attempt 1 failed .*timed out/ },
  { name: 'stall after the store wrote (reply withheld): retried, identical object is success', cmd: 'push', faults: [{ method: 'PUT', action: fault.stall('after'), first: 1 }], code: 0, stderr: /attempt 1 failed .*timed out[\s\S]*(already archived .*identical content|pushed)/ },
  { name: 'stall forever: the deadline ends it', cmd: 'push', faults: [{ method: 'PUT', action: fault.stall('before') }], env: { WALVAULT_RETRIES: '10000' }, code: 9, stderr: GAVE_UP, minMs: DEADLINE_MS - 500, maxMs: DEADLINE_MS + SLACK_MS },
  { name: 'reset before the PUT reaches the store', cmd: 'push', faults: [{ method: 'PUT', action: fault.reset('before'), first: 1 }], code: 0, stderr: /attempt 1 failed .*ECONNRESET|socket hang up/ },
  { name: 'reset mid-upload, then success', cmd: 'push', faults: [{ method: 'PUT', action: fault.reset('request-body', 16 * 1024), first: 1 }], code: 0, stderr: /attempt 1 failed/ },
  { name: 'reset mid-upload forever: no object', cmd: 'push', faults: [{ method: 'PUT', action: fault.reset('request-body', 16 * 1024) }], code: 9, stderr: GAVE_UP, maxMs: DEADLINE_MS + SLACK_MS },
  { name: 'reset after the store wrote (response lost): re-push of identical content is success', cmd: 'push', faults: [{ method: 'PUT', action: fault.reset('after'), first: 1 }], code: 0, stderr: /attempt 1 failed[\s\S]*(already archived .*identical content|pushed)/ },
  { name: 'response lost, then the HEAD after the 412 fails twice', cmd: 'push', faults: [{ method: 'PUT', action: fault.reset('after'), first: 1 }, { method: 'HEAD', action: fault.slowDown(), first: 2 }], code: 0 },
  { name: 'bytes flipped in the PUT body once: Content-MD5 catches it, retried', cmd: 'push', faults: [{ method: 'PUT', action: fault.flip(1000, 1, 'request'), first: 1 }], code: 0, stderr: /attempt 1 failed .*HTTP 400 (BadDigest|XAmzContentSHA256Mismatch)/ },
  { name: 'bytes flipped in every PUT body: error, nothing stored', cmd: 'push', faults: [{ method: 'PUT', action: fault.flip(1000, 1, 'request') }], code: 10, stderr: /IntegrityError: .*(BadDigest|XAmzContentSHA256Mismatch)/, maxMs: DEADLINE_MS + SLACK_MS },
  { name: 'delay of 600 ms', cmd: 'push', faults: [{ method: 'PUT', action: fault.delay(600) }], code: 0, minMs: 600 },
  // rgw: the conditional PUT of the segment fails twice, then 412. Swift: its first conditional PUT is
  // the probe's (501 → HEAD then PUT, where HEAD finds the object), so the 503s hit the probe.
  { name: 'different content already stored, 503 twice first: conflict, object unchanged', cmd: 'push', conflict: true, autoConditional: true, faults: [{ method: 'PUT', action: fault.slowDown(), first: 2, stores: ['rgw'] }, { method: 'PUT', action: fault.slowDown(), first: 2, on: 'probe', stores: ['swift'] }, { method: 'HEAD', action: fault.slowDown(), first: 1 }], code: 7, stderr: /ArchiveConflict: .*already archived with different content/ },
  { name: 'repository manifest unreadable (GET 500 forever) on the first push', cmd: 'push', freshRepo: true, faults: [{ method: 'GET', action: fault.internalError(), on: 'manifest' }], code: 9, stderr: /StorageUnavailable: read walvault\.json: gave up/, maxMs: DEADLINE_MS + SLACK_MS },
  { name: 'repository manifest GET reset mid-body once', cmd: 'push', freshRepo: true, faults: [{ method: 'GET', action: fault.reset('response-body', 10), first: 1, on: 'manifest' }], code: 0 },
  { name: 'high-water mark cannot be written (PUT 503 forever): the segment is safe, exit 0, warning', cmd: 'push', faults: [{ method: 'PUT', action: fault.slowDown(), on: 'state' }], env: { WALVAULT_HIGH_WATER_INTERVAL: '0.001' }, code: 0, stderr: /WARN: could not update the archive high-water mark for timeline 1: .*SlowDown/ },
];

const FETCH_ROWS: Row[] = [
  { name: '500 on the first 2 GETs, then success', cmd: 'fetch', signal: 'recovery', faults: [{ method: 'GET', action: fault.internalError(), first: 2 }], code: 0, stderr: /attempt 2 failed .*HTTP 500/, minRequests: ['GET', 3] },
  { name: '503 on the first 2 GETs, then success', cmd: 'fetch', signal: 'recovery', faults: [{ method: 'GET', action: fault.slowDown(), first: 2 }], code: 0, stderr: /attempt 2 failed .*HTTP 503 SlowDown/, minRequests: ['GET', 3] },
  { name: '503 forever in archive recovery: stop (> 125)', cmd: 'fetch', signal: 'recovery', faults: [{ method: 'GET', action: fault.slowDown() }], code: 255, stderr: new RegExp(`${GAVE_UP.source}.*${STOP.source}`), maxMs: DEADLINE_MS + SLACK_MS },
  { name: '503 forever with no signal file: stop (> 125)', cmd: 'fetch', faults: [{ method: 'GET', action: fault.slowDown() }], code: 255, stderr: /no standby\.signal: treated as archive recovery/, maxMs: DEADLINE_MS + SLACK_MS },
  { name: '503 forever on a standby: 1', cmd: 'fetch', signal: 'standby', faults: [{ method: 'GET', action: fault.slowDown() }], code: 1, stderr: new RegExp(`${GAVE_UP.source}.*${STANDBY.source}`), maxMs: DEADLINE_MS + SLACK_MS },
  { name: '503 forever with unlimited retries: the deadline ends it', cmd: 'fetch', signal: 'recovery', env: { WALVAULT_RETRIES: '10000' }, faults: [{ method: 'GET', action: fault.slowDown() }], code: 255, stderr: GAVE_UP, minMs: DEADLINE_MS - 500, maxMs: DEADLINE_MS + SLACK_MS },
  { name: '403 in archive recovery: an error, never not-found', cmd: 'fetch', signal: 'recovery', faults: [{ method: 'GET', action: fault.accessDenied() }], code: 255, stderr: /AccessDenied: S3 GetObject.*HTTP 403/, exactRequests: ['GET', 1] },
  { name: '403 on a standby: 1', cmd: 'fetch', signal: 'standby', faults: [{ method: 'GET', action: fault.accessDenied() }], code: 1, stderr: /AccessDenied: .*exiting 1 so PostgreSQL retries/ },
  { name: 'stall without a byte on the first GET: attempt timeout, retried', cmd: 'fetch', signal: 'recovery', faults: [{ method: 'GET', action: fault.stall('before'), first: 1 }], code: 0, stderr: /attempt 1 failed .*timed out/ },
  { name: 'stall mid-body on the first GET: attempt timeout, retried', cmd: 'fetch', signal: 'recovery', faults: [{ method: 'GET', action: fault.stall('response-body', 8 * 1024), first: 1 }], code: 0, stderr: /attempt 1 failed .*timed out/ },
  { name: 'stall mid-body forever: the deadline ends it, no file', cmd: 'fetch', signal: 'recovery', env: { WALVAULT_RETRIES: '10000' }, faults: [{ method: 'GET', action: fault.stall('response-body', 8 * 1024) }], code: 255, stderr: GAVE_UP, minMs: DEADLINE_MS - 500, maxMs: DEADLINE_MS + SLACK_MS },
  { name: 'reset mid-body once, then success', cmd: 'fetch', signal: 'recovery', faults: [{ method: 'GET', action: fault.reset('response-body', 8 * 1024), first: 1 }], code: 0, stderr: /attempt 1 failed .*ECONNRESET/ },
  { name: 'reset before the request forever: stop, no file', cmd: 'fetch', signal: 'recovery', faults: [{ method: 'GET', action: fault.reset('before') }], code: 255, stderr: GAVE_UP, maxMs: DEADLINE_MS + SLACK_MS },
  { name: 'truncated body once, then success', cmd: 'fetch', signal: 'recovery', faults: [{ method: 'GET', action: fault.truncate(), first: 1 }], code: 0, stderr: /attempt 1 failed/ },
  { name: 'truncated body every time: error, no file', cmd: 'fetch', signal: 'recovery', faults: [{ method: 'GET', action: fault.truncate() }], code: 255, stderr: GAVE_UP, maxMs: DEADLINE_MS + SLACK_MS },
  { name: 'flipped byte in the body once, then success', cmd: 'fetch', signal: 'recovery', faults: [{ method: 'GET', action: fault.flip(), first: 1 }], code: 0, stderr: /attempt 1 failed .*(failed verification|cannot be decompressed)/ },
  { name: 'flipped byte in every body: IntegrityError, no file', cmd: 'fetch', signal: 'recovery', faults: [{ method: 'GET', action: fault.flip() }], code: 255, stderr: /IntegrityError: .*(failed verification|cannot be decompressed).*exiting 255/, maxMs: DEADLINE_MS + SLACK_MS },
  { name: 'flipped byte in every body, uncompressed object: IntegrityError, no file', cmd: 'fetch', signal: 'recovery', env: { WALVAULT_COMPRESSION: 'none' }, faults: [{ method: 'GET', action: fault.flip(4096) }], code: 255, stderr: /IntegrityError: .*failed verification: got 1048576 bytes with SHA-256 [0-9a-f]{64}, expected 1048576 bytes/ },
  { name: 'delay of 600 ms', cmd: 'fetch', signal: 'recovery', faults: [{ method: 'GET', action: fault.delay(600) }], code: 0, minMs: 600 },
  { name: 'not archived (404 through the proxy): 1, no file', cmd: 'fetch', signal: 'recovery', missing: true, faults: [], code: 1, stderr: /not in .* \(not found\); exiting 1/ },
  { name: 'a store that answers 404 for an archived segment (at the high-water mark): WalGap, never 1', cmd: 'fetch', signal: 'recovery', faults: [{ method: 'GET', action: fault.status(404) }], code: 255, stderr: /WalGap: .* is missing .*a gap in the archive, not the end of WAL.*exiting 255/ },
  { name: 'not archived, and the high-water mark unreadable (503 forever): an error, never 1', cmd: 'fetch', signal: 'recovery', missing: true, faults: [{ method: 'GET', action: fault.slowDown(), on: 'state' }], code: 255, stderr: /StorageUnavailable: .*not found, and the high-water mark cannot be read.*exiting 255/, maxMs: DEADLINE_MS + SLACK_MS },
];

// wal-fetch is one GET whatever the store: Swift runs a few fetch rows (its own error answers and
// 404), radosgw all of them. wal-push differs per store (If-None-Match vs HEAD then PUT): both run all.
const SWIFT_FETCH_ROWS = new Set([
  '503 on the first 2 GETs, then success',
  '403 in archive recovery: an error, never not-found',
  'truncated body every time: error, no file',
  'not archived (404 through the proxy): 1, no file',
]);
const ROWS = [...PUSH_ROWS, ...FETCH_ROWS.map((r) => (SWIFT_FETCH_ROWS.has(r.name) ? r : { ...r, stores: ['rgw' as const] }))];

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** The one error line: the last line of stderr, which must carry the error class. */
function lastLine(r: WalvaultResult): string {
  return r.stderr.trimEnd().split('\n').at(-1) ?? '';
}

describe.each(testStores())('faults x wal-push / wal-fetch on $name', (store) => {
  let bucket: string;
  let work: string;
  const proxies: FaultProxy[] = [];

  beforeAll(async () => {
    bucket = await createTestBucket(store, 'faults');
    work = await tempDir('wv-faults');
  });
  afterAll(async () => {
    await Promise.all(proxies.map((p) => p.close()));
    await cleanupAll();
  });

  const rows = ROWS.map((row, i) => ({ ...row, i })).filter((r) => !r.stores || r.stores.includes(store.name));

  it.concurrent.for(rows)('$cmd: $name', async (row, { expect }) => {
    const dir = join(work, `row${row.i}`);
    const pgdata = join(dir, 'pgdata');
    await mkdir(join(pgdata, 'pg_wal'), { recursive: true });
    if (row.signal) await writeFile(join(pgdata, `${row.signal}.signal`), '');
    const prefix = `r${row.i}`;
    const conditional: Record<string, string> = store.conditionalWrites || row.autoConditional ? {} : { WALVAULT_S3_CONDITIONAL_WRITES: 'off' };
    // Prefetch (a detached worker fetching the next segments) has its own suite: faults-lookahead.
    const direct = { ...envFor(store, bucket, prefix), WALVAULT_SPOOL: join(dir, 'spool'), WALVAULT_PREFETCH: '0', ...conditional, ...row.env };
    const proxy = await FaultProxy.start({ upstream: store.endpoint, seed: row.i + 1 });
    proxies.push(proxy);
    // Rows that end in success get a long deadline: only the "forever" rows are about the deadline,
    // and a loaded 2-core machine must not turn a slow Node start-up into a failed row.
    const relaxed: Record<string, string> = row.code === 0 || (row.code === 1 && row.missing) ? { WALVAULT_DEADLINE: '30' } : {};
    const viaProxy = { ...direct, AWS_ENDPOINT_URL_S3: proxy.url, ...FAST_TIMEOUTS, ...relaxed, ...row.env };

    const segno = 16 + row.i;
    const seg = await writeFakeSegment(dir, segno, { seed: 1000 + row.i });
    const key = `${prefix}/wal/${seg.name.slice(0, 16)}/${seg.name}`;
    const keyRe = new RegExp(`/${escape(key)}(\\?|$)`);

    // Preparation straight to the store (no proxy, default timeouts). The repository manifest is
    // created up front, so that the short deadline is spent on the faulted request, not on setup
    // (and a fetch of a file never archived asks an existing repository: one without walvault.json
    // is missing, never "not found").
    if (!row.freshRepo && ((row.cmd === 'push' && !row.conflict) || (row.cmd === 'fetch' && row.missing))) {
      const body = Buffer.from(JSON.stringify(manifestFromHeader(parseWalHeader(seg.data, seg.name))));
      await putRaw(store, bucket, `${prefix}/walvault.json`, body, {
        'walvault-sha256': sha(body),
        'walvault-size': String(body.length),
        'walvault-codec': 'none',
      });
    }
    let before: { body: Buffer; metadata: Record<string, string> } | null = null;
    if (row.cmd === 'fetch' && !row.missing) {
      const r = await runWalvault(['wal-push', seg.path, seg.name], { env: direct });
      expect(r.code, r.stderr).toBe(0);
    }
    if (row.conflict) {
      const other = await writeFakeSegment(join(dir, 'pgdata'), segno, { seed: 5000 + row.i });
      const r = await runWalvault(['wal-push', other.path, other.name], { env: direct });
      expect(r.code, r.stderr).toBe(0);
      before = await getRaw(store, bucket, key);
    }

    for (const f of row.faults) {
      if (f.stores && !f.stores.includes(store.name)) continue;
      const path =
        f.on === 'probe'
          ? new RegExp(`/${escape(prefix)}/state/probe/`)
          : f.on === 'manifest'
            ? new RegExp(`/${escape(prefix)}/walvault\\.json(\\?|$)`)
            : f.on === 'state'
              ? new RegExp(`/${escape(prefix)}/state/(?!probe/)`) // not the If-None-Match probe
              : keyRe;
      const rule: FaultRule = { method: f.method, path, action: f.action, ...(f.first !== undefined ? { first: f.first } : {}) };
      proxy.addRule(rule);
    }

    const dest = join(pgdata, 'pg_wal', 'RECOVERYXLOG');
    const r =
      row.cmd === 'push'
        ? await runWalvault(['wal-push', seg.path, seg.name], { env: viaProxy, cwd: pgdata })
        : await runWalvault(['wal-fetch', seg.name, 'pg_wal/RECOVERYXLOG'], { env: viaProxy, cwd: pgdata });
    const context = `exit ${r.code} in ${Math.round(r.ms)} ms\n${r.stderr}\nproxy: ${JSON.stringify(proxy.stats())}`;

    // Exit code and the one clear line.
    expect(r.signal, context).toBeNull();
    expect(r.code, context).toBe(row.code);
    if (row.stderr) expect(r.stderr, context).toMatch(row.stderr);
    if (row.code !== 0 && !(row.code === 1 && row.missing)) {
      expect(lastLine(r), context).toMatch(/ERROR: [A-Za-z]+: /);
      expect(r.stderr.split('\n').filter((l) => / ERROR: /.test(l)), context).toHaveLength(1);
    }
    if (row.cmd === 'push') expect(r.code, 'wal-push never exits above 125').toBeLessThanOrEqual(125);
    if (row.maxMs) {
      expect(r.ms, context).toBeLessThan(row.maxMs);
      const gaveUp = /gave up after \d+ attempts? in ([\d.]+)s/.exec(r.stderr);
      if (gaveUp) expect(Number(gaveUp[1]) * 1000, `retried past the deadline\n${context}`).toBeLessThanOrEqual(DEADLINE_MS + 500);
    }
    if (row.minMs) expect(r.ms, context).toBeGreaterThanOrEqual(row.minMs);
    if (row.minRequests) expect(proxy.seen(row.minRequests[0], keyRe).length, context).toBeGreaterThanOrEqual(row.minRequests[1]);
    if (row.exactRequests) expect(proxy.seen(row.exactRequests[0], keyRe).length, context).toBe(row.exactRequests[1]);
    // Every injected fault was really hit (a row whose fault never fires tests nothing).
    for (const s of proxy.stats().rules) expect(s.injected, `${s.name} never fired\n${context}`).toBeGreaterThan(0);

    // %p: complete and identical, or absent; never a temp file left beside it.
    if (row.cmd === 'fetch') {
      if (row.code === 0) expect((await readFile(dest)).equals(seg.data), context).toBe(true);
      else expect(existsSync(dest), context).toBe(false);
      expect(readdirSync(join(pgdata, 'pg_wal')).filter((n) => n.includes('walvault-tmp')), context).toEqual([]);
    }

    // The store: the object verified, absent, or unchanged; nothing half-written.
    const stored = await getRaw(store, bucket, key);
    if (row.conflict) {
      expect(stored!.body.equals(before!.body), 'conflicting object overwritten').toBe(true);
      expect(stored!.metadata).toEqual(before!.metadata);
    } else if (row.missing || (row.cmd === 'push' && row.code !== 0)) {
      expect(stored, `${key} should not exist\n${context}`).toBeNull();
    } else {
      expect(stored, context).not.toBeNull();
      expect(stored!.metadata['walvault-sha256']).toBe(sha(seg.data));
      expect(stored!.metadata['walvault-size']).toBe(String(seg.data.length));
    }
    const walKeys = await listKeys(store, bucket, `${prefix}/wal/`);
    expect(walKeys.filter((k) => k !== key), 'unexpected objects').toEqual([]);
    expect((await listMultipartUploads(store, bucket)).filter((u) => u.key.startsWith(`${prefix}/`))).toEqual([]);
    await proxy.close();
  });
});
