import type { Readable } from 'node:stream';
import { decompressStream } from '../codec/codec.js';
import { conflictError, corruptObjectError, integrityError } from '../common/errors.js';
import { Deadline, withRetry, type RetryPolicy } from '../common/retry.js';
import { sha256Hex, sizeExceededError } from '../fs/hash.js';
import type { CallOptions, ObjectInfo, ObjectMeta, PutBody, Storage } from '../storage/types.js';
import { classifyDownloadError, parseStoredMeta, smallObjectMeta, type StoredMeta } from './objects.js';

// The one reader and writer of the repository's small objects: the manifest, the per-timeline
// high-water marks, gap markers, backup.json and timeline history files. They are read whole into
// memory, verified like every download, and written with their own small retry budget when they are
// bookkeeping after the WAL itself is safe.

/** Bookkeeping objects (manifest, state, backup.json, history) are kilobytes; nothing read whole is larger. */
export const SMALL_OBJECT_LIMIT = 16 * 1024 * 1024;

/**
 * Reads a small object's body (or its decompressed stream) into memory, stopping at `limit` bytes:
 * pass the size its metadata declares when known. Past the limit the stream is destroyed and the
 * result is a non-retryable IntegrityError.
 */
export async function readAll(stream: Readable, limit = SMALL_OBJECT_LIMIT, what = 'object'): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const c of stream) {
    total += (c as Buffer).length;
    if (total > limit) {
      stream.destroy();
      throw sizeExceededError(what, limit);
    }
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks);
}

/**
 * GET a small object (a state object, a timeline history file, backup.json) into memory, verified like
 * every download: metadata present, declared size at most `maxSize`, output never past the declared
 * size, SHA-256 and size equal to the metadata. Null on an authoritative "not found".
 */
export async function readVerifiedSmall(
  storage: Storage,
  key: string,
  ctx: { policy: RetryPolicy; deadline: Deadline; what: string; maxSize: number },
): Promise<Buffer | null> {
  return withRetry(ctx.what, ctx.policy, ctx.deadline, (signal) => getVerifiedSmall(storage, key, ctx.maxSize, signal));
}

/** One attempt of readVerifiedSmall, for callers that run their own retry loop. */
export async function getVerifiedSmall(storage: Storage, key: string, maxSize: number, signal?: AbortSignal): Promise<Buffer | null> {
  const got = await storage.get(key, signal ? { signal } : {});
  return got ? verifiedBody(got.info, got.body, `${storage.url}/${key}`, maxSize) : null;
}

/** The verified, decompressed bytes of a small object whose GET has answered. */
export async function verifiedBody(info: ObjectInfo, body: Readable, where: string, maxSize: number): Promise<Buffer> {
  let meta: StoredMeta;
  try {
    meta = parseStoredMeta(info, where);
    if (meta.size > maxSize) {
      throw corruptObjectError(`${where} declares ${meta.size} bytes, more than such an object can hold (${maxSize})`);
    }
  } catch (e) {
    body.destroy();
    throw e;
  }
  const decompress = decompressStream(meta.codec);
  // (pipe() does not forward a source error: without this a reset body would hang the loop)
  if (decompress) body.on('error', (e) => decompress.destroy(e));
  const source: Readable = decompress ? body.pipe(decompress) : body;
  let buf: Buffer;
  try {
    buf = await readAll(source, meta.size, where);
  } catch (e) {
    body.destroy();
    decompress?.destroy();
    throw classifyDownloadError(e, where);
  }
  const actual = sha256Hex(buf);
  if (buf.length !== meta.size || actual !== meta.sha256) {
    throw integrityError(
      `${where} failed verification: got ${buf.length} bytes with SHA-256 ${actual}, expected ${meta.size} bytes with SHA-256 ${meta.sha256}`,
    );
  }
  return buf;
}

/** Longest a push spends on bookkeeping writes (high-water mark, gap markers) after its WAL is safe. */
export const BOOKKEEPING_BUDGET_MS = 5_000;

/**
 * Retry policy and deadline for bookkeeping writes after a push: a small budget of their own, so that
 * a store that keeps failing them does not slow every push down to the full retry deadline when the
 * WAL itself is already safe. The caller disposes the deadline.
 */
export function bookkeepingBudget(ctx: { policy: RetryPolicy; deadline: Deadline }): { policy: RetryPolicy; deadline: Deadline } {
  const deadline = new Deadline(Math.max(1, Math.min(BOOKKEEPING_BUDGET_MS, ctx.deadline.remainingMs())));
  return { policy: { ...ctx.policy, retries: Math.min(ctx.policy.retries, 2) }, deadline };
}

/**
 * Every object walvault writes is written once (on a versioned bucket, Object Lock's, an overwrite
 * would add a version and the key would show the newer one): created if absent; an object already
 * there with the same content (a retry whose first attempt landed, a re-run) is success; other
 * content is ArchiveConflict, and the object stays as it is. `anyContent`: the key alone says what the object means (a high-water
 * mark names its last segment), so whatever is there counts.
 */
export async function putOnce(
  storage: Storage,
  key: string,
  body: PutBody,
  meta: ObjectMeta & { sha256: string },
  opts?: CallOptions & { anyContent?: boolean },
): Promise<'created' | 'existed'> {
  const r = await storage.putIfAbsent(key, body, meta, opts?.signal ? { signal: opts.signal } : {});
  if (r.created) return 'created';
  const theirs = r.existing.meta;
  if (opts?.anyContent || (theirs['sha256'] === meta.sha256 && theirs['size'] === meta['size'])) return 'existed';
  throw conflictError(
    `${storage.url}/${key} already exists with other content (SHA-256 ${theirs['sha256'] ?? 'none'}, ${theirs['size'] ?? '?'} bytes; ` +
      `this write ${meta.sha256}, ${meta['size'] ?? '?'} bytes); refusing to overwrite it`,
  );
}

/** Writes a bookkeeping object (high-water mark, gap marker) once, within a budget from bookkeepingBudget(). */
export async function writeBookkeeping(
  storage: Storage,
  key: string,
  body: Buffer,
  budget: { policy: RetryPolicy; deadline: Deadline },
  opts: { anyContent?: boolean } = {},
): Promise<void> {
  await withRetry(`write ${key}`, budget.policy, budget.deadline, (signal) => putOnce(storage, key, body, smallObjectMeta(body), { ...opts, signal }));
}
