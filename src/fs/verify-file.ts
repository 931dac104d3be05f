import { createHash } from 'node:crypto';
import { closeSync, fstatSync, readSync, type Stats } from 'node:fs';
import { identityOf, sameIdentity, type FileIdentity } from './file-identity.js';
import { NotRegularFileError, openRegularFileSync } from './open-regular.js';

// Re-hashing a local file against a recorded size and SHA-256: how both fast paths (a file uploaded
// ahead, a file prefetched) earn their exit 0. Node built-ins only: it runs before anything heavy loads.

export interface VerifyResult {
  ok: boolean;
  /** Why the file was not trusted (for the log). */
  reason?: string;
  /** What earned an ok: the file's recorded identity (nothing read) or its re-computed SHA-256. */
  by?: 'identity' | 'sha256';
}

/** Chunk size for hashing: big enough for few syscalls, small enough to stay in the CPU cache. */
const CHUNK = 1024 * 1024;

/**
 * Re-reads `path` and checks its size and SHA-256. Synchronous on purpose: on the fast paths it is
 * the whole job, and a sync read loop into one reused buffer is the cheapest way to hash a 16 MiB
 * segment in a process that has nothing else to do. With `identity` (recorded when those bytes were
 * hashed, src/fs/file-identity.ts), a descriptor with exactly that identity is accepted unread;
 * any other identity is not an error, only a reason to hash.
 */
export function verifyFileSync(path: string, size: number, sha256: string, identity?: FileIdentity): VerifyResult {
  let fd: number;
  let st: Stats;
  try {
    ({ fd, st } = openRegularFileSync(path));
  } catch (e) {
    if (e instanceof NotRegularFileError) return { ok: false, reason: e.message };
    return { ok: false, reason: `cannot open ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}` };
  }
  try {
    if (st.size !== size) return { ok: false, reason: `size ${st.size} differs from the recorded ${size}` };
    if (identity && sameIdentity(identityOf(fstatSync(fd, { bigint: true })), identity)) return { ok: true, by: 'identity' };
    const hash = createHash('sha256');
    const buf = Buffer.allocUnsafe(Math.min(CHUNK, Math.max(1, size)));
    let total = 0;
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      hash.update(n === buf.length ? buf : buf.subarray(0, n));
      total += n;
      if (total > size) break;
    }
    if (total !== size) return { ok: false, reason: `read ${total} bytes, the record says ${size}` };
    const actual = hash.digest('hex');
    if (actual !== sha256) return { ok: false, reason: `SHA-256 ${actual} differs from the recorded ${sha256}` };
    return { ok: true, by: 'sha256' };
  } catch (e) {
    return { ok: false, reason: `cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}` };
  } finally {
    closeSync(fd);
  }
}
