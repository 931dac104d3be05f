// Soak: a real PostgreSQL 15 (1 MiB segments) under pgbench, archive_command through walvault, and
// walvault's S3 endpoint is the fault proxy injecting random faults (503s, resets mid-body, stalls,
// lost responses). Afterwards, with the faults off, every segment PostgreSQL archived must be in the
// store, contiguous from the first segment of the run to the last, with the SHA-256 of the local
// segment, and each stored object must decode to the bytes its metadata promises.
//
// CI runs it for 60 s; scripts/soak/run.sh [minutes] runs it longer (WALVAULT_SOAK_SECONDS).
// Knobs: WALVAULT_SOAK_SEED (fault RNG), WALVAULT_SOAK_RATE (pgbench -R, transactions/s).
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { zstdDecompressSync, gunzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { fault, FaultProxy } from '../support/fault-proxy.js';
import { PgCluster } from '../support/pg.js';
import { createTestBucket, getRaw, listKeys, testStores, writeRepoConfig } from '../support/stores.js';
import { cleanupAll, tempDir, walvaultBin } from '../support/walvault.js';

const SECONDS = Number(process.env.WALVAULT_SOAK_SECONDS ?? 60);
const SEED = Number(process.env.WALVAULT_SOAK_SEED ?? 20250101);
const RATE = Number(process.env.WALVAULT_SOAK_RATE ?? 250);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const maybeStore = testStores().find((s) => s.name === 'rgw') ?? testStores()[0];

/** Segment number (timeline 1, 1 MiB segments) <-> name. */
const segno = (name: string) => parseInt(name.slice(8, 16), 16) * 4096 + parseInt(name.slice(16, 24), 16);
const segName = (n: number) =>
  `00000001${Math.floor(n / 4096).toString(16).toUpperCase().padStart(8, '0')}${(n % 4096).toString(16).toUpperCase().padStart(8, '0')}`;

describe.skipIf(!maybeStore)('soak: archiving under pgbench through a faulty network', () => {
  if (!maybeStore) return;
  const store = maybeStore;
  let pg: PgCluster | undefined;
  let proxy: FaultProxy | undefined;
  afterAll(async () => {
    await pg?.destroy();
    await proxy?.close();
    await cleanupAll();
  });

  it(`archives every segment with faults injected (${SECONDS} s)`, { timeout: (SECONDS + 420) * 1000 }, async () => {
    const started = Date.now();
    const bucket = await createTestBucket(store, 'soak');
    proxy = await FaultProxy.start({ upstream: store.endpoint, seed: SEED });
    const home = await tempDir('wv-soak', { forPostgres: true });
    const configFile = await writeRepoConfig(store, bucket, 'soak', home, {
      s3Endpoint: proxy.url, // loopback: reachable from the archiver running as postgres
      deadline: 20,
      attemptTimeout: 2,
      idleTimeout: 1,
      connectTimeout: 1,
      retries: 20,
      retryMinDelay: 0.05,
      retryMaxDelay: 0.5,
    });
    const bin = await walvaultBin();

    // Keep every segment of the run in pg_wal so that each one can be compared with the store.
    const keepMb = Math.max(1024, Math.ceil(SECONDS / 60) * 600);
    pg = await PgCluster.create({
      walSegSizeMb: 1,
      conf: {
        archive_mode: 'on',
        archive_command: `${bin} --config ${configFile} wal-push %p %f`,
        archive_timeout: 0,
        wal_keep_size: `${keepMb}MB`,
        max_wal_size: '256MB',
        checkpoint_timeout: '30s',
      },
    });
    await pg.start({ env: { AWS_EC2_METADATA_DISABLED: 'true' } });
    const first = await pg.query('SELECT pg_walfile_name(pg_current_wal_lsn())');

    // The faults: on every request of every key, drawn from a seeded RNG.
    const segKey = /\/soak\/wal\//;
    proxy.addRule({ name: '503 SlowDown', path: segKey, probability: 0.1, action: fault.slowDown() });
    proxy.addRule({ name: 'reset mid-upload', method: 'PUT', path: segKey, probability: 0.03, action: fault.reset('request-body') });
    proxy.addRule({ name: 'reset mid-body', method: ['GET', 'HEAD'], path: segKey, probability: 0.03, action: fault.reset('response-body') });
    proxy.addRule({ name: 'stall (no bytes)', path: segKey, probability: 0.02, action: fault.stall('before') });
    proxy.addRule({ name: 'response lost (store wrote)', method: 'PUT', path: segKey, probability: 0.02, action: fault.reset('after') });
    proxy.addRule({ name: '500 on anything else', probability: 0.05, action: fault.internalError() });

    // TPC-B plus a bulk insert script (about 35 KiB of WAL a transaction), so that a minute of load
    // fills about a hundred 1 MiB segments at a rate the archiver can follow.
    await pg.pgbench(['-i', '-s', '1', '-q']);
    await pg.query('CREATE TABLE soak_filler (id int, pad text)');
    const bulk = join(home, 'bulk.sql');
    await writeFile(bulk, "\\set n random(1, 1000000)\nINSERT INTO soak_filler SELECT :n, md5(g::text) || repeat('w', 100) FROM generate_series(1, 200) g;\n");
    const loadStarted = Date.now();
    const load = await pg.pgbench(
      ['-c', '4', '-j', '2', '-T', String(SECONDS), '-R', String(RATE), '-n', '-b', 'tpcb-like@9', '-f', `${bulk}@1`],
      (SECONDS + 120) * 1000,
    );
    expect(load.code).toBe(0);
    const loadEnded = Date.now();

    // Faults off; close the last segment and wait for the archiver to drain the backlog.
    const faultStats = proxy.stats();
    proxy.clearRules();
    const last = await pg.query('SELECT pg_walfile_name(pg_switch_wal())');
    let archived: string;
    try {
      archived = await pg.waitFor(
        "SELECT coalesce(last_archived_wal, '') || '|' || archived_count || '|' || failed_count FROM pg_stat_archiver",
        (out) => out.split('|')[0]! >= last,
        Number(process.env.WALVAULT_SOAK_DRAIN_TIMEOUT ?? 240) * 1000,
      );
    } catch (e) {
      const log = (await pg.readLog()).trimEnd().split('\n').slice(-60).join('\n');
      throw new Error(`${(e as Error).message}\nproxy: ${JSON.stringify(proxy.stats())}\n--- postgres.log (tail):\n${log}`);
    }
    const drainMs = Date.now() - loadEnded;
    const [, archivedCount, failedCount] = archived.split('|');

    // 1. Contiguous: every segment from the first of the run to the last is in the store.
    const keys = new Set(await listKeys(store, bucket, 'soak/wal/'));
    const expected: string[] = [];
    for (let n = segno(first); n <= segno(last); n++) expected.push(segName(n));
    const missing = expected.filter((name) => !keys.has(`soak/wal/${name.slice(0, 16)}/${name}`));

    // 2. Every segment PostgreSQL reports archived (.done) matches the store: metadata SHA-256 equals
    //    the local file's, and the stored bytes decode to exactly that.
    const walDir = join(pg.dataDir, 'pg_wal');
    const done = (await readdir(join(walDir, 'archive_status')))
      .filter((n) => /^[0-9A-F]{24}\.done$/.test(n))
      .map((n) => n.slice(0, 24))
      .sort();
    const mismatched: string[] = [];
    let verified = 0;
    for (const name of done) {
      const local = join(walDir, name);
      if (!existsSync(local)) continue;
      const obj = await getRaw(store, bucket, `soak/wal/${name.slice(0, 16)}/${name}`);
      if (!obj) {
        if (!missing.includes(name)) missing.push(name);
        continue;
      }
      const want = sha(await readFile(local));
      const codec = obj.metadata['walvault-codec'];
      const bytes = codec === 'zstd' ? zstdDecompressSync(obj.body) : codec === 'gzip' ? gunzipSync(obj.body) : obj.body;
      if (obj.metadata['walvault-sha256'] !== want || sha(bytes) !== want) mismatched.push(name);
      verified++;
    }
    const notDone = expected.filter((n) => !done.includes(n));

    const summary = {
      minutes: Number(((loadEnded - loadStarted) / 60_000).toFixed(2)),
      totalMinutes: Number(((Date.now() - started) / 60_000).toFixed(2)),
      seed: SEED,
      segmentsArchived: expected.length,
      archiverArchivedCount: Number(archivedCount),
      archiverFailedCount: Number(failedCount),
      verifiedAgainstLocal: verified,
      requestsThroughProxy: faultStats.requests,
      faultsInjected: faultStats.faults,
      faultsByRule: Object.fromEntries(faultStats.rules.map((r) => [r.name, r.injected])),
      drainSeconds: Number((drainMs / 1000).toFixed(1)),
      segmentsLost: missing.length + mismatched.length,
      missing,
      mismatched,
    };
    console.log(`[soak] ${JSON.stringify(summary, null, 2)}`);
    if (process.env.WALVAULT_SOAK_SUMMARY) await writeFile(process.env.WALVAULT_SOAK_SUMMARY, JSON.stringify(summary, null, 2) + '\n');

    expect(missing, 'segments missing from the store').toEqual([]);
    expect(mismatched, 'segments whose stored content differs').toEqual([]);
    expect(expected.length).toBeGreaterThan(SECONDS / 6); // the load really produced WAL
    expect(notDone.length, `archived but not .done locally: ${notDone.join(' ')}`).toBeLessThanOrEqual(1);
    expect(verified).toBeGreaterThanOrEqual(expected.length - 1);
    expect(faultStats.faults).toBeGreaterThan(expected.length / 10); // faults really happened
  });
});
