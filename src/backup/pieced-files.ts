import { constants } from 'node:fs';
import { lstat, rename, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { fsyncDir } from '../fs/atomic.js';
import { createHash } from 'node:crypto';
import { backupError, fromFsError, integrityError, isWalvaultError } from '../common/errors.js';
import { openPlainFile, safeDestination } from './extract.js';

// The last step for the files of an incremental backup stored in pieces (file-plan.ts): their
// extents were written at their positions by the jobs of several objects, so each file is read back
// whole and checked against the list (size and SHA-256), then given its modification time and
// fsynced. Run in the process that owns the data directory (the restore worker's "finish" op when
// root restores for another user): paths under the root only, no link followed.

export interface PiecedCheck {
  path: string;
  size: number;
  sha256: string;
  mtimeMs: number;
}

/** At once: a few files are read while others hash. */
const PARALLEL = 4;
const CHUNK = 1024 * 1024;

export interface FinishRequest {
  files: PiecedCheck[];
  /** [restored as, final name] (file-plan.ts HELD_BACK), renamed once the files are checked. */
  renames: Array<[string, string]>;
}

/** The files in pieces checked, then the held-back files renamed into place (done already when resuming: fine). */
export async function finishRestore(root: string, req: FinishRequest): Promise<void> {
  await finishPiecedFiles(root, req.files);
  for (const [from, to] of req.renames) {
    const src = safeDestination(root, from);
    const dest = safeDestination(root, to);
    const st = await lstat(src).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return null;
      throw fromFsError(e, src, 'write');
    });
    if (!st) {
      // A resumed restore that was killed after the rename.
      if ((await lstat(dest).catch(() => null))?.isFile()) continue;
      throw backupError(`${src} is missing: the restore lost it; empty the directory and restore again`);
    }
    if (!st.isFile()) throw backupError(`${src} is not a plain file; refusing to move it into place`);
    await rename(src, dest).catch((e: unknown) => {
      throw fromFsError(e, dest, 'write');
    });
    await fsyncDir(dirname(dest));
  }
}

export async function finishPiecedFiles(root: string, files: PiecedCheck[]): Promise<void> {
  let next = 0;
  const work = async (): Promise<void> => {
    const buf = Buffer.allocUnsafe(CHUNK);
    for (let i = next++; i < files.length; i = next++) await finishOne(root, files[i]!, buf);
  };
  await Promise.all(Array.from({ length: Math.min(PARALLEL, files.length) }, work));
}

async function finishOne(root: string, f: PiecedCheck, buf: Buffer): Promise<void> {
  const dest = safeDestination(root, f.path);
  try {
    const fh = await openPlainFile(dest, constants.O_RDONLY);
    try {
      const { size, digest } = await readSha256(fh, buf);
      if (size !== f.size || digest !== f.sha256) {
        throw integrityError(`${f.path} (a file in pieces) holds ${size} bytes with SHA-256 ${digest} once restored; the file list records ${f.size} bytes with SHA-256 ${f.sha256}`, {
          retryable: false,
        });
      }
      const mtime = f.mtimeMs / 1000;
      await fh.utimes(mtime, mtime);
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch (e) {
    if (isWalvaultError(e)) throw e;
    if ((e as NodeJS.ErrnoException).code === 'ELOOP') throw backupError(`${dest} became a symbolic link during the restore; refusing to read through it`);
    throw fromFsError(e, dest, 'write');
  }
}

/** Size and SHA-256 of the whole file behind `fh`, read with `buf`. */
export async function readSha256(fh: FileHandle, buf: Buffer): Promise<{ size: number; digest: string }> {
  const hash = createHash('sha256');
  let size = 0;
  for (;;) {
    const { bytesRead } = await fh.read(buf, 0, buf.length, size);
    if (bytesRead === 0) break;
    hash.update(buf.subarray(0, bytesRead));
    size += bytesRead;
  }
  return { size, digest: hash.digest('hex') };
}
