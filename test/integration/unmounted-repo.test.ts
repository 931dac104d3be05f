// A file:// repository on a share that is not mounted is an empty directory: walvault must not
// archive into it (that is local disk, gone with the machine) just because its spool remembers the
// repository. The spool is only a cache: the repository's own walvault.json decides. (The S3 case,
// a repository deleted or recreated, runs against each S3 store the run has.)
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, rename, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { sha256Hex } from '../../src/fs/hash.js';
import { createFileStorage } from '../../src/storage/file/driver.js';
import { fault, FaultProxy } from '../support/fault-proxy.js';
import { createTestBucket, deleteRaw, envFor, listKeys, testStores } from '../support/stores.js';
import { writeFakeSegment } from '../support/wal-fixtures.js';
import { cleanupAll, runWalvault, tempDir } from '../support/walvault.js';

afterAll(cleanupAll);

/** A mount point holding a repository, a pg_wal-like directory and a spool. */
async function setup(label: string) {
  const work = await tempDir(`wv-unmounted-${label}`);
  const mnt = join(work, 'mnt');
  const walDir = join(work, 'pg_wal');
  await mkdir(mnt);
  await mkdir(join(walDir, 'archive_status'), { recursive: true });
  const env = { WALVAULT_REPO: `file://${mnt}`, WALVAULT_SPOOL: join(work, 'spool'), WALVAULT_LOOKAHEAD: '0', WALVAULT_DEADLINE: '20' };
  const push = (path: string, name: string, extra: Record<string, string> = {}) =>
    runWalvault(['wal-push', path, name], { env: { ...env, ...extra } });
  // What an unmount looks like from here: the same path, now an empty directory.
  const unmount = async () => {
    await rename(mnt, join(work, 'nas'));
    await mkdir(mnt);
  };
  return { work, mnt, walDir, env, push, unmount };
}

describe('a file:// repository that is suddenly empty', () => {
  it('trust: an unmounted share or a wrong endpoint is never archived into', async () => {
    const t = await setup('plain');
    const s1 = await writeFakeSegment(t.walDir, 1);
    const first = await t.push(s1.path, s1.name);
    expect(first.code, first.stderr).toBe(0);
    expect(existsSync(join(t.mnt, 'walvault.json'))).toBe(true);

    await t.unmount();
    const s2 = await writeFakeSegment(t.walDir, 2);
    const r = await t.push(s2.path, s2.name);
    expect(r.code, r.stderr).toBe(13);
    expect(r.stderr).toMatch(/ERROR: MissingBucket: repository file:\/\/.*holds no walvault\.json/);
    expect(r.stderr).toMatch(/not be mounted.*endpoint or bucket.*deleted/);
    expect(r.stderr).toMatch(/recreated on purpose, remove .*spool\/repos\/[0-9a-f]{16}/);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    // Files without a WAL header (history files) are refused the same way.
    await writeFile(join(t.walDir, '00000002.history'), '1\t0/3000000\tno recovery target specified\n');
    const h = await t.push(join(t.walDir, '00000002.history'), '00000002.history');
    expect(h.code, h.stderr).toBe(13);
    expect(readdirSync(t.mnt)).toEqual([]);

    // Recreated on purpose: the message's remedy works, and the repository is started afresh.
    const cache = /remove (\S+) and retry/.exec(r.stderr)![1]!;
    const { rm } = await import('node:fs/promises');
    await rm(cache, { recursive: true });
    const again = await t.push(s2.path, s2.name);
    expect(again.code, again.stderr).toBe(0);
    expect(existsSync(join(t.mnt, 'walvault.json'))).toBe(true);
  });

  it('trust: an unmounted share or a wrong endpoint is never archived into (look-ahead record)', async () => {
    const t = await setup('lookahead');
    const segs = [];
    for (const n of [1, 2, 3]) {
      segs.push(await writeFakeSegment(t.walDir, n));
      await writeFile(join(t.walDir, 'archive_status', `${segs.at(-1)!.name}.ready`), '');
    }
    const first = await t.push(segs[0]!.path, segs[0]!.name, { WALVAULT_LOOKAHEAD: '2' });
    expect(first.code, first.stderr).toBe(0);
    expect(first.stderr).toMatch(/look-ahead uploaded 2 more/);

    await t.unmount();
    // 2 was uploaded ahead and recorded in the spool; the repository holding it is gone from here.
    const r = await t.push(segs[1]!.path, segs[1]!.name, { WALVAULT_LOOKAHEAD: '2' });
    expect(r.code, r.stderr).toBe(13);
    expect(r.stderr).toMatch(/MissingBucket: repository file:\/\/.*holds no walvault\.json/);
    expect(readdirSync(t.mnt)).toEqual([]);
  });

  it("trust: an unmounted share or a wrong endpoint is never archived into (the store's manifest wins)", async () => {
    const t = await setup('replaced');
    const s1 = await writeFakeSegment(t.walDir, 1);
    expect((await t.push(s1.path, s1.name)).code).toBe(0);
    // Another cluster's repository now answers at this path (another share mounted there): its
    // walvault.json, not the spool's copy, decides.
    await t.unmount();
    const other = Buffer.from(
      JSON.stringify({ format: 1, systemIdentifier: '7999999999999999999', pgVersion: 15, walMagic: 0xd110, walSegmentSize: 1 << 20, walBlockSize: 8192, createdAt: 'x', createdBy: 'walvault' }),
    );
    await createFileStorage(t.mnt).putIfAbsent('walvault.json', other, { sha256: sha256Hex(other), size: String(other.length), codec: 'none' });
    const s2 = await writeFakeSegment(t.walDir, 2);
    const r = await t.push(s2.path, s2.name);
    expect(r.code, r.stderr).toBe(6);
    expect(r.stderr).toMatch(/RepositoryMismatch: .*holds system 7999999999999999999/);
    expect(readdirSync(t.mnt)).toEqual(['walvault.json']);
  });
});

describe('wal-fetch from a file:// repository that is suddenly empty', () => {
  it('trust: a missing repository is never "not found" (wal-fetch)', async () => {
    const t = await setup('fetch');
    const s1 = await writeFakeSegment(t.walDir, 1);
    expect((await t.push(s1.path, s1.name)).code).toBe(0);
    // PostgreSQL runs restore_command in PGDATA; the signal file there picks the recovery-mode policy.
    const recovery = join(t.work, 'none');
    const standby = join(t.work, 'standby');
    for (const d of [recovery, standby]) await mkdir(join(d, 'pg_wal'), { recursive: true });
    await writeFile(join(standby, 'standby.signal'), '');
    const fetch = (name: string, cwd: string) =>
      runWalvault(['wal-fetch', name, 'pg_wal/RECOVERYXLOG'], { env: { ...t.env, WALVAULT_PREFETCH: '0' }, cwd });
    const s2 = '000000010000000000000002';

    // The end of WAL in a healthy repository is still "not found".
    const end = await fetch(s2, recovery);
    expect(end.code, end.stderr).toBe(1);
    expect(end.stderr).toMatch(/not found\); exiting 1/);

    await t.unmount();
    // (.partial and .backup names too: their miss also needs the manifest, never an unawaited read)
    for (const name of [s1.name, s2, '00000002.history', `${s2}.partial`, `${s1.name}.00000028.backup`]) {
      const r = await fetch(name, recovery);
      expect(r.code, `${name}: ${r.stderr}`).toBe(255);
      expect(r.stderr).toMatch(/ERROR: MissingBucket: .* holds no walvault\.json.*not be mounted.*endpoint or bucket.*deleted/);
      expect(r.stderr).not.toMatch(/not found\); exiting 1/);
      const s = await fetch(name, standby);
      expect(s.code, `${name}: ${s.stderr}`).toBe(1);
      expect(s.stderr).toMatch(/ERROR: MissingBucket: .*exiting 1 so PostgreSQL retries or streams/);
      expect(s.stderr).not.toMatch(/not found\); exiting 1/);
      expect(readdirSync(join(recovery, 'pg_wal'))).toEqual([]);
    }
  });
});

describe.each(testStores().filter((s) => s.name === 'rgw'))('an S3 repository that lost walvault.json on $name', (store) => {
  it('trust: an unmounted share or a wrong endpoint is never archived into (S3 repository deleted)', async () => {
    const work = await tempDir('wv-unmounted-s3');
    const bucket = await createTestBucket(store, 'unmounted');
    const env = { ...envFor(store, bucket, 'db'), WALVAULT_SPOOL: join(work, 'spool'), WALVAULT_LOOKAHEAD: '0', WALVAULT_DEADLINE: '20' };
    const s1 = await writeFakeSegment(work, 1);
    expect((await runWalvault(['wal-push', s1.path, s1.name], { env })).code).toBe(0);
    // The repository is deleted. Within a minute of the last check the spool's copy stands for
    // it (one GET saved per push); after that, the store is asked again.
    for (const key of await listKeys(store, bucket, 'db/')) await deleteRaw(store, bucket, key);
    const repos = join(work, 'spool', 'repos');
    const copy = readdirSync(repos).map((d) => join(repos, d, 'walvault.json')).find((f) => existsSync(f))!;
    const past = new Date(Date.now() - 120_000);
    await utimes(copy, past, past);
    const s2 = await writeFakeSegment(work, 2);
    const r = await runWalvault(['wal-push', s2.path, s2.name], { env });
    expect(r.code, r.stderr).toBe(13);
    expect(r.stderr).toMatch(/ERROR: MissingBucket: repository s3:\/\/.*holds no walvault\.json.*remove .* and retry/);
    expect(await listKeys(store, bucket, 'db/')).toEqual([]);
    // wal-fetch from it (NoSuchKey for everything): missing, never "not found" (no signal file: 255).
    await mkdir(join(work, 'pgdata', 'pg_wal'), { recursive: true });
    for (const name of [s1.name, '00000002.history']) {
      const f = await runWalvault(['wal-fetch', name, 'pg_wal/RECOVERYXLOG'], { env: { ...env, WALVAULT_PREFETCH: '0' }, cwd: join(work, 'pgdata') });
      expect(f.code, f.stderr).toBe(255);
      expect(f.stderr).toMatch(/ERROR: MissingBucket: .*holds no walvault\.json/);
    }
  });

  it('trust: an unmounted share or a wrong endpoint is never archived into (wrong endpoint)', async () => {
    const work = await tempDir('wv-wrong-endpoint');
    const bucket = await createTestBucket(store, 'endpoint');
    const env = { ...envFor(store, bucket, 'db'), WALVAULT_SPOOL: join(work, 'spool'), WALVAULT_LOOKAHEAD: '0', WALVAULT_DEADLINE: '20' };
    const s1 = await writeFakeSegment(work, 1);
    expect((await runWalvault(['wal-push', s1.path, s1.name], { env })).code).toBe(0);
    // Another endpoint with a bucket of the same name that holds no repository (a proxy in front of
    // the same store, answering NoSuchKey for walvault.json).
    const proxy = await FaultProxy.start({ upstream: store.endpoint });
    try {
      proxy.addRule({ method: ['GET', 'HEAD'], path: /\/db\/walvault\.json(\?|$)/, action: fault.status(404, 'NoSuchKey') });
      const s2 = await writeFakeSegment(work, 2);
      const r = await runWalvault(['wal-push', s2.path, s2.name], { env: { ...env, AWS_ENDPOINT_URL_S3: proxy.url } });
      expect(r.code, r.stderr).toBe(13);
      expect(r.stderr).toMatch(/MissingBucket: repository s3:\/\/.* holds no walvault\.json at this endpoint, but this spool archived .* through another endpoint/);
      expect(proxy.log.filter((q) => q.method !== 'GET' && q.method !== 'HEAD')).toEqual([]);
    } finally {
      await proxy.close();
    }
  });
});
