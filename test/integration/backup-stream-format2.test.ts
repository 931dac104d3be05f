// backup-push --method stream writes backup format 2 (issue 10 item 2): pg_basebackup's tar parsed
// member by member into data objects and files.json, on a PostgreSQL 15 cluster archiving through
// walvault to radosgw. Every object and file slice verifies, the manifest is pg_basebackup's, and
// backup-fetch restores it (pg_verifybackup, every row); SIGTERM leaves nothing behind; a format-1
// backup (base.tar, written by earlier versions) still restores.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { buffer } from 'node:stream/consumers';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { objectMeta, parseStoredMeta } from '../../src/archive/objects.js';
import { backupKey, DATA_OBJECT, makeBackupId } from '../../src/backup/catalog.js';
import { parseBackupLabel } from '../../src/backup/label.js';
import { finishBackup } from '../../src/backup/push-finish.js';
import { TarTap } from '../../src/backup/tar.js';
import { BACKUP_ID_GRAMMAR } from '../../src/backup/backup-info.js';
import { parseFileList } from '../../src/backup/file-list.js';
import { compressBuffer, decompressStream } from '../../src/codec/codec.js';
import { loadConfig } from '../../src/common/config.js';
import type { Storage } from '../../src/storage/types.js';
import { PG_BIN_DIR, PgCluster, startRestoredCluster } from '../support/pg.js';
import { listKeys, testStores, type TestStore } from '../support/stores.js';
import { cleanupAll, runWalvault, tempDir, walvaultBin, type WalvaultResult } from '../support/walvault.js';
import { startArchivingCluster, switchAndWaitArchived } from '../support/archiving-cluster.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const rgw = testStores().filter((s) => s.name === 'rgw');

describe.each(rgw)('backup-push --method stream (format 2) on $name', (store: TestStore) => {
  let pg: PgCluster;
  let bucket: string;
  let env: Record<string, string>;
  let storage: Storage;
  let backupId: string;
  const restored: PgCluster[] = [];
  const show = (r: WalvaultResult) => `exit ${r.code}\n${r.stderr}${r.stdout}`;

  async function getObject(key: string): Promise<{ bytes: Buffer; meta: ReturnType<typeof parseStoredMeta>; stored: number }> {
    const got = await storage.get(key);
    expect(got, key).not.toBeNull();
    const meta = parseStoredMeta(got!.info, key);
    const z = decompressStream(meta.codec);
    const bytes = await buffer(z ? got!.body.pipe(z) : got!.body);
    expect({ sha256: sha(bytes), size: bytes.length }, key).toEqual({ sha256: meta.sha256, size: meta.size });
    return { bytes, meta, stored: got!.info.storedSize };
  }

  beforeAll(async () => {
    ({ pg, bucket, env, storage } = await startArchivingCluster(store, 'streamfmt'));
    await pg.pgbench(['-i', '-s', '2', '-q']);
    await pg.query('CREATE TABLE marker AS SELECT generate_series(1, 1234) AS n');
    await switchAndWaitArchived(pg);
  });

  afterAll(async () => {
    storage?.close();
    for (const c of restored) await c.destroy();
    await pg?.destroy();
    await cleanupAll();
  });

  it('stores the tar as format 2: bundles and large-file objects, every object and file slice verifies, no base.tar', async () => {
    const r = await runWalvault(['backup-push', '--method', 'stream', '--backup-bundle-size', '1MiB'], { env: { ...env, ...pg.connectionEnv() }, timeoutMs: 240_000 });
    expect(r.code, show(r)).toBe(0);
    backupId = r.stdout.trim();
    expect(backupId).toMatch(BACKUP_ID_GRAMMAR);
    const listed = await runWalvault(['backup-list', '--json'], { env });
    const info = (JSON.parse(listed.stdout) as Array<Record<string, unknown>>).find((b) => b['id'] === backupId)!;
    expect(info).toMatchObject({ format: 2, method: 'stream', type: 'full', pgVersion: 15, codec: 'zstd' });

    const dir = `backups/${backupId}/`;
    const keys = (await listKeys(store, bucket, `pg/${dir}`)).map((k) => k.slice(`pg/${dir}`.length));
    expect(keys).toEqual(expect.arrayContaining(['backup.json', 'backup_manifest', 'files.json']));
    expect(keys).not.toContain('base.tar');
    const sentinel = JSON.parse((await getObject(`${dir}backup.json`)).bytes.toString('utf8')) as Record<string, unknown>;
    expect(sentinel).toMatchObject({ ...info, format: 2, method: 'stream' });
    const files = await getObject(`${dir}files.json`);
    expect(sentinel['sha256']).toBe(files.meta.sha256);
    const list = parseFileList(files.bytes.toString('utf8'), backupId, 'files.json', BACKUP_ID_GRAMMAR);
    expect(list.type).toBe('full');
    expect(keys.filter((k) => k.startsWith('data/')).sort()).toEqual(list.objects.map((o) => o.name).sort());
    expect(list.objects.length).toBeGreaterThan(10);

    const contents: Buffer[] = [];
    let stored = files.stored;
    for (const o of list.objects) {
      const got = await getObject(`${dir}${o.name}`);
      expect(got.meta, o.name).toEqual({ sha256: o.sha256, size: o.size, codec: o.codec });
      expect(got.stored).toBe(o.storedBytes);
      stored += got.stored;
      contents.push(got.bytes);
    }
    expect(sentinel['storedBytes']).toBe(stored);
    // With 1 MiB bundles: files below 128 KiB share bundles, larger ones are an object each.
    const perObject = new Map<number, number>();
    let total = 0;
    for (const e of list.entries) {
      if (e.type !== 'file') continue;
      total += e.size;
      expect(e.extents.length, e.path).toBe(e.size > 0 ? 1 : 0);
      const x = e.extents[0];
      const slice = x ? contents[x.object]!.subarray(x.offset, x.offset + x.size) : Buffer.alloc(0);
      expect(sha(slice), e.path).toBe(e.sha256);
      if (x) perObject.set(x.object, (perObject.get(x.object) ?? 0) + 1);
      if (e.size >= 128 * 1024) expect(perObject.get(x!.object), e.path).toBe(1);
    }
    expect([...perObject.values()].some((n) => n > 10)).toBe(true);
    for (const [o, n] of perObject) if (n > 1) expect(list.objects[o]!.size, list.objects[o]!.name).toBeLessThanOrEqual(1024 * 1024);
    expect(list.objects.some((o) => o.size > 1024 * 1024)).toBe(true);
    expect(sentinel['sizeBytes']).toBe(total);
    const paths = list.entries.map((e) => e.path);
    expect(paths).toEqual(expect.arrayContaining(['PG_VERSION', 'global/pg_control', 'backup_label', 'base', 'pg_wal']));
    // pg_basebackup's manifest is stored as its own object, not as a file of the list.
    expect(paths).not.toContain('backup_manifest');
    expect(list.entries.filter((e) => e.type === 'link')).toEqual([]);
    const manifest = await getObject(`${dir}backup_manifest`);
    expect(sentinel['manifestSha256']).toBe(manifest.meta.sha256);
    const m = JSON.parse(manifest.bytes.toString('utf8')) as { Files: Array<{ Path: string; Size: number }> };
    const inList = list.entries.flatMap((e) => (e.type === 'file' ? [`${e.path}:${e.size}`] : []));
    expect(m.Files.map((f) => `${f.Path}:${f.Size}`).sort()).toEqual(inList.sort());
  });

  it('restores with backup-fetch: pg_verifybackup passes and the cluster starts with every row', async () => {
    expect(backupId).toBeDefined();
    const target = join(await tempDir('wv-sf-restore', { forPostgres: true }), 'data');
    const r = await runWalvault(['backup-fetch', backupId, target, '--owner', 'postgres', '--jobs', '2', '--target-immediate', '--target-action', 'promote'], {
      env,
      wrapper: true,
      timeoutMs: 240_000,
    });
    expect(r.code, show(r)).toBe(0);
    expect(r.stderr).toMatch(/pg_verifybackup: every file matches backup_manifest/);
    const c = await startRestoredCluster(target, restored);
    expect(await c.query('SELECT count(*) FROM pgbench_accounts')).toBe('200000');
    expect(await c.query('SELECT count(*), sum(n) FROM marker')).toBe('1234|761995');
  }, 300_000);

  it('stops on SIGTERM while objects are being stored: exit 14, nothing of the backup left, no temp file in the spool', async () => {
    const before = await listKeys(store, bucket, 'pg/backups/');
    const bin = await walvaultBin();
    const child = spawn(bin, ['backup-push', '--method', 'stream', '--backup-bundle-size', '1MiB', '--max-rate', '1M'], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/root', ...env, ...pg.connectionEnv() },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    let stdout = '';
    let killed = false;
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (/started at/.test(stderr) && !killed) {
        killed = true;
        // Let some objects reach the store first.
        setTimeout(() => child.kill('SIGTERM'), 3000);
      }
    });
    const [code, signal] = await new Promise<[number | null, string | null]>((resolve) => child.on('close', (c, s) => resolve([c, s])));
    expect({ code, signal }, stderr).toEqual({ code: 14, signal: null });
    expect(stderr.trim().split('\n').at(-1)).toMatch(/BackupError: interrupted by SIGTERM/);
    expect(stdout).toBe('');
    expect(await listKeys(store, bucket, 'pg/backups/')).toEqual(before);
    expect((await readdir(join(env['WALVAULT_SPOOL']!, 'tmp')).catch(() => [])).filter((f) => f.includes('backup-object'))).toEqual([]);
  }, 120_000);

  it('a format-1 backup (one base.tar, as earlier walvault versions wrote it) still restores', async () => {
    // What --method stream stored before format 2: pg_basebackup's tar, compressed whole as base.tar.
    const tarBytes = await new Promise<Buffer>((resolve, reject) => {
      const child = spawn(join(PG_BIN_DIR, 'pg_basebackup'), ['-D', '-', '-Ft', '-X', 'none', '-c', 'fast'], {
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...pg.connectionEnv() },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      const out: Buffer[] = [];
      child.stdout.on('data', (d: Buffer) => out.push(d));
      child.on('close', (code) => (code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`pg_basebackup exit ${code}`))));
    });
    const tap = new TarTap();
    await pipeline(Readable.from([tarBytes]), tap, new Writable({ write: (_c, _e, cb) => cb() }));
    const label = parseBackupLabel(tap.files.get('backup_label')!.toString('utf8'));
    const config = loadConfig({}, env).config;
    const id = makeBackupId(label.startSegment, label.startTime ?? new Date());
    const body = await compressBuffer(config.compression, tarBytes, config.compressionLevel);
    await storage.put(backupKey(id, DATA_OBJECT), body, { ...objectMeta({ sha256: sha(tarBytes), size: tarBytes.length, codec: config.compression }), format: 'tar', backup: id });
    const control = tap.files.get('global/pg_control')!;
    const now = new Date();
    await finishBackup(storage, config, {
      id,
      format: { format: 1 },
      label,
      manifest: tap.files.get('backup_manifest')!,
      sizeBytes: tarBytes.length,
      sha256: sha(tarBytes),
      storedBytes: body.length,
      systemIdentifier: control.readBigUInt64LE(0).toString(),
      pgVersion: 15,
      localStart: now,
      localStop: now,
    }, new AbortController().signal);

    const target = join(await tempDir('wv-sf-f1', { forPostgres: true }), 'data');
    const r = await runWalvault(['backup-fetch', id, target, '--owner', 'postgres', '--target-immediate', '--target-action', 'promote'], { env, wrapper: true, timeoutMs: 240_000 });
    expect(r.code, show(r)).toBe(0);
    expect(r.stderr).toMatch(/files and \d+ directories fsynced/);
    expect(r.stderr).toMatch(/pg_verifybackup: every file matches backup_manifest/);
    const c = await startRestoredCluster(target, restored);
    expect(await c.query('SELECT count(*), sum(n) FROM marker')).toBe('1234|761995');
  }, 300_000);
});
