import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterAll, describe, expect, it } from 'vitest';
import type { BackupInfo } from '../../src/backup/backup-info.js';
import { createExtractor } from '../../src/backup/extract.js';
import type { Entry, FileEntry, FileList } from '../../src/backup/file-list.js';
import { createdBy, planRestore } from '../../src/backup/file-plan.js';
import { ObjectCutter } from '../../src/backup/object-cutter.js';
import { finishPiecedFiles } from '../../src/backup/pieced-files.js';
import { PAX_POSITION, TAR_END, tarHeader } from '../../src/backup/tar-encode.js';
import { isWalvaultError } from '../../src/common/errors.js';

// Files in pieces (an incremental backup): the plan routes each extent to its file at its position
// (the sum of the sizes of the extents before it), the cutter marks those bytes with that position,
// the extractor writes them there in the file created empty beforehand, and the file is checked
// whole by re-reading it at the end.

const ID = 'base_000000010000000000000004_20261130T060000Z';
const OLD = 'base_000000010000000000000002_20261129T060000Z';
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});
const tmp = async () => {
  const d = await mkdtemp(join(tmpdir(), 'wv-pieced-'));
  dirs.push(d);
  return d;
};
const info = (sizeBytes: number) => ({ id: ID, sizeBytes }) as BackupInfo;

// Object 0 (this backup): [whole file "w" 5 bytes][junk 3][extent p@0 4 bytes][extent p@10 6 bytes]
// Object 1 (the earlier backup): [junk 2][extent p@4 6 bytes]
const p = Buffer.from('AAAABBBBBBCCCCCC');
const w = Buffer.from('whole');
const obj0 = Buffer.concat([w, Buffer.from('xyz'), p.subarray(0, 4), p.subarray(10)]);
const obj1 = Buffer.concat([Buffer.from('..'), p.subarray(4, 10)]);
const entries: Entry[] = [
  { type: 'dir', path: 'base', mode: 0o700 },
  { type: 'file', path: 'base/w', mode: 0o600, size: 5, mtimeMs: 1_700_000_000_000, sha256: sha(w), extents: [{ object: 0, offset: 0, size: 5 }] },
  {
    type: 'file',
    path: 'base/p',
    mode: 0o640,
    size: p.length,
    mtimeMs: 1_700_000_123_000,
    sha256: sha(p),
    extents: [
      { object: 0, offset: 8, size: 4 },
      { object: 1, offset: 2, size: 6 },
      { object: 0, offset: 12, size: 6 },
    ],
  },
];
const list = (type: 'full' | 'incremental'): FileList => ({
  format: 2,
  backup: ID,
  type,
  ...(type === 'incremental' ? { reference: OLD } : {}),
  objects: [
    { name: 'data/000000', backup: ID, size: obj0.length, sha256: sha(obj0), storedBytes: 1, codec: 'zstd' },
    { name: 'data/000000', backup: OLD, size: obj1.length, sha256: sha(obj1), storedBytes: 1, codec: 'zstd' },
  ],
  entries,
});

describe('planning files in pieces', () => {
  it('routes each extent to its object at its position in the file; only whole files are created by an object', () => {
    const plan = planRestore(list('incremental'), info(21), 'files.json');
    expect(plan.pieced.map((f) => f.path)).toEqual(['base/p']);
    expect(plan.references).toEqual([OLD]);
    expect(plan.objects.map((o) => o.key)).toEqual([`backups/${ID}/data/000000`, `backups/${OLD}/data/000000`]);
    const cut = (i: number) => plan.objects[i]!.files.map((f) => [f.path, f.offset, f.size, f.position]);
    expect(cut(0)).toEqual([
      ['base/w', 0, 5, undefined],
      ['base/p', 8, 4, 0],
      ['base/p', 12, 6, 10],
    ]);
    expect(cut(1)).toEqual([['base/p', 2, 6, 4]]);
    expect(createdBy(plan.objects[0]!)).toEqual(['base/w']);
    expect(createdBy(plan.objects[1]!)).toEqual([]);
    expect(plan.fileCount).toBe(2);
    expect(plan.objectBytes).toBe(obj0.length + obj1.length);
  });

  it('trust: objects of another backup only in an incremental list', () => {
    let err: unknown;
    try {
      planRestore(list('full'), info(21), 'files.json');
    } catch (e) {
      err = e;
    }
    expect(isWalvaultError(err) && err.code).toBe('BackupError');
    expect((err as Error).message).toMatch(`data/000000 belongs to backup ${OLD}, not to this one`);
  });
});

/** Runs `tar` (buffers) through an extractor under `root` (format 2). */
const extract = (root: string, parts: Buffer[], keepModes = true) => pipeline(Readable.from(parts), createExtractor(root, { keepModes }));

describe('writing files in pieces', () => {
  it('extents written by their objects in any order, then checked whole: the exact file, its mtime', async () => {
    const root = await tmp();
    const plan = planRestore(list('incremental'), info(21), 'files.json');
    // The directory pass: directories, and the file in pieces created empty.
    await extract(root, [tarHeader('base', 'dir', 0, 0o700, 0), tarHeader('base/p', 'file', 0, 0o640, 0), TAR_END]);
    // The earlier backup's object first, in two chunks.
    for (const [i, body] of [
      [1, obj1],
      [0, obj0],
    ] as const) {
      const chunks = [body.subarray(0, 3), body.subarray(3)];
      await pipeline(Readable.from(chunks), new ObjectCutter(plan.objects[i]!.files, `object ${i}`), createExtractor(root, { keepModes: true }));
    }
    await finishPiecedFiles(root, [{ path: 'base/p', size: p.length, sha256: sha(p), mtimeMs: 1_700_000_123_000 }]);
    expect(await readFile(join(root, 'base/p'))).toEqual(p);
    expect(await readFile(join(root, 'base/w'))).toEqual(w);
    const st = await stat(join(root, 'base/p'));
    expect(st.mtimeMs).toBe(1_700_000_123_000);
    expect(st.mode & 0o777).toBe(0o640);
  });

  it('trust: a file in pieces that does not add up fails the check with IntegrityError', async () => {
    const root = await tmp();
    await writeFile(join(root, 'p'), p.subarray(0, 10));
    await expect(finishPiecedFiles(root, [{ path: 'p', size: p.length, sha256: sha(p), mtimeMs: 0 }])).rejects.toMatchObject({
      code: 'IntegrityError',
      message: expect.stringMatching(/p \(a file in pieces\) holds 10 bytes with SHA-256 [0-9a-f]{64} once restored; the file list records 16 bytes/),
    });
  });

  it('trust: a position outside format 2, or an extent aimed at a symbolic link or a missing file, is refused', async () => {
    const root = await tmp();
    const member = (name: string) => [tarHeader(name, 'file', 3, 0o600, 0, { [PAX_POSITION]: '5' }), Buffer.concat([Buffer.from('abc'), Buffer.alloc(509)]), TAR_END];
    await writeFile(join(root, 'f'), 'x');
    await expect(extract(root, member('f'), false)).rejects.toThrow(/carries a position "5" it may not have/);
    await symlink('/etc/passwd', join(root, 'link'));
    await expect(extract(root, member('link'))).rejects.toThrow(/ELOOP|symbolic link|not a plain file/);
    await expect(extract(root, member('missing'))).rejects.toThrow(/ENOENT|no such file|missing/i);
    expect(await readFile(join(root, 'f'), 'utf8')).toBe('x');
  });
});
