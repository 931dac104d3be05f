import { decompressStream } from '../codec/codec.js';
import { integrityError } from '../common/errors.js';
import { withRetry, type Deadline, type RetryPolicy } from '../common/retry.js';
import { writeFileAtomic } from '../fs/atomic.js';
import { HashingStream } from '../fs/hash.js';
import type { Storage } from '../storage/types.js';
import { classifyDownloadError, parseStoredMeta, type StoredMeta } from './objects.js';

// Fetching one archived file verified: the download wal-fetch, the prefetch worker and backup-fetch use.

/**
 * GET `key`, decompress, hash, write to a temp file beside `target`, verify, fsync, rename, fsync
 * the directory, all inside the retry policy. Returns null on an authoritative "not found".
 */
export async function downloadVerified(
  storage: Storage,
  key: string,
  target: string,
  ctx: { policy: RetryPolicy; deadline: Deadline; what: string; fileMode?: number },
): Promise<StoredMeta | null> {
  return withRetry(ctx.what, ctx.policy, ctx.deadline, async (signal) => {
    const got = await storage.get(key, { signal });
    if (!got) return null;
    let meta: StoredMeta;
    try {
      meta = parseStoredMeta(got.info, `${storage.url}/${key}`);
    } catch (e) {
      got.body.destroy();
      throw e;
    }
    const hashing = new HashingStream({ limit: meta.size, what: `${storage.url}/${key}` });
    const decompress = decompressStream(meta.codec);
    const stages: Array<NodeJS.ReadableStream> = decompress ? [got.body, decompress, hashing] : [got.body, hashing];
    const verify = () => {
      const actual = hashing.digest();
      if (hashing.bytes !== meta.size || actual !== meta.sha256) {
        throw integrityError(
          `${storage.url}/${key} failed verification: got ${hashing.bytes} bytes with SHA-256 ${actual}, ` +
            `expected ${meta.size} bytes with SHA-256 ${meta.sha256}`,
        );
      }
    };
    try {
      await writeFileAtomic(target, stages, { mode: 'replace', verify, fileMode: ctx.fileMode ?? 0o600, signal });
    } catch (e) {
      throw classifyDownloadError(e, `${storage.url}/${key}`, target);
    }
    return meta;
  });
}
