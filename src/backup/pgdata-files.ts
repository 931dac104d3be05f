import { constants } from 'node:fs';
import { open, readlink, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { backupError, fromFsError } from '../common/errors.js';
import { writeAll } from '../fs/atomic.js';
import { sha256Hex } from '../fs/hash.js';

// The few files backup-fetch writes or reads in the restored data directory after extraction
// (postgresql.auto.conf, recovery.signal / standby.signal, backup_manifest). They sit in a directory
// its owner can change, so they are opened only by a single name component under it, never through
// a link (O_NOFOLLOW, O_EXCL), and fsynced with the directory. When root restores for another user
// this runs in the restore worker as that user (restore-worker.ts), like the extraction.

export interface PgdataWrite {
  /** A plain name directly under the data directory. */
  name: string;
  /** Base64, so the request survives JSON unchanged. */
  data: string;
  /** Append to an existing file (or create it); else create it, failing if it exists. */
  append?: boolean;
  /** Replace the content of an existing plain file (tablespace_map with new locations). */
  replace?: boolean;
  /** Create a symbolic link to this absolute path instead of a file (pg_tblspc/<oid>), failing if the name exists. */
  link?: string;
}

const { O_WRONLY, O_CREAT, O_EXCL, O_APPEND, O_NOFOLLOW, O_RDONLY, O_DIRECTORY } = constants;

function member(root: string, name: string): string {
  if (!/^[A-Za-z0-9_.-]+$/.test(name) || name === '.' || name === '..') throw backupError(`${JSON.stringify(name)} is not a file name in the data directory`);
  return join(root, name);
}

export async function applyWrites(root: string, writes: PgdataWrite[]): Promise<void> {
  for (const w of writes) {
    const path = member(root, w.name);
    if (w.link !== undefined) {
      if (!w.link.startsWith('/')) throw backupError(`${path}: a link target must be absolute`);
      await symlink(w.link, path).catch(async (e: NodeJS.ErrnoException) => {
        // Made by an interrupted run of the same restore: the same link is fine.
        if (e.code === 'EEXIST' && (await readlink(path).catch(() => undefined)) === w.link) return;
        throw fromFsError(e, path, 'write');
      });
      continue;
    }
    let fh;
    try {
      fh = await open(path, O_WRONLY | O_NOFOLLOW | (w.replace ? 0 : O_CREAT | (w.append ? O_APPEND : O_EXCL)), 0o600);
    } catch (e) {
      throw fromFsError(e, path, 'write');
    }
    try {
      const st = await fh.stat();
      // A hard link would make the append land in another file too.
      if (!st.isFile() || st.nlink !== 1) throw backupError(`${path} is not a plain file with one name; refusing to write to it`);
      // Truncated only once it is known to be that one file (O_TRUNC would act before the check).
      if (w.replace) await fh.truncate(0);
      await writeAll(fh, Buffer.from(w.data, 'base64'));
      await fh.sync();
    } finally {
      await fh.close();
    }
  }
  const dir = await open(root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

/** SHA-256 of a plain file directly under the data directory, or null when there is none. */
export async function fileSha256(root: string, name: string): Promise<string | null> {
  const path = member(root, name);
  let fh;
  try {
    fh = await open(path, O_RDONLY | O_NOFOLLOW);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw fromFsError(e, path, 'read');
  }
  try {
    if (!(await fh.stat()).isFile()) throw backupError(`${path} is not a regular file`);
    return sha256Hex(await fh.readFile());
  } finally {
    await fh.close();
  }
}
