// The fast path's identity check (issue 12 item 2): a file uploaded ahead is trusted unread while its
// device, inode, size, mtime and ctime are those recorded around the read that hashed it; any other
// identity sends it to the re-hash, and `fastPathHash` forces the re-hash.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { chmod, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/common/config.js';
import { repoCacheDir } from '../../src/archive/cache-dir.js';
import { prepareLocalWal, IN_MEMORY_MAX } from '../../src/archive/local-wal.js';
import { parseHotArgv } from '../../src/cli/hot-path.js';
import { identityLine, identityOf, parseIdentity, RACY_MARGIN_NS, stableIdentity } from '../../src/fs/file-identity.js';
import { execFileSync } from 'node:child_process';
import { recordUpload } from '../../src/push-ahead/batch.js';
import { tryFastPush } from '../../src/push-ahead/fast-path.js';
import { parsePushRecord, readPushRecord, writePushRecord, type PushRecord } from '../../src/push-ahead/records.js';
import { repoUrlOf } from '../../src/storage/open.js';
import { writeFakeSegment, writeLargeSegment } from '../support/wal-fixtures.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const root = mkdtempSync(join(tmpdir(), 'wv-identity-unit-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Long enough for a file's ctime to be outside the racy margin of a read that starts now. */
const settle = () => sleep(Number(RACY_MARGIN_NS / 1_000_000n) + 20);
const idNow = (path: string) => identityOf(statSync(path, { bigint: true }));

describe('identityLine', () => {
  it('prints an identity exactly as GNU stat does for the shell fast path (scripts/wrapper/head.bash)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'wv-idline-'));
    try {
      const file = join(dir, 'f');
      writeFileSync(file, randomBytes(1000));
      const shell = execFileSync('stat', ['-c', '%d %i %s %.9Y %.9Z', file], { env: { LC_ALL: 'C', PATH: process.env.PATH ?? '/usr/bin:/bin' } }).toString().trim();
      expect(identityLine(identityOf(statSync(file, { bigint: true })))).toBe(shell);
      expect(identityLine({ dev: '1', ino: '2', size: '3', mtimeNs: '1000000005', ctimeNs: '7' })).toBe('1 2 3 1.000000005 0.000000007');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('stableIdentity', () => {
  const file = join(root, 'stable');
  writeFileSync(file, 'x');

  it('records an identity unchanged across the read and older than the margin', () => {
    const st = statSync(file, { bigint: true });
    const later = Number(st.ctimeNs / 1_000_000n) + 1000;
    expect(stableIdentity(st, st, later)).toEqual(identityOf(st));
  });

  it('records nothing when the identity changed during the read', () => {
    const st = statSync(file, { bigint: true });
    const later = Number(st.ctimeNs / 1_000_000n) + 1000;
    for (const field of ['dev', 'ino', 'size', 'mtimeNs', 'ctimeNs'] as const) {
      const after = { ...st, [field]: st[field] + 1n } as typeof st;
      expect(stableIdentity(st, after, later), field).toBeUndefined();
    }
  });

  it('records nothing for a file changed within the margin before the read (a later write could keep its ctime)', () => {
    const st = statSync(file, { bigint: true });
    const ms = Number(st.ctimeNs / 1_000_000n);
    expect(stableIdentity(st, st, ms + Number(RACY_MARGIN_NS / 1_000_000n) - 1)).toBeUndefined();
    expect(stableIdentity(st, st, ms + Number(RACY_MARGIN_NS / 1_000_000n) + 1)).toBeDefined();
  });

  it('parses only a complete identity of decimal strings', () => {
    const id = idNow(file);
    expect(parseIdentity(JSON.parse(JSON.stringify(id)))).toEqual(id);
    expect(parseIdentity({ ...id, ctimeNs: 5 })).toBeUndefined();
    expect(parseIdentity({ ...id, ino: '-1' })).toBeUndefined();
    expect(parseIdentity({ dev: id.dev, ino: id.ino, size: id.size, mtimeNs: id.mtimeNs })).toBeUndefined();
    expect(parseIdentity(null)).toBeUndefined();
  });
});

describe('prepareLocalWal takes the identity around its read', () => {
  it.each([
    ['in memory, uncompressed', 'none', 1024 * 1024],
    ['in memory, compressed as a stream', 'zstd', 4 * 1024 * 1024],
  ] as const)('%s', async (_label, codec, segSize) => {
    const dir = mkdtempSync(join(root, 'prep-'));
    const s = await writeFakeSegment(dir, 3, { segSize });
    await settle();
    const p = await prepareLocalWal(s.path, s.name, codec, undefined, join(dir, 'tmp'));
    await p.dispose();
    expect(p.sha256).toBe(sha(s.data));
    expect(p.identity).toEqual(idNow(s.path));
  });

  it.each(['none', 'zstd'] as const)('streamed (larger than IN_MEMORY_MAX), codec %s', async (codec) => {
    const dir = mkdtempSync(join(root, 'prep-'));
    const s = await writeLargeSegment(dir, 2, { segSize: 2 * IN_MEMORY_MAX, fill: 'zeros' });
    await settle();
    const p = await prepareLocalWal(s.path, s.name, codec, undefined, join(dir, 'tmp'));
    await p.dispose();
    expect(p.sha256).toBe(s.sha256);
    expect(p.identity).toEqual(idNow(s.path));
  });

  it('records no identity for a file written just before the read', async () => {
    const dir = mkdtempSync(join(root, 'prep-'));
    const s = await writeFakeSegment(dir, 4);
    const p = await prepareLocalWal(s.path, s.name, 'none', undefined, join(dir, 'tmp'));
    expect(p.sha256).toBe(sha(s.data));
    expect(p.identity).toBeUndefined();
  });
});

describe('the fast path trusts the recorded identity, else re-hashes', () => {
  const spool = join(root, 'spool');
  const repo = 's3://bucket/identity';
  const config = loadConfig({ repo, spool }, {}).config;
  const hashing = loadConfig({ repo, spool, 'fast-path-hash': true }, {}).config;
  const cache = repoCacheDir(spool, repoUrlOf(repo)!);
  const walDir = mkdtempSync(join(root, 'pg_wal-'));

  /** A segment uploaded ahead: prepared and recorded as the look-ahead does it. */
  async function uploadedAhead(segno: number) {
    const s = await writeFakeSegment(walDir, segno, { seed: segno });
    await settle();
    const p = await prepareLocalWal(s.path, s.name, 'none', undefined, join(walDir, 'tmp'));
    await p.dispose();
    expect(p.identity).toBeDefined();
    await recordUpload(cache, repoUrlOf(repo)!, p);
    const rec = (await readPushRecord(cache, s.name))!;
    expect(rec.identity).toEqual(p.identity);
    return { ...s, rec };
  }

  it('identity equal: exit 0 without reading the file (a record with a wrong SHA-256 proves it), and fastPathHash reads it', async () => {
    const s = await uploadedAhead(0x41);
    expect(await tryFastPush(config, s.path, s.name)).toMatchObject({ by: 'identity', sha256: sha(s.data) });
    // The same record with a SHA-256 that the bytes do not have: only a path that never reads them
    // accepts it.
    const wrong: PushRecord = { ...s.rec, sha256: sha(Buffer.from('not these bytes')) };
    await writePushRecord(cache, wrong);
    expect(await tryFastPush(config, s.path, s.name)).toMatchObject({ by: 'identity', sha256: wrong.sha256 });
    expect(await tryFastPush(hashing, s.path, s.name)).toBeNull();
    // ...which dropped the record it could not verify.
    expect(await readPushRecord(cache, s.name)).toBeNull();
  });

  it('identity changed (the same bytes written anew: new ctime): falls back to the re-hash and still accepts them', async () => {
    const s = await uploadedAhead(0x42);
    await writeFile(s.path, s.data);
    expect(idNow(s.path)).not.toEqual(s.rec.identity);
    expect(await tryFastPush(config, s.path, s.name)).toMatchObject({ by: 'sha256', sha256: sha(s.data) });
  });

  it('chmod alone changes the identity (ctime), and the re-hash decides', async () => {
    const s = await uploadedAhead(0x43);
    await chmod(s.path, 0o600);
    expect(await tryFastPush(config, s.path, s.name)).toMatchObject({ by: 'sha256' });
  });

  it('changed content of the same size: refused', async () => {
    const s = await uploadedAhead(0x44);
    const other = Buffer.from(s.data);
    other[5000]! ^= 0xff;
    await writeFile(s.path, other);
    expect(await tryFastPush(config, s.path, s.name)).toBeNull();
  });

  it('a file re-created under the recorded name (another inode) with other bytes: refused', async () => {
    const s = await uploadedAhead(0x45);
    await rm(s.path);
    const other = Buffer.from(s.data);
    other[6000]! ^= 0xff;
    await writeFile(s.path, other);
    expect(await tryFastPush(config, s.path, s.name)).toBeNull();
  });

  it('a record without an identity (written by an older walvault, or a racy read) takes the hashing path', async () => {
    const s = await uploadedAhead(0x46);
    const { identity: _, ...old } = s.rec;
    await writePushRecord(cache, old);
    expect((await readPushRecord(cache, s.name))!.identity).toBeUndefined();
    expect(await tryFastPush(config, s.path, s.name)).toMatchObject({ by: 'sha256' });
    await writePushRecord(cache, { ...old, sha256: sha(Buffer.from('x')) });
    expect(await tryFastPush(config, s.path, s.name)).toBeNull();
  });

  it('a malformed identity in a record costs the hash, not the record', () => {
    const name = '000000010000000000000047';
    const base = { v: 1, name, size: 10, sha256: 'a'.repeat(64), mtimeMs: 1, ino: 1, dev: 1, repo, pushedAt: 'x' };
    const rec = parsePushRecord(JSON.stringify({ ...base, identity: { dev: 1 } }), name);
    expect(rec).toMatchObject({ name, size: 10 });
    expect(rec!.identity).toBeUndefined();
    expect('identity' in rec!).toBe(false);
  });
});

describe('fastPathHash reaches the hot path through flag, environment and config file', () => {
  const spool = join(root, 'spool-cfg');

  it('defaults to false and is set by each source', async () => {
    const hot = (argv: string[], env: NodeJS.ProcessEnv = {}) => loadConfig(parseHotArgv(argv)!.flags, { WALVAULT_SPOOL: spool, ...env }).config.fastPathHash;
    expect(hot(['wal-push', 'p'])).toBe(false);
    expect(hot(['--fast-path-hash', 'wal-push', 'p'])).toBe(true);
    expect(hot(['wal-push', 'p', '--fast-path-hash=true'])).toBe(true);
    expect(hot(['wal-push', 'p'], { WALVAULT_FAST_PATH_HASH: 'true' })).toBe(true);
    expect(hot(['--no-fast-path-hash', 'wal-push', 'p'], { WALVAULT_FAST_PATH_HASH: 'true' })).toBe(false);
    const file = join(root, 'walvault.json');
    await writeFile(file, JSON.stringify({ fastPathHash: true }), { mode: 0o600 });
    expect(hot(['--config', file, 'wal-push', 'p'])).toBe(true);
    expect(hot(['wal-push', 'p'], { WALVAULT_CONFIG: file, WALVAULT_FAST_PATH_HASH: 'false' })).toBe(false);
  });
});
