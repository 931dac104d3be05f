import { createHash } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, openSync, readSync, statSync, writeSync, type BigIntStats } from 'node:fs';
import { link, rename, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { tempPathFor } from '../fs/temp-names.js';
import { fromFsError } from '../common/errors.js';
import { fsyncDirSync } from '../fs/sync-io.js';
import { verifyFileSync } from '../fs/verify-file.js';
import { readRecord, type PrefetchRecord } from './spool-dir.js';
import { identityOf, sameIdentity } from '../fs/file-identity.js';

// Handing a prefetched file to PostgreSQL: linked or copied beside its target, verified, renamed.

/** `by`: how the bytes were verified: re-hashed now, or unchanged since the worker verified them. */
export type ServeResult = { served: true; size: number; sha256: string; by: 'sha256' | 'identity' } | { served: false; reason?: string };

/**
 * Hands the prefetched `name` to `target` if it is in the spool and verifies: it is hard-linked to a
 * temp file beside `target` (one inode, no copy), verified, renamed to `target`, and `target`'s
 * directory is fsynced (the content was fsynced when it was downloaded). Verified means: the file
 * still has the identity (device, inode, size, mtime, ctime) the worker recorded right after it
 * verified, fsynced and renamed it, and the link made is that same inode; otherwise (no identity
 * recorded, another identity, `rehash`) re-hashed against the record. Across filesystems it is
 * copied to the temp file instead, hashed on the way and fsynced. A file that fails verification is
 * deleted and `{ served: false, reason }` returned.
 */
export async function serveFromSpool(dir: string, name: string, target: string, opts: { rehash?: boolean } = {}): Promise<ServeResult> {
  const file = join(dir, name);
  const rec = readRecord(dir, name);
  if (!rec || !existsSync(file)) return { served: false };
  const temp = tempPathFor(target);
  try {
    let before: BigIntStats | undefined;
    if (rec.identity && !opts.rehash) {
      try {
        before = statSync(file, { bigint: true });
      } catch {
        return { served: false }; // dropped meanwhile
      }
      if (!sameIdentity(identityOf(before), rec.identity)) before = undefined;
    }
    let by: 'sha256' | 'identity' = 'sha256';
    try {
      await link(file, temp);
      // The link moved ctime; the inode, size and mtime must still be the ones checked above.
      if (before && sameInode(before, statSync(temp, { bigint: true }))) by = 'identity';
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return { served: false }; // dropped meanwhile
      if (code !== 'EXDEV' && code !== 'EPERM' && code !== 'EMLINK') throw e;
      const copied = copyVerified(file, temp, rec);
      if (copied) return dropBad(dir, name, copied);
    }
    if (by === 'sha256') {
      const v = verifyFileSync(temp, rec.size, rec.sha256);
      if (!v.ok) return dropBad(dir, name, v.reason ?? 'verification failed');
    }
    await rename(temp, target);
    fsyncDirSync(dirname(target));
    return { served: true, size: rec.size, sha256: rec.sha256, by };
  } finally {
    await unlink(temp).catch(() => undefined);
  }
}

function sameInode(a: BigIntStats, b: BigIntStats): boolean {
  return a.dev === b.dev && a.ino === b.ino && a.size === b.size && a.mtimeNs === b.mtimeNs;
}

async function dropBad(dir: string, name: string, reason: string): Promise<ServeResult> {
  await unlink(join(dir, name)).catch(() => undefined);
  await unlink(join(dir, `${name}.json`)).catch(() => undefined);
  return { served: false, reason };
}

/**
 * Copies `source` to `temp` (created new), hashing on the way; fsyncs it. Returns a reason on
 * mismatch or when the spool's copy cannot be read (then the repository is asked); a failure to
 * write beside %p (a full disk) is thrown as the LocalWriteError it is, as for a download.
 */
export function copyVerified(source: string, temp: string, rec: PrefetchRecord): string | undefined {
  const hash = createHash('sha256');
  const buf = Buffer.allocUnsafe(1024 * 1024);
  let total = 0;
  let from: number;
  try {
    from = openSync(source, 'r');
  } catch (e) {
    return `cannot read it: ${(e as NodeJS.ErrnoException).code ?? String(e)}`;
  }
  try {
    let to: number;
    try {
      to = openSync(temp, 'wx', 0o600);
    } catch (e) {
      throw fromFsError(e, temp, 'write');
    }
    try {
      for (;;) {
        let n: number;
        try {
          n = readSync(from, buf, 0, buf.length, null);
        } catch (e) {
          return `cannot read it: ${(e as NodeJS.ErrnoException).code ?? String(e)}`;
        }
        if (n === 0) break;
        hash.update(buf.subarray(0, n));
        try {
          for (let off = 0; off < n; ) off += writeSync(to, buf, off, n - off);
        } catch (e) {
          throw fromFsError(e, temp, 'write');
        }
        total += n;
      }
      try {
        fsyncSync(to);
      } catch (e) {
        throw fromFsError(e, temp, 'write');
      }
    } finally {
      closeSync(to);
    }
  } finally {
    closeSync(from);
  }
  const actual = hash.digest('hex');
  if (total !== rec.size || actual !== rec.sha256) return `SHA-256 ${actual} (${total} bytes) differs from the recorded ${rec.sha256} (${rec.size} bytes)`;
  return undefined;
}
