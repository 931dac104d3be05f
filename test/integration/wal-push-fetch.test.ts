import { createHash } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../support/pg.js';
import { createTestBucket, envFor, getRaw, putRaw, testStores, type TestStore } from '../support/stores.js';
import { writeFakeSegment } from '../support/wal-fixtures.js';
import { cleanupAll, runWalvault, tempDir } from '../support/walvault.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

interface Repo {
  label: string;
  env: Record<string, string>;
  /** Reads the stored object's metadata and raw (compressed) body, or null. */
  raw(key: string): Promise<{ body: Buffer; metadata: Record<string, string> } | null>;
  /** Replaces a stored object's bytes behind walvault's back, keeping its metadata. */
  corrupt(key: string): Promise<void>;
  store?: TestStore;
}

async function s3Repo(store: TestStore, spool: string): Promise<Repo> {
  const bucket = await createTestBucket(store, 'walpf');
  const env = { ...envFor(store, bucket, 'cluster-a'), WALVAULT_SPOOL: spool, WALVAULT_DEADLINE: '20' };
  const full = (k: string) => `cluster-a/${k}`;
  return {
    label: store.name,
    env,
    store,
    raw: (key) => getRaw(store, bucket, full(key)),
    corrupt: async (key) => {
      const obj = (await getRaw(store, bucket, full(key)))!;
      const body = Buffer.from(obj.body);
      body[body.length >> 1]! ^= 0xff;
      await putRaw(store, bucket, full(key), body, obj.metadata);
    },
  };
}

async function fileRepo(spool: string): Promise<Repo> {
  const dir = await tempDir('wv-filerepo');
  const { encodeHeader } = await import('../../src/storage/file/driver.js');
  const parse = (buf: Buffer) => {
    const len = buf.readUInt32BE(9);
    return { metadata: JSON.parse(buf.subarray(13, 13 + len).toString()) as Record<string, string>, body: buf.subarray(13 + len) };
  };
  return {
    label: 'file',
    env: { WALVAULT_REPO: `file://${dir}`, WALVAULT_SPOOL: spool },
    raw: async (key) => {
      const p = join(dir, key);
      if (!existsSync(p)) return null;
      const { metadata, body } = parse(await readFile(p));
      return { metadata: Object.fromEntries(Object.entries(metadata).map(([k, v]) => [`walvault-${k}`, v])), body };
    },
    corrupt: async (key) => {
      const p = join(dir, key);
      const { metadata, body } = parse(await readFile(p));
      body[body.length >> 1]! ^= 0xff;
      await writeFile(p, Buffer.concat([encodeHeader(metadata), body]));
    },
  };
}

const targets = [...testStores().map((s) => ({ name: s.name, store: s as TestStore | undefined })), { name: 'file', store: undefined }];

describe.each(targets)('wal-push / wal-fetch on $name', ({ store }) => {
  let repo: Repo;
  let work: string;

  beforeAll(async () => {
    work = await tempDir('wv-pf');
    const spool = join(work, 'spool');
    repo = store ? await s3Repo(store, spool) : await fileRepo(spool);
  });
  afterAll(cleanupAll);

  const push = (path: string, name: string, env: Record<string, string> = {}) =>
    runWalvault(['wal-push', path, name], { env: { ...repo.env, ...env } });
  const fetch = (name: string, path: string, opts: { env?: Record<string, string>; cwd?: string } = {}) =>
    runWalvault(['wal-fetch', name, path], { env: { ...repo.env, ...opts.env }, cwd: opts.cwd ?? work });

  it('pushes a segment with SHA-256 metadata, re-push of identical content exits 0, different content is refused', async () => {
    const seg = await writeFakeSegment(work, 3, { seed: 1 });
    const first = await push(seg.path, seg.name);
    expect(first.stderr).toContain('pushed');
    expect(first.code).toBe(0);
    const key = `wal/${seg.name.slice(0, 16)}/${seg.name}`;
    const stored = await repo.raw(key);
    expect(stored?.metadata['walvault-sha256']).toBe(sha(seg.data));
    expect(stored?.metadata['walvault-codec']).toBe('zstd');
    expect(stored!.body.length).toBeLessThan(seg.data.length);

    const again = await push(seg.path, seg.name);
    expect(again.code).toBe(0);
    expect(again.stderr).toMatch(/already archived .* identical content/);

    const other = await writeFakeSegment(join(work), 3, { seed: 2 });
    const conflict = await push(other.path, other.name);
    expect(conflict.code).toBe(7);
    expect(conflict.stderr).toContain(sha(seg.data));
    expect(conflict.stderr).toContain(sha(other.data));
    expect((await repo.raw(key))!.body.equals(stored!.body)).toBe(true);
  });

  it('refuses a segment from another system and a non-WAL file under a WAL name', async () => {
    const dir = join(work, 'foreign');
    await mkdir(dir);
    const foreign = await writeFakeSegment(dir, 4, { sysid: 999n });
    const r = await push(foreign.path, foreign.name);
    expect(r.code).toBe(6);
    expect(r.stderr).toMatch(/RepositoryMismatch: .*system 999 .* holds system 7000000000000000001/);
    expect(await repo.raw(`wal/${foreign.name.slice(0, 16)}/${foreign.name}`)).toBeNull();

    const junk = join(dir, '000000010000000000000005');
    await writeFile(junk, Buffer.alloc(1024 * 1024, 1));
    const j = await push(junk, '000000010000000000000005');
    expect(j.code).toBe(5);
    expect(j.stderr).toMatch(/not a WAL segment/);
  });

  it('fetches identical bytes, answers 1 with no file for a missing segment', async () => {
    const seg = await writeFakeSegment(work, 6, { seed: 6 });
    expect((await push(seg.path, seg.name)).code).toBe(0);
    const dest = join(work, 'RECOVERYXLOG');
    const got = await fetch(seg.name, dest);
    expect(got.code).toBe(0);
    expect((await readFile(dest)).equals(seg.data)).toBe(true);

    const missingDest = join(work, 'MISSINGXLOG');
    const missing = await fetch('0000000100000000000000F0', missingDest);
    expect(missing.code).toBe(1);
    expect(existsSync(missingDest)).toBe(false);
  });

  it('refuses a corrupted object and leaves nothing at %p', async () => {
    const seg = await writeFakeSegment(work, 7, { seed: 7 });
    expect((await push(seg.path, seg.name)).code).toBe(0);
    await repo.corrupt(`wal/${seg.name.slice(0, 16)}/${seg.name}`);
    const dest = join(work, 'CORRUPTXLOG');
    const r = await fetch(seg.name, dest);
    expect(r.code).toBeGreaterThan(125);
    expect(r.stderr).toMatch(/IntegrityError|cannot be decompressed|failed verification/);
    expect(existsSync(dest)).toBe(false);
    expect(readdirSync(work).filter((n) => n.includes('walvault-tmp'))).toEqual([]);
  });

  it('round-trips .history, .partial and .backup files', async () => {
    const history = join(work, '00000002.history');
    await writeFile(history, '1\t0/3000000\tno recovery target specified\n');
    const partialSeg = await writeFakeSegment(join(work), 8, { seed: 8 });
    const backup = join(work, '000000010000000000000008.00000028.backup');
    await writeFile(backup, 'START WAL LOCATION: 0/8000028 (file 000000010000000000000008)\nSTOP WAL LOCATION: 0/8000100\n');
    const files: Array<[string, string]> = [
      [history, '00000002.history'],
      [partialSeg.path, `${partialSeg.name}.partial`],
      [backup, '000000010000000000000008.00000028.backup'],
    ];
    for (const [path, name] of files) {
      const p = await push(path, name);
      expect(p.code, p.stderr).toBe(0);
      const dest = join(work, `out-${name}`);
      const f = await fetch(name, dest);
      expect(f.code, f.stderr).toBe(0);
      expect((await readFile(dest)).equals(await readFile(path))).toBe(true);
    }
    expect((await fetch('00000003.history', join(work, 'nohist'))).code).toBe(1);
  });

  it.each(['../x', '000000010000000000000001/../../x', '', 'A'.repeat(65), 'RECOVERYXLOG'])(
    'refuses the name %j before any I/O',
    async (name) => {
      // The repository is unreachable and the path does not exist: only name validation can answer fast.
      const r = await runWalvault(['wal-push', '/nonexistent/file', name], {
        env: { WALVAULT_REPO: 's3://nobucket/x', AWS_ENDPOINT_URL_S3: 'http://127.0.0.1:9', WALVAULT_SPOOL: join(work, 'spool') },
      });
      expect(r.code).toBe(3);
      expect(r.stderr).toMatch(/BadWalName/);
      expect(r.ms).toBeLessThan(5000);
    },
  );
});

describe.each(testStores())('wal-fetch error policy on $name', (store) => {
  let work: string;
  beforeAll(async () => {
    work = await tempDir('wv-policy');
  });
  afterAll(cleanupAll);

  async function downEnv(): Promise<Record<string, string>> {
    const port = await freePort(); // nothing listens there: the store is down
    return {
      ...envFor(store, 'down-bucket', 'x'),
      AWS_ENDPOINT_URL_S3: `http://127.0.0.1:${port}`,
      WALVAULT_SPOOL: join(work, 'spool'),
      WALVAULT_DEADLINE: '3',
      WALVAULT_RETRY_MAX_DELAY: '0.5',
    };
  }

  it('stops archive recovery (exit > 125) when the store is down and recovery.signal is present', async () => {
    const pgdata = join(work, 'recovery');
    await mkdir(join(pgdata, 'pg_wal'), { recursive: true });
    await writeFile(join(pgdata, 'recovery.signal'), '');
    const r = await runWalvault(['wal-fetch', '000000010000000000000001', 'pg_wal/RECOVERYXLOG'], { env: await downEnv(), cwd: pgdata });
    expect(r.code).toBe(255);
    expect(r.stderr).toMatch(/StorageUnavailable: .*gave up after .*exiting 255 to stop recovery/);
    expect(existsSync(join(pgdata, 'pg_wal/RECOVERYXLOG'))).toBe(false);
  });

  it('exits 1 on a standby when the store is down', async () => {
    const pgdata = join(work, 'standby');
    await mkdir(join(pgdata, 'pg_wal'), { recursive: true });
    await writeFile(join(pgdata, 'standby.signal'), '');
    const r = await runWalvault(['wal-fetch', '000000010000000000000001', 'pg_wal/RECOVERYXLOG'], { env: await downEnv(), cwd: pgdata });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/exiting 1 so PostgreSQL retries/);
  });

  it('treats a wrong secret as an error, never as not-found', async () => {
    const bucket = await createTestBucket(store, 'walsecret');
    const env = { ...envFor(store, bucket, 'x'), AWS_SECRET_ACCESS_KEY: 'wrong-secret', WALVAULT_SPOOL: join(work, 'spool') };
    const r = await runWalvault(['wal-fetch', '000000010000000000000001', join(work, 'X')], { env, cwd: work });
    expect(r.code).toBe(255);
    expect(r.stderr).toMatch(/AccessDenied/);
    expect(r.stderr).not.toContain('wrong-secret');
    const seg = await writeFakeSegment(work, 1);
    const p = await runWalvault(['wal-push', seg.path, seg.name], { env });
    expect(p.code).toBe(8);
    expect(p.stderr).toMatch(/AccessDenied/);
  });
});
