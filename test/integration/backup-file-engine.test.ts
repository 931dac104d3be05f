// backup/file-engine.ts uploadFiles, in process, against file:// and the real S3 stores: plan,
// parallel workers, what a live data directory does to files (vanish, shrink, grow), failures.
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, symlink, truncate, unlink, writeFile, appendFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buffer } from 'node:stream/consumers';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { WalkedEntry } from '../../src/backup/data-dir-walk.js';
import { uploadFiles } from '../../src/backup/file-engine.js';
import { removeIncompleteBackup } from '../../src/backup/push-cleanup.js';
import { BACKUP_ID_GRAMMAR } from '../../src/backup/backup-info.js';
import { backupKey } from '../../src/backup/catalog.js';
import { parseFileList, serializeFileList, type FileList } from '../../src/backup/file-list.js';
import { parseStoredMeta } from '../../src/archive/objects.js';
import { decompressStream } from '../../src/codec/codec.js';
import { loadConfig, type Config } from '../../src/common/config.js';
import { isWalvaultError } from '../../src/common/errors.js';
import { openStorage } from '../../src/storage/open.js';
import type { Storage } from '../../src/storage/types.js';
import { fault, FaultProxy } from '../support/fault-proxy.js';
import { createTestBucket, envFor, testStores } from '../support/stores.js';
import { cleanupAll, tempDir } from '../support/walvault.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const ID = 'base_000000010000000000000002_20261130T060000Z';
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

type Repo = { name: string; env: () => Promise<Record<string, string>>; proxied?: boolean };
const repos: Repo[] = [
  { name: 'file', env: async () => ({ WALVAULT_REPO: `file://${await tempDir('wv-engine-repo')}` }) },
  ...testStores().map((store) => ({
    name: store.name,
    env: async () => envFor(store, await createTestBucket(store, 'engine'), 'pfx'),
  })),
];

const opened: Storage[] = [];
afterAll(async () => {
  for (const s of opened) s.close();
  await cleanupAll();
});

async function open(env: Record<string, string>): Promise<{ storage: Storage; config: Config }> {
  const spool = await tempDir('wv-engine-spool');
  const { config } = loadConfig({}, { ...env, WALVAULT_SPOOL: spool, WALVAULT_RETRIES: '3', WALVAULT_RETRY_MIN_DELAY: '0.05' });
  const storage = await openStorage(config);
  opened.push(storage);
  return { storage, config };
}

/** A data directory: `small` small files, one large file, and what the walk reported. */
async function dataDir(small: number): Promise<{ dir: string; entries: WalkedEntry[] }> {
  const dir = await tempDir('wv-engine-data');
  const entries: WalkedEntry[] = [];
  const add = async (path: string, bytes?: Buffer) => {
    if (bytes === undefined) {
      await mkdir(join(dir, path));
      entries.push({ type: 'dir', path, mode: 0o700 });
    } else {
      await writeFile(join(dir, path), bytes, { mode: 0o600 });
      entries.push({ type: 'file', path, mode: 0o600, size: bytes.length, mtimeMs: Date.now() });
    }
  };
  await add('PG_VERSION', Buffer.from('15\n'));
  await add('base');
  await add('base/5');
  // Compressible and not: zeros and random halves, like relation pages.
  for (let i = 0; i < small; i++) {
    const n = (i * 7919) % (100 * KiB);
    await add(`base/5/${16384 + i}`, Buffer.concat([randomBytes(n >> 1), Buffer.alloc(n - (n >> 1))]));
  }
  await add('base/5/99999', Buffer.concat([randomBytes(2 * MiB), Buffer.alloc(MiB)]));
  await add('global');
  await add('global/pg_control', randomBytes(8 * KiB));
  entries.push({ type: 'link', path: 'pg_tblspc_link', mode: 0o777, target: '/srv/ts' });
  return { dir, entries };
}

/** Reads back every object and file slice of `list` and checks them against metadata, list and disk. */
async function verify(storage: Storage, list: FileList, dir: string, onDisk: (path: string, size: number) => Promise<Buffer>) {
  const again = parseFileList(serializeFileList(list).toString('utf8'), ID, 'files.json', BACKUP_ID_GRAMMAR);
  expect(again).toEqual(list);
  const contents: Buffer[] = [];
  for (const o of list.objects) {
    const got = await storage.get(backupKey(ID, o.name));
    expect(got, o.name).not.toBeNull();
    const meta = parseStoredMeta(got!.info, o.name);
    const z = decompressStream(meta.codec);
    const bytes = await buffer(z ? got!.body.pipe(z) : got!.body);
    expect({ sha256: sha(bytes), size: bytes.length }).toEqual({ sha256: o.sha256, size: o.size });
    expect(meta).toEqual({ sha256: o.sha256, size: o.size, codec: o.codec });
    expect(got!.info.storedSize).toBe(o.storedBytes);
    contents.push(bytes);
  }
  for (const e of list.entries) {
    if (e.type !== 'file') continue;
    const x = e.extents[0];
    const slice = x ? contents[x.object]!.subarray(x.offset, x.offset + x.size) : Buffer.alloc(0);
    expect(sha(slice), e.path).toBe(e.sha256);
    expect(slice.equals(await onDisk(join(dir, e.path), e.size)), e.path).toBe(true);
  }
}

const prefixOf = async (path: string, size: number) => (await readFile(path)).subarray(0, size);

async function keysOf(storage: Storage): Promise<string[]> {
  const out: string[] = [];
  for await (const o of storage.list(`backups/${ID}/`)) out.push(o.key);
  return out;
}

// A fresh repository per test: every test uploads backup ID, and backup objects are written once
// (a second upload of other content under the same key is an ArchiveConflict, as it should be).
describe.each(repos)('uploadFiles on $name', (repo) => {
  let env: Record<string, string>;
  beforeEach(async () => {
    env = await repo.env();
  });

  it('packs small files into bundles, a large file alone, and every object and slice verifies', async () => {
    const { storage, config } = await open(env);
    const { dir, entries } = await dataDir(120);
    const label = Buffer.from('START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n');
    let extraCalledAfter = -1;
    let read = 0;
    const up = await uploadFiles(storage, config, {
      backup: ID,
      dataDir: dir,
      entries,
      extra: async () => {
        extraCalledAfter = read;
        return [{ path: 'backup_label', body: label }];
      },
      jobs: 3,
      bundleSize: MiB,
      signal: new AbortController().signal,
      onProgress: (n) => (read = n),
    });
    const files = entries.filter((e) => e.type === 'file');
    const total = files.reduce((a, f) => a + f.size!, 0);
    // The extras come only once every data file was read (pg_backup_stop follows the copy).
    expect(extraCalledAfter).toBe(total);
    expect(up.sizeBytes).toBe(total + label.length);
    expect(up.list.entries.map((e) => e.path)).toEqual([...entries.map((e) => e.path), 'backup_label']);
    const big = up.list.entries.find((e) => e.path === 'base/5/99999');
    const bigObject = big?.type === 'file' ? big.extents[0]!.object : -1;
    expect(up.list.entries.filter((e) => e.type === 'file' && e.extents[0]?.object === bigObject)).toHaveLength(1);
    // pg_control is read after every other file (its own object), backup_label last of all.
    const objectOf = (path: string) => (up.list.entries.find((e) => e.path === path) as { extents: Array<{ object: number }> }).extents[0]!.object;
    expect([objectOf('global/pg_control'), objectOf('backup_label')]).toEqual([up.list.objects.length - 2, up.list.objects.length - 1]);
    const bundles = up.list.objects.filter((_, i) => i !== bigObject && i < up.list.objects.length - 2);
    expect(bundles.length).toBeGreaterThanOrEqual(5);
    for (const o of bundles) expect(o.size).toBeLessThanOrEqual(MiB);
    // What the store holds: the data objects and the block maps (blocks/<n>, raw) beside them.
    const mapKeys = (await keysOf(storage)).filter((k) => k.startsWith(backupKey(ID, 'blocks/')));
    expect(mapKeys.length).toBeGreaterThan(0);
    let mapBytes = 0;
    for (const k of mapKeys) mapBytes += (await storage.head(k))!.storedSize;
    expect(up.storedBytes).toBe(up.list.objects.reduce((a, o) => a + o.storedBytes, 0) + mapBytes);
    expect(up.storedBytes).toBeLessThan(up.sizeBytes); // zstd by default, half of every file zeros
    expect(up.list.entries.find((e) => e.path === 'pg_tblspc_link')).toEqual({ type: 'link', path: 'pg_tblspc_link', mode: 0o777, target: '/srv/ts' });
    await verify(storage, up.list, dir, async (p, size) => (p.endsWith('backup_label') ? label : prefixOf(p, size)));
    // Every data object (and block map) is in the store, and nothing else of this backup yet.
    expect((await keysOf(storage)).sort()).toEqual([...up.list.objects.map((o) => backupKey(ID, o.name)), ...mapKeys].sort());
  });

  it('drops a vanished file and records what was read of files that shrank or grew', async () => {
    const { storage, config } = await open(env);
    const { dir, entries } = await dataDir(30);
    await unlink(join(dir, 'base/5/16390'));
    await truncate(join(dir, 'base/5/16391'), 1000); // shrank: the next file's offset follows what was read
    await appendFile(join(dir, 'base/5/16392'), randomBytes(5000)); // grew: read up to the walked size
    await truncate(join(dir, 'base/5/99999'), MiB); // the large file shrank too
    const up = await uploadFiles(storage, config, { backup: ID, dataDir: dir, entries, extra: [], jobs: 2, bundleSize: MiB, signal: new AbortController().signal });
    const byPath = new Map(up.list.entries.map((e) => [e.path, e]));
    expect(byPath.has('base/5/16390')).toBe(false);
    expect(byPath.get('base/5/16391')).toMatchObject({ size: 1000 });
    const walked = entries.find((e) => e.path === 'base/5/16392')!;
    expect(byPath.get('base/5/16392')).toMatchObject({ size: walked.size });
    expect(byPath.get('base/5/99999')).toMatchObject({ size: MiB });
    await verify(storage, up.list, dir, prefixOf);
  });

  it('fails with a clear error naming a file it cannot read, and leaves nothing of the backup', async () => {
    const { storage, config } = await open(env);
    const { dir, entries } = await dataDir(40);
    // Not readable as a file any more (root reads anything: EACCES is covered as postgres in backup-files).
    await rm(join(dir, 'base/5/16400'));
    await symlink('/etc/hostname', join(dir, 'base/5/16400'));
    const err = await uploadFiles(storage, config, { backup: ID, dataDir: dir, entries, extra: [], jobs: 2, bundleSize: MiB, signal: new AbortController().signal }).catch((e: unknown) => e);
    expect(isWalvaultError(err) && err.code).toBe('BackupError');
    expect((err as Error).message).toContain(join(dir, 'base/5/16400'));
    expect(await keysOf(storage)).toEqual([]);
  });

  it('stops on abort and leaves nothing of the backup', async () => {
    const { storage, config } = await open(env);
    const { dir, entries } = await dataDir(120);
    const ctl = new AbortController();
    const err = await uploadFiles(storage, config, {
      backup: ID, dataDir: dir, entries, extra: [], jobs: 2, bundleSize: MiB, signal: ctl.signal,
      onProgress: (n) => n > 2 * MiB && ctl.abort(new Error('interrupted by SIGTERM')),
    }).catch((e: unknown) => e);
    expect((err as Error).message).toBe('interrupted by SIGTERM');
    expect(await keysOf(storage)).toEqual([]);
  });

  it('late-landing write: an object the store completes after the first sweep is removed by the second', async () => {
    const { storage, config } = await open(env);
    const key = (n: string) => backupKey(ID, n);
    await storage.put(key('data/000000'), Buffer.from('first'), { backup: ID });
    // What an aborted PUT does when the store already had its body: it lands after our delete.
    let landed: Promise<void> | undefined;
    const late = Object.create(storage) as Storage;
    late.delete = async (keys, opts) => {
      await storage.delete(keys, opts);
      landed ??= storage.put(key('blocks/000000'), Buffer.from('late'), { backup: ID });
      await landed;
    };
    await removeIncompleteBackup(late, config, ID, 200);
    expect(landed).toBeDefined();
    expect(await keysOf(storage)).toEqual([]);
  });
});

describe.each(testStores())('uploadFiles through a faulty $name', (store) => {
  let proxy: FaultProxy;
  let env: Record<string, string>;
  beforeAll(async () => {
    proxy = await FaultProxy.start({ upstream: store.endpoint, secretAccessKey: store.secretAccessKey });
  });
  beforeEach(async () => {
    env = { ...envFor(store, await createTestBucket(store, 'engine-fault'), 'pfx'), AWS_ENDPOINT_URL_S3: proxy.url };
  });
  afterAll(async () => proxy.close());

  it('retries one failed object upload alone', async () => {
    const { storage, config } = await open(env);
    const { dir, entries } = await dataDir(60);
    const rule = proxy.addRule({ method: 'PUT', path: /\/data\/000002(\?|$)/, first: 2, action: fault.internalError() });
    const up = await uploadFiles(storage, config, { backup: ID, dataDir: dir, entries, extra: [], jobs: 2, bundleSize: MiB, signal: new AbortController().signal });
    expect(rule.injected).toBe(2);
    const puts = proxy.seen('PUT', /\/data\/\d{6}(\?|$)/);
    // Each object once, the failed one twice more.
    expect(puts.length).toBe(up.list.objects.length + 2);
    await verify(storage, up.list, dir, prefixOf);
  });

  it('fails when one object exhausts its retries, and removes what it uploaded', async () => {
    const { storage, config } = await open(env);
    const { dir, entries } = await dataDir(60);
    proxy.addRule({ method: 'PUT', path: /\/data\/000001(\?|$)/, action: fault.internalError() });
    const err = await uploadFiles(storage, config, { backup: ID, dataDir: dir, entries, extra: [], jobs: 2, bundleSize: MiB, signal: new AbortController().signal }).catch((e: unknown) => e);
    expect(isWalvaultError(err) && err.code).toBe('StorageUnavailable');
    expect((err as Error).message).toMatch(/upload backups\/.*\/data\/000001: gave up after 4 attempts/);
    expect(await keysOf(storage)).toEqual([]);
  });
});
