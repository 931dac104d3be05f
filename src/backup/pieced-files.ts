import { constants } from 'node:fs';
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
      const hash = createHash('sha256');
      let size = 0;
      for (;;) {
        const { bytesRead } = await fh.read(buf, 0, buf.length, size);
        if (bytesRead === 0) break;
        hash.update(buf.subarray(0, bytesRead));
        size += bytesRead;
      }
      const digest = hash.digest('hex');
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
