// backup/stream-objects.ts packTarStream, in process, against a file:// repository: synthetic tars
// (tar-stream's packer) routed into bundles and per-file objects by the bundle rule, members that
// must be refused, and an upload failure that leaves no temp file behind.
import { createHash, randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import tar from 'tar-stream';
import { afterAll, describe, expect, it } from 'vitest';
import { parseStoredMeta } from '../../src/archive/objects.js';
import { backupKey } from '../../src/backup/catalog.js';
import { packTarStream, type StreamState } from '../../src/backup/stream-objects.js';
import { decompressStream } from '../../src/codec/codec.js';
import { loadConfig, type Config } from '../../src/common/config.js';
import { openStorage } from '../../src/storage/open.js';
import type { Storage } from '../../src/storage/types.js';
import { cleanupAll, tempDir } from '../support/walvault.js';

const KiB = 1024;
const ID = 'base_000000010000000000000002_20261130T060000Z';
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const opened: Storage[] = [];
afterAll(async () => {
  for (const s of opened) s.close();
  await cleanupAll();
});

async function open(): Promise<{ storage: Storage; config: Config }> {
  const env = { WALVAULT_REPO: `file://${await tempDir('wv-sobj-repo')}`, WALVAULT_SPOOL: await tempDir('wv-sobj-spool'), WALVAULT_RETRIES: '1' };
  const { config } = loadConfig({}, env);
  const storage = await openStorage(config);
  opened.push(storage);
  return { storage, config };
}

type Member = { name: string; type?: 'file' | 'directory' | 'symlink'; body?: Buffer; linkname?: string };
function tarOf(members: Member[]): Readable {
  const pack = tar.pack();
  for (const m of members) {
    const h = { name: m.name, type: m.type ?? 'file', mode: m.type === 'directory' ? 0o700 : 0o600, mtime: new Date(1_700_000_000_000), ...(m.linkname ? { linkname: m.linkname } : {}) };
    if (m.body) pack.entry(h, m.body);
    else pack.entry(h);
  }
  pack.finalize();
  return pack as unknown as Readable;
}

describe('packTarStream', () => {
  it('packs small members in order into bundles of at most bundleSize, larger ones alone; the manifest is kept out of the list', async () => {
    const { storage, config } = await open();
    const small = Array.from({ length: 20 }, (_, i) => ({ name: `base/1/${i}`, body: randomBytes(10 * KiB) }));
    const large = { name: 'base/1/big', body: randomBytes(300 * KiB) };
    const members: Member[] = [
      { name: 'backup_label', body: Buffer.from('START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n') },
      { name: 'base', type: 'directory' },
      { name: 'base/1', type: 'directory' },
      ...small.slice(0, 10),
      large,
      { name: 'base/1/empty', body: Buffer.alloc(0) },
      ...small.slice(10),
      { name: 'global', type: 'directory' },
      { name: 'global/pg_control', body: randomBytes(8192) },
      { name: 'backup_manifest', body: Buffer.from('{"PostgreSQL-Backup-Manifest-Version": 1}') },
    ];
    const state: StreamState = { files: new Map() };
    const labels: string[] = [];
    const out = await packTarStream(tarOf(members), state, {
      storage,
      config,
      bundleSize: 128 * KiB, // files from 16 KiB are an object each
      uploads: 2,
      signal: new AbortController().signal,
      start: async (label) => {
        labels.push(label.toString());
        return ID;
      },
    });
    expect(labels).toEqual([members[0]!.body!.toString()]);
    expect(state.files.get('backup_manifest')?.toString()).toBe(members.at(-1)!.body!.toString());
    expect(state.lastEntry).toBe('backup_manifest');
    const { list } = out;
    expect(list).toMatchObject({ format: 2, backup: ID, type: 'full' });
    expect(list.entries.map((e) => e.path)).toEqual(members.filter((m) => m.name !== 'backup_manifest').map((m) => m.name));
    // backup_label + small 0-11 (120 KiB + label), then big alone, then small 12-19 + pg_control.
    const objectOf = (p: string) => {
      const e = list.entries.find((x) => x.path === p)!;
      return e.type === 'file' ? e.extents[0]?.object : undefined;
    };
    expect(list.objects.map((o) => o.name)).toEqual(['data/000000', 'data/000001', 'data/000002']);
    expect([objectOf('backup_label'), objectOf('base/1/0'), objectOf('base/1/11')]).toEqual([0, 0, 0]);
    expect(objectOf('base/1/big')).toBe(1);
    expect([objectOf('base/1/12'), objectOf('base/1/19'), objectOf('global/pg_control')]).toEqual([2, 2, 2]);
    expect(objectOf('base/1/empty')).toBeUndefined();
    expect(list.objects[1]!.size).toBe(300 * KiB);
    for (const o of list.objects.filter((_, i) => i !== 1)) expect(o.size).toBeLessThanOrEqual(128 * KiB);
    let total = 0;
    const contents: Buffer[] = [];
    for (const o of list.objects) {
      const got = (await storage.get(backupKey(ID, o.name)))!;
      const meta = parseStoredMeta(got.info, o.name);
      const z = decompressStream(meta.codec);
      const bytes = await buffer(z ? got.body.pipe(z) : got.body);
      expect({ sha256: sha(bytes), size: bytes.length, backup: got.info.meta['backup'] }).toEqual({ sha256: o.sha256, size: o.size, backup: ID });
      contents.push(bytes);
    }
    for (const m of members) {
      const e = list.entries.find((x) => x.path === m.name);
      if (!e || e.type !== 'file') continue;
      const x = e.extents[0];
      const slice = x ? contents[x.object]!.subarray(x.offset, x.offset + x.size) : Buffer.alloc(0);
      expect(slice.equals(m.body!), m.name).toBe(true);
      expect(e.sha256).toBe(sha(m.body!));
      expect(e.mtimeMs).toBe(1_700_000_000_000);
      total += m.body!.length;
    }
    expect(out.sizeBytes).toBe(total);
    expect(await readdir(join(config.spool, 'tmp'))).toEqual([]);
  });

  it.each([
    ['a symbolic link (a tablespace)', [{ name: 'backup_label', body: Buffer.from('x') }, { name: 'pg_tblspc', type: 'directory' }, { name: 'pg_tblspc/16384', type: 'symlink', linkname: '/srv/ts' }], /symbolic link pg_tblspc\/16384 -> \/srv\/ts; backup-push --method stream does not support tablespaces/],
    ['a file before backup_label', [{ name: 'PG_VERSION', body: Buffer.from('15\n') }], /does not begin with backup_label \(its first file is PG_VERSION\)/],
    ['an unsafe name', [{ name: 'backup_label', body: Buffer.from('x') }, { name: 'base/../../etc/x', body: Buffer.from('x') }], /unsafe name/],
  ] as Array<[string, Member[], RegExp]>)('refuses %s, leaving no temp file', async (_what, members, why) => {
    const { storage, config } = await open();
    const p = packTarStream(tarOf(members), { files: new Map() }, { storage, config, bundleSize: 128 * KiB, uploads: 2, signal: new AbortController().signal, start: async () => ID });
    await expect(p).rejects.toThrow(why);
    expect(await readdir(join(config.spool, 'tmp')).catch(() => [])).toEqual([]);
  });
});
