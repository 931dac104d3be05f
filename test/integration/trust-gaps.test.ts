// Issue 8, item 2: gap detection cannot be switched off by a damaged or missing state object. A miss
// that the archive contradicts (its verified high-water mark, a later file of the timeline, a later
// timeline's history, the state or segments of a timeline whose history is missing) is a WalGap or
// an error, never exit 1 ("end of WAL": archive recovery would promote with WAL missing).
import { createHash } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fault, FaultProxy } from '../support/fault-proxy.js';
import { PG_BIN_DIR, PgCluster, runAsPostgres } from '../support/pg.js';
import { createTestBucket, deleteRaw, envFor, getRaw, putRaw, testStores, writeRepoConfig, type TestStore } from '../support/stores.js';
import { fakeSegment, segName, writeFakeSegment } from '../support/wal-fixtures.js';
import { markKeys, newestMark } from '../support/marks.js';
import { cleanupAll, runWalvault, tempDir, walvaultBin } from '../support/walvault.js';

const store: TestStore = testStores().find((s) => s.name === 'rgw') ?? testStores()[0]!;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const walKey = (prefix: string, name: string) => (/^[0-9A-F]{24}$/.test(name) ? `${prefix}/wal/${name.slice(0, 16)}/${name}` : `${prefix}/wal/${name}`);
/** The single mark object walvault wrote before write-once marks (still read). */
const STATE1 = 'state/timeline-00000001.json';
const STOP = /exiting 255 to stop recovery/;

describe(`trust: gap evidence on ${store.name}`, () => {
  let bucket: string;
  let work: string;
  beforeAll(async () => {
    bucket = await createTestBucket(store, 'trustgaps');
    work = await tempDir('wv-trust-gaps');
  });
  afterAll(cleanupAll);

  /** A repository prefix with its own spool and a PGDATA in archive recovery (recovery.signal). */
  async function repo(prefix: string, extra: Record<string, string> = {}) {
    const dir = join(work, prefix);
    const pgdata = join(dir, 'pgdata');
    const standby = join(dir, 'standby');
    await mkdir(join(pgdata, 'pg_wal'), { recursive: true });
    await mkdir(join(standby, 'pg_wal'), { recursive: true });
    await writeFile(join(pgdata, 'recovery.signal'), '');
    await writeFile(join(standby, 'standby.signal'), '');
    const env = {
      ...envFor(store, bucket, prefix),
      WALVAULT_SPOOL: join(dir, 'spool'),
      WALVAULT_DEADLINE: '20',
      WALVAULT_HIGH_WATER_INTERVAL: '0.001',
      WALVAULT_PREFETCH: '0',
      WALVAULT_LOOKAHEAD: '0',
      ...extra,
    };
    /** Pushes segment `segno` of timeline `tli` (1 MiB segments) or a history file with `text`. */
    const push = async (what: { segno: number; tli?: number } | { history: number; text: string }, override: Record<string, string> = {}) => {
      let path: string;
      let name: string;
      if ('history' in what) {
        name = `${what.history.toString(16).toUpperCase().padStart(8, '0')}.history`;
        path = join(dir, name);
        await writeFile(path, what.text);
      } else {
        name = segName(what.segno, what.tli ?? 1);
        path = join(dir, name);
        await writeFile(path, fakeSegment({ segno: BigInt(what.segno), seed: what.segno * 10 + (what.tli ?? 1) }));
      }
      const r = await runWalvault(['wal-push', path, name], { env: { ...env, ...override }, cwd: dir });
      expect(r.code, `push ${name}: ${r.stderr}`).toBe(0);
      return r;
    };
    const fetch = (name: string, where: 'recovery' | 'standby' = 'recovery') =>
      runWalvault(['wal-fetch', name, 'pg_wal/RECOVERYXLOG'], { env, cwd: where === 'recovery' ? pgdata : standby });
    const del = (key: string) => deleteRaw(store, bucket, `${prefix}/${key}`);
    const delWal = (name: string) => deleteRaw(store, bucket, walKey(prefix, name));
    /** The newest write-once mark of timeline `tli`. */
    const state = async (tli = 1) => (await newestMark(store, bucket, prefix, tli))?.mark ?? null;
    /** Every mark of timeline `tli`, write-once and old. */
    const delMarks = async (tli = 1) => {
      for (const k of await markKeys(store, bucket, prefix, tli)) await deleteRaw(store, bucket, k);
      await del(`state/timeline-${tli.toString(16).toUpperCase().padStart(8, '0')}.json`);
    };
    return { dir, env, push, fetch, del, delWal, state, delMarks, prefix };
  }

  it('trust: a corrupt high-water mark is an error, not "no mark"', async () => {
    const t = await repo('mark');
    for (let n = 1; n <= 4; n++) await t.push({ segno: n });
    // One write-once mark per advance; as after a delete, only the newest is left.
    const keys = await markKeys(store, bucket, 'mark');
    expect(keys).toHaveLength(4);
    for (const k of keys.slice(1)) await deleteRaw(store, bucket, k);
    const good = (await newestMark(store, bucket, 'mark'))!;
    expect(good.mark).toMatchObject({ first: segName(1), last: segName(4) });
    // Only the mark knows about 2..4 now: the listing finds nothing after segment 2.
    for (const n of [2, 3, 4]) await t.delWal(segName(n));
    const intact = await t.fetch(segName(2));
    expect(intact.code, intact.stderr).toBe(255);
    expect(intact.stderr).toMatch(/WalGap: 000000010000000000000002 is missing .* archived from 000000010000000000000001 through 000000010000000000000004/);

    const meta = (b: Buffer) => ({ 'walvault-sha256': sha(b), 'walvault-size': String(b.length), 'walvault-codec': 'none' });
    const truncated = good.body.subarray(0, 20);
    const shrunk = Buffer.from(JSON.stringify({ timeline: 1, first: segName(1), last: segName(1), updatedAt: new Date().toISOString() }));
    const other = Buffer.from(JSON.stringify({ ...good.mark, timeline: 7 }));
    const name = /state\/timeline-00000001\/FFFFFFFFFFFFFFFB-000000010000000000000004\.json/.source;
    const cases: Array<[string, string, Buffer, Record<string, string>, RegExp]> = [
      ['truncated JSON with matching metadata', good.key, truncated, meta(truncated), new RegExp(`CorruptObject: 000000010000000000000002 not found, and the high-water mark cannot be trusted: .*${name} is not a valid high-water mark: not JSON`)],
      ['a narrower range under the original SHA-256', good.key, shrunk, good.metadata, new RegExp(`IntegrityError: .*${name} failed verification`)],
      ['a narrower range than its name says', good.key, shrunk, meta(shrunk), new RegExp(`CorruptObject: .*${name} is not a valid high-water mark: its last segment 000000010000000000000001 is not the one its name says`)],
      ['no walvault metadata', good.key, good.body, {}, new RegExp(`CorruptObject: .*${name} has no valid walvault metadata`)],
      ['the timeline of another object', good.key, other, meta(other), /CorruptObject: .*timeline 7, expected 1/],
    ];
    for (const [label, key, body, metadata, error] of cases) {
      await putRaw(store, bucket, key, body, metadata);
      const r = await t.fetch(segName(2));
      expect(r.code, `${label}: ${r.stderr}`).toBe(255);
      expect(r.stderr, label).toMatch(error);
      expect(r.stderr, label).toMatch(STOP);
      expect(r.stderr, label).not.toMatch(/not found\); exiting 1|InternalError|TypeError/);
    }
    // On a standby the policy exits 1 (PostgreSQL retries), but as an error, not as "not in the archive".
    const standby = await t.fetch(segName(2), 'standby');
    expect(standby.code).toBe(1);
    expect(standby.stderr).toMatch(/ERROR: CorruptObject: .*exiting 1 so PostgreSQL retries or streams/);

    // A repository from before write-once marks: its single object is read and trusted the same way.
    await deleteRaw(store, bucket, good.key);
    await putRaw(store, bucket, `mark/${STATE1}`, good.body, good.metadata);
    const old = await t.fetch(segName(2));
    expect(old.code, old.stderr).toBe(255);
    expect(old.stderr).toMatch(/WalGap: 000000010000000000000002 is missing .* archived from 000000010000000000000001 through 000000010000000000000004/);
    await putRaw(store, bucket, `mark/${STATE1}`, truncated, meta(truncated));
    const oldBad = await t.fetch(segName(2));
    expect(oldBad.code, oldBad.stderr).toBe(255);
    expect(oldBad.stderr).toMatch(/CorruptObject: 000000010000000000000002 not found, and the high-water mark cannot be trusted: .*state\/timeline-00000001\.json is not a valid high-water mark: not JSON/);

    // wal-push (here with a fresh spool: no cached copy of the mark) supersedes the unusable mark
    // with a write-once one it can vouch for, and never fails on it; the old object stays as it is.
    const next = await t.push({ segno: 5 }, { WALVAULT_SPOOL: join(t.dir, 'spool2') });
    expect(next.stderr).toMatch(/superseding the unusable high-water mark of timeline 1/);
    expect(await t.state()).toMatchObject({ first: segName(5), last: segName(5) });
    expect((await getRaw(store, bucket, `mark/${STATE1}`))!.body).toEqual(truncated);
    // ...after which the listing still tells the deleted segment 2 from the end of WAL.
    const after = await t.fetch(segName(2));
    expect(after.code, after.stderr).toBe(255);
    expect(after.stderr).toMatch(/WalGap: .*000000010000000000000005 of the same timeline is archived/);
    expect(after.stderr).toMatch(/ignoring the damaged state\/timeline-00000001\.json/);
    expect((await t.fetch(segName(6))).code).toBe(1);
  });

  it('trust: a listing reveals a gap the mark does not', async () => {
    // A mark that lags (written once, then rate-limited), as highWaterInterval allows.
    const t = await repo('list', { WALVAULT_HIGH_WATER_INTERVAL: '3600' });
    for (let n = 1; n <= 4; n++) await t.push({ segno: n });
    expect(await t.state()).toMatchObject({ first: segName(1), last: segName(1) });
    expect(await markKeys(store, bucket, 'list')).toHaveLength(1);
    await t.delWal(segName(2));
    const lagging = await t.fetch(segName(2));
    expect(lagging.code, lagging.stderr).toBe(255);
    expect(lagging.stderr).toMatch(/WalGap: 000000010000000000000002 is missing .*, but 000000010000000000000003 of the same timeline is archived: a gap/);
    // No state object at all: the listing alone.
    await t.delMarks();
    const none = await t.fetch(segName(2));
    expect(none.code, none.stderr).toBe(255);
    expect(none.stderr).toMatch(/WalGap: .*000000010000000000000003 of the same timeline is archived/);
    // The normal end of WAL is still exit 1, and a present segment is still served.
    const end = await t.fetch(segName(5));
    expect(end.code, end.stderr).toBe(1);
    expect(end.stderr).toMatch(/not in .* \(not found\); exiting 1/);
    expect((await t.fetch(segName(4))).code).toBe(0);

    // A later timeline whose history says it left timeline 1 after the missing segment.
    const b = await repo('branch');
    for (let n = 1; n <= 3; n++) await b.push({ segno: n });
    await b.push({ history: 2, text: '1\t0/300000\tno recovery target specified\n' }); // inside segment 3
    for (const n of [3, 4]) await b.push({ segno: n, tli: 2 });
    for (const n of [2, 3]) await b.delWal(segName(n));
    await b.delMarks();
    const branched = await b.fetch(segName(2));
    expect(branched.code, branched.stderr).toBe(255);
    expect(branched.stderr).toMatch(/WalGap: 000000010000000000000002 is missing .*, but timeline 2 branched from timeline 1 at 0\/300000, after it/);
    // Segment 3 of timeline 1 holds the switch point: PostgreSQL reads it from timeline 2.
    expect((await b.fetch(segName(3))).code).toBe(1);
    expect((await b.fetch(segName(5, 2))).code).toBe(1);
    // A history file that is not one is an error, not a reason to answer "not found".
    await putRaw(store, bucket, walKey('branch', '00000003.history'), Buffer.from('garbage\n'), {
      'walvault-sha256': sha(Buffer.from('garbage\n')),
      'walvault-size': '8',
      'walvault-codec': 'none',
    });
    const corrupt = await b.fetch(segName(3));
    expect(corrupt.code, corrupt.stderr).toBe(255);
    expect(corrupt.stderr).toMatch(/CorruptObject: .*00000003\.history is not a timeline history file/);
  });

  it('trust: a missing history file of an archived timeline is a gap', async () => {
    const t = await repo('hist');
    for (const n of [1, 2]) await t.push({ segno: n });
    await t.push({ history: 2, text: '1\t0/200000\tno recovery target specified\n' });
    for (const n of [2, 3]) await t.push({ segno: n, tli: 2 });
    expect(await t.state(2)).toMatchObject({ first: segName(2, 2), last: segName(3, 2) });
    await t.delWal('00000002.history');
    const byState = await t.fetch('00000002.history');
    expect(byState.code, byState.stderr).toBe(255);
    expect(byState.stderr).toMatch(/WalGap: 00000002\.history is missing .*, but timeline 2 was archived \(high-water mark: 000000020000000000000002 through 000000020000000000000003\)/);
    await t.delMarks(2);
    const byListing = await t.fetch('00000002.history');
    expect(byListing.code, byListing.stderr).toBe(255);
    expect(byListing.stderr).toMatch(/WalGap: 00000002\.history is missing .*, but 000000020000000000000002 of timeline 2 is archived/);
    // PostgreSQL probes for the next timeline and asks for timeline 1's (which never exists): 1.
    for (const name of ['00000003.history', '00000001.history']) {
      const r = await t.fetch(name);
      expect(r.code, `${name}: ${r.stderr}`).toBe(1);
    }
  });
});

/** The pusher worker locks below a spool (the worker removes its lock when it exits). */
function workerLocks(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(d, e.name));
      else if (e.name === 'worker.lock') out.push(join(d, e.name));
    }
  };
  walk(dir);
  return out;
}

describe(`trust: the look-ahead worker and the high-water mark on ${store.name}`, () => {
  let proxy: FaultProxy;
  afterAll(async () => {
    await proxy?.close();
    await cleanupAll();
  });

  it('trust: the high-water mark never overstates', async () => {
    const bucket = await createTestBucket(store, 'trustmark');
    const work = await tempDir('wv-trust-mark');
    const pgdata = join(work, 'pgdata');
    const walDir = join(pgdata, 'pg_wal');
    await mkdir(join(walDir, 'archive_status'), { recursive: true });
    const segs: Awaited<ReturnType<typeof writeFakeSegment>>[] = [];
    for (let n = 0x41; n <= 0x48; n++) {
      const seg = await writeFakeSegment(walDir, n, { seed: n });
      await writeFile(join(walDir, 'archive_status', `${seg.name}.ready`), '');
      segs.push(seg);
    }
    const [first] = segs;
    proxy = await FaultProxy.start({ upstream: store.endpoint, seed: 7 });
    // The archiver's call for the first segment fails (its PUT is refused); the look-ahead it
    // started goes on uploading the later ones.
    proxy.addRule({ method: 'PUT', path: new RegExp(`/${walKey('p', first!.name)}(\\?|$)`), action: fault.accessDenied() });
    const env = {
      ...envFor(store, bucket, 'p'),
      WALVAULT_SPOOL: join(work, 'spool'),
      WALVAULT_DEADLINE: '20',
      WALVAULT_HIGH_WATER_INTERVAL: '0.001',
      WALVAULT_LOOKAHEAD: '2',
    };
    const failed = await runWalvault(['wal-push', `pg_wal/${first!.name}`, first!.name], { env: { ...env, AWS_ENDPOINT_URL_S3: proxy.url }, cwd: pgdata });
    expect(failed.code, failed.stderr).toBe(8);
    // The worker uploads the rest, then exits after its idle time (its lock goes with it).
    await new Promise((r) => setTimeout(r, 2_000));
    const until = Date.now() + 60_000;
    while (workerLocks(join(work, 'spool')).length > 0) {
      if (Date.now() > until) throw new Error('the look-ahead worker did not finish');
      await new Promise((r) => setTimeout(r, 200));
    }
    for (const seg of segs.slice(1)) expect((await getRaw(store, bucket, walKey('p', seg.name)))?.metadata['walvault-sha256'], seg.name).toBe(sha(seg.data));
    expect(await getRaw(store, bucket, walKey('p', first!.name))).toBeNull();

    /** Every segment the mark claims is in the store. */
    const expectTruthful = async () => {
      const raw = await newestMark(store, bucket, 'p');
      if (!raw) return null;
      const mark = raw.mark;
      for (const seg of segs) {
        if (seg.name < mark.first || seg.name > mark.last) continue;
        expect(await getRaw(store, bucket, walKey('p', seg.name)), `the mark ${mark.first}..${mark.last} claims ${seg.name}`).not.toBeNull();
      }
      return mark;
    };
    expect(await expectTruthful()).toBeNull();

    // PostgreSQL retries the file, now successfully: the mark may start there, and still claims nothing missing.
    const retried = await runWalvault(['wal-push', `pg_wal/${first!.name}`, first!.name], { env, cwd: pgdata });
    expect(retried.code, retried.stderr).toBe(0);
    expect(await expectTruthful()).toMatchObject({ first: first!.name });
  });
});

// The consequence under a real PostgreSQL: a segment deleted from the archive (and the state object
// gone with it) used to end archive recovery early, at the hole, and promote onto a new timeline
// with the WAL after it never replayed. Now restore_command fails and recovery stops instead.
describe(`trust: PostgreSQL recovery over a hole in the archive on ${store.name}`, () => {
  const clusters: PgCluster[] = [];
  afterAll(async () => {
    for (const c of clusters) await c.destroy();
    await cleanupAll();
  });

  it('trust: a listing reveals a gap the mark does not (PostgreSQL stops instead of promoting)', async () => {
    const bucket = await createTestBucket(store, 'trustpg');
    const home = await tempDir('wv-trust-pg', { forPostgres: true });
    const configFile = await writeRepoConfig(store, bucket, 'pg', home, { prefetch: 2 });
    const walvault = `${await walvaultBin()} --config ${configFile}`;
    const pg = await PgCluster.create({ walSegSizeMb: 1, conf: { archive_mode: 'on', archive_command: `${walvault} wal-push %p %f`, archive_timeout: 0 } });
    clusters.push(pg);
    await pg.start({ env: { AWS_EC2_METADATA_DISABLED: 'true' } });
    await pg.query('CREATE TABLE t (n int)');
    const backup = join(home, 'backup');
    const bb = await runAsPostgres(join(PG_BIN_DIR, 'pg_basebackup'), ['-D', backup, '-X', 'none', '-c', 'fast', '-h', pg.host, '-p', String(pg.port), '-U', 'postgres']);
    expect(bb.code, bb.stderr).toBe(0);
    const after: string[] = [];
    for (let i = 1; i <= 5; i++) {
      await pg.query(`INSERT INTO t SELECT g FROM generate_series(1, 1000) g`);
      after.push(await pg.query('SELECT pg_walfile_name(pg_switch_wal())'));
    }
    await pg.waitFor("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver", (out) => out >= after.at(-1)!, 60_000);
    await pg.stop();

    const hole = after[2]!;
    await deleteRaw(store, bucket, walKey('pg', hole));
    for (const k of await markKeys(store, bucket, 'pg')) await deleteRaw(store, bucket, k);
    await writeFile(join(backup, 'recovery.signal'), '');
    await writeFile(join(backup, 'postgresql.auto.conf'), `restore_command = '${walvault} wal-fetch %f %p'\narchive_mode = off\n`);
    const restored = await PgCluster.fromDataDir(backup);
    clusters.push(restored);
    // (not -w: a hot standby accepts connections once consistent, before recovery reaches the hole)
    await restored.start({ env: { AWS_EC2_METADATA_DISABLED: 'true' }, wait: false });
    const outcome = /FATAL: |selected new timeline ID|archive recovery complete/;
    const until = Date.now() + 120_000;
    let log = '';
    while (!outcome.test((log = await restored.readLog().catch(() => '')))) {
      if (Date.now() > until) throw new Error(`recovery reached no outcome\n${log}`);
      await new Promise((r) => setTimeout(r, 500));
    }
    await new Promise((r) => setTimeout(r, 2_000)); // a FATAL in the startup process shuts the server down
    log = await restored.readLog();
    expect(log).toMatch(new RegExp(`WalGap: ${hole} is missing .*, but ${after[3]} of the same timeline is archived`));
    expect(log).toMatch(/FATAL: .*(could not restore file|restore_command)/);
    expect(log).not.toMatch(/archive recovery complete|selected new timeline ID/);
    expect(await restored.isRunning()).toBe(false);
  });
});
