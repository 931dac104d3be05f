import { createHash } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { afterAll, describe, expect, it } from 'vitest';
import type { BackupInfo } from '../../src/backup/backup-info.js';
import { createExtractor, restoredMode } from '../../src/backup/extract.js';
import type { Entry, FileEntry, FileList } from '../../src/backup/file-list.js';
import { planRestore, type Piece } from '../../src/backup/file-plan.js';
import { ObjectCutter } from '../../src/backup/object-cutter.js';
import { TAR_END, tarHeader } from '../../src/backup/tar-encode.js';
import { isWalvaultError } from '../../src/common/errors.js';

// The pure side of a format-2 restore: the plan made from a file list before anything is written,
// and the cutting of one data object into the tar stream of its files.

const ID = 'base_000000010000000000000002_20261130T060000Z';
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

/** An object holding `files` (path -> bytes) one after the other, with `gap` junk bytes between them. */
function pack(files: Array<[string, Buffer]>, gap = 0, object = 0): { body: Buffer; entries: Array<FileEntry & Piece> } {
  const parts: Buffer[] = [];
  const entries: Array<FileEntry & Piece> = [];
  let offset = 0;
  for (const [path, bytes] of files) {
    const extents = bytes.length > 0 ? [{ object, offset, size: bytes.length }] : [];
    entries.push({ type: 'file', path, mode: 0o640, size: bytes.length, mtimeMs: 1_700_000_000_500, sha256: sha(bytes), extents, object, offset });
    parts.push(bytes, Buffer.alloc(gap, 0x5a));
    offset += bytes.length + gap;
  }
  return { body: Buffer.concat(parts), entries };
}

function list(entries: Entry[], objects: Array<{ size: number; backup?: string }>): FileList {
  return {
    format: 2,
    backup: ID,
    type: 'full',
    objects: objects.map((o, i) => ({ name: `data/${String(i).padStart(6, '0')}`, backup: o.backup ?? ID, size: o.size, sha256: '0'.repeat(64), storedBytes: o.size, codec: 'zstd' })),
    entries,
  };
}
const info = (sizeBytes: number) => ({ id: ID, sizeBytes }) as BackupInfo;

/** Feeds `body` in chunks of `chunk` bytes through a cutter into an extractor under a new directory. */
async function cutInto(body: Buffer, entries: Piece[], chunk: number, beforeEnd?: () => void): Promise<{ root: string; error?: unknown }> {
  const root = await mkdtemp(join(tmpdir(), 'wv-cut-'));
  dirs.push(root);
  const pieces = function* () {
    for (let i = 0; i < body.length; i += chunk) yield body.subarray(i, i + chunk);
  };
  try {
    await pipeline(Readable.from(pieces()), new ObjectCutter(entries, 'object 0', beforeEnd), createExtractor(root, { keepModes: true }));
    return { root };
  } catch (error) {
    return { root, error };
  }
}

describe('format-2 restore plan', () => {
  it('groups files by object in offset order, skips unreferenced objects, and keeps directories in list order', () => {
    const a = pack([['base/1/a', Buffer.from('aaaa')], ['base/1/b', Buffer.from('bb')]]);
    const entries: Entry[] = [{ type: 'dir', path: 'base', mode: 0o700 }, { type: 'dir', path: 'base/1', mode: 0o700 }, a.entries[1]!, a.entries[0]!];
    const plan = planRestore(list(entries, [{ size: a.body.length }, { size: 10 }]), info(6), 'files.json');
    expect(plan.dirs.map((d) => d.path)).toEqual(['base', 'base/1']);
    expect(plan.objects).toHaveLength(1);
    expect(plan.objects[0]!.key).toBe(`backups/${ID}/data/000000`);
    expect(plan.objects[0]!.files.map((f) => f.path)).toEqual(['base/1/a', 'base/1/b']);
    expect({ fileCount: plan.fileCount, fileBytes: plan.fileBytes, objectBytes: plan.objectBytes }).toEqual({ fileCount: 2, fileBytes: 6, objectBytes: 6 });
  });

  it('trust: refuses tablespace links, objects of another backup, overlapping files and a size backup.json does not record', () => {
    const a = pack([['x', Buffer.from('xyz')]]);
    const refuse = (l: FileList, size: number, why: RegExp) => {
      let err: unknown;
      try {
        planRestore(l, info(size), 'files.json');
      } catch (e) {
        err = e;
      }
      expect(isWalvaultError(err) && err.code).toBe('BackupError');
      expect((err as Error).message).toMatch(why);
    };
    refuse(list([...a.entries, { type: 'link', path: 'pg_tblspc', mode: 0o777, target: '/srv/ts' }], [{ size: 3 }]), 3, /pg_tblspc is a symbolic link.*not supported yet/);
    refuse(list(a.entries, [{ size: 3, backup: 'base_000000010000000000000001_20261129T060000Z' }]), 3, /belongs to backup base_0+1000+1_20261129T060000Z, not to this one/);
    const overlap: FileEntry = { ...a.entries[0]!, path: 'y', size: 1, extents: [{ object: 0, offset: 2, size: 1 }] };
    refuse(list([...a.entries, overlap], [{ size: 3 }]), 4, /y overlaps the file before it in data\/000000/);
    refuse(list(a.entries, [{ size: 3 }]), 4, /the files add up to 3 bytes, backup.json records 4/);
    const twice = list(a.entries, [{ size: 3 }, { size: 3 }]);
    twice.objects[1]!.name = twice.objects[0]!.name;
    refuse(twice, 3, /data\/000000 is listed twice/);
  });
});

describe('cutting a data object into files', () => {
  const long = `base/16384/${'d'.repeat(120)}/file`;
  const files: Array<[string, Buffer]> = [
    ['empty-first', Buffer.alloc(0)],
    ['PG_VERSION', Buffer.from('15\n')],
    ['big', Buffer.alloc(70_000, 7)],
    ['empty-mid', Buffer.alloc(0)],
    [long, Buffer.from('long path through a pax header')],
    ['empty-last', Buffer.alloc(0)],
  ];

  for (const [chunk, gap] of [[1, 0], [4096, 0], [1000, 3], [1 << 20, 512]] as const) {
    it(`restores every file, its bytes, group bits and mtime (chunks of ${chunk}, ${gap} bytes between files)`, async () => {
      const { body, entries } = pack(files, gap);
      const { root, error } = await cutInto(body, entries, chunk);
      expect(error).toBeUndefined();
      for (const [path, bytes] of files) {
        expect(await readFile(join(root, path))).toEqual(bytes);
        const st = await stat(join(root, path));
        expect(st.mode & 0o7777).toBe(0o640);
        expect(st.mtimeMs).toBe(1_700_000_000_000);
      }
    });
  }

  it('trust: a hostile mode (setuid, sticky, group write, anything for others) keeps only the owner and group read bits', async () => {
    const { body, entries } = pack([['suid', Buffer.from('#!/bin/sh\n')], ['plain', Buffer.from('x')]]);
    entries[0]!.mode = 0o7777;
    entries[1]!.mode = 0o600;
    const { root, error } = await cutInto(body, entries, 4096);
    expect(error).toBeUndefined();
    expect((await stat(join(root, 'suid'))).mode & 0o7777).toBe(0o640);
    expect((await stat(join(root, 'plain'))).mode & 0o7777).toBe(0o600);
    expect(restoredMode(0o7777, true)).toBe(0o750);
    expect(restoredMode(0o700, true)).toBe(0o700);
  });

  it('trust: a file whose bytes do not match its SHA-256 fails the stream, and its last bytes never reach the disk', async () => {
    const { body, entries } = pack([['ok', Buffer.from('fine')], ['bad', Buffer.alloc(10_000, 1)], ['after', Buffer.from('x')]]);
    entries[1]!.sha256 = sha(Buffer.alloc(10_000, 2));
    const { root, error } = await cutInto(body, entries, 4096);
    expect(isWalvaultError(error) && error.code).toBe('IntegrityError');
    expect((error as Error).message).toMatch(/^bad \(bytes 4-10004 of object 0\) has SHA-256 [0-9a-f]{64}, the file list records/);
    // The extractor may not have reached every earlier member when the stream failed; what it did
    // write of `bad` lacks at least the held-back last chunk.
    const left = await readdir(root);
    if (left.includes('bad')) expect((await stat(join(root, 'bad'))).size).toBeLessThan(10_000);
    expect(left).not.toContain('after');
  });

  it('trust: an object that ends early, or fails its own check, never ends the archive', async () => {
    const { body, entries } = pack([['a', Buffer.from('aaaa')], ['b', Buffer.from('bbbb')]]);
    const short = await cutInto(body.subarray(0, 6), entries, 3);
    expect(isWalvaultError(short.error) && short.error.code).toBe('IntegrityError');
    expect((short.error as Error).message).toMatch(/ended after 6 bytes, inside or before b .*truncated/);
    const failed = await cutInto(body, entries, 3, () => {
      throw new Error('object SHA-256 mismatch');
    });
    expect((failed.error as Error).message).toBe('object SHA-256 mismatch');
  });

  it('a source that fails in the middle of a file: the extractor settles, nothing more is written after it', async () => {
    const { body, entries } = pack([['a', Buffer.alloc(300_000, 1)], ['b', Buffer.alloc(10, 2)]]);
    const root = await mkdtemp(join(tmpdir(), 'wv-cut-'));
    dirs.push(root);
    const source = async function* () {
      yield body.subarray(0, 100_000);
      await new Promise((r) => setTimeout(r, 50));
      throw Object.assign(new Error('aborted'), { code: 'ECONNRESET' });
    };
    const ex = createExtractor(root, { keepModes: true });
    await expect(pipeline(Readable.from(source()), new ObjectCutter(entries, 'object 0'), ex)).rejects.toThrow('aborted');
    ex.destroy();
    await Promise.race([ex.settled(), new Promise((_, reject) => setTimeout(() => reject(new Error('the extractor never settled')), 5000))]);
    const before = await readdir(root);
    await new Promise((r) => setTimeout(r, 100));
    expect(await readdir(root)).toEqual(before);
    expect(before).not.toContain('b');
  });

  it('writes base-256 sizes from 8 GiB and pax paths that tar-stream reads back', async () => {
    const ex = tar.extract();
    const header = new Promise<tar.Header>((resolve) => ex.on('entry', (h) => resolve(h)));
    ex.on('error', () => undefined);
    ex.write(tarHeader('huge', 'file', 9 * 1024 ** 3, 0o600, 0));
    expect(await header).toMatchObject({ name: 'huge', size: 9 * 1024 ** 3, type: 'file' });
    ex.destroy();
    const names: string[] = [];
    const ex2 = tar.extract();
    ex2.on('entry', (h, s, next) => {
      names.push(h.name);
      s.on('end', next);
      s.resume();
    });
    const p = 'a/'.repeat(200) + 'z';
    const finished = new Promise<void>((resolve) => ex2.on('finish', () => resolve()));
    ex2.end(Buffer.concat([tarHeader(p, 'dir', 0, 0o700, 0), TAR_END]));
    await finished;
    expect(names).toEqual([`${p}/`]);
  });
});
