import type { Readable } from 'node:stream';
import { CODECS, parseCodec, decompressStream, isDecompressionError, type Codec } from '../codec/codec.js';
import { corruptObjectError, fromFsError, integrityError, isWalvaultError, unavailableError } from '../common/errors.js';
import { writeFileAtomic } from '../fs/atomic.js';
import { HashingStream, sha256Hex, sizeExceededError } from '../fs/hash.js';
import { withRetry, type Deadline, type RetryPolicy } from '../common/retry.js';
import type { ObjectInfo, ObjectMeta, Storage } from '../storage/types.js';

// What walvault records about every object, and the verified download that every reader uses:
// nothing reaches its destination unless its SHA-256 and size match what the writer recorded.
export interface StoredMeta {
  sha256: string;
  size: number;
  codec: Codec;
}

export function objectMeta(m: StoredMeta): ObjectMeta {
  return { sha256: m.sha256, size: String(m.size), codec: m.codec };
}

export function parseStoredMeta(info: ObjectInfo, where: string): StoredMeta {
  const { sha256, size, codec } = info.meta;
  const n = Number(size);
  // An unknown codec is the object's fault, not the configuration's: CorruptObject like the rest.
  const known = (CODECS as readonly string[]).includes(codec ?? '');
  if (!sha256 || !/^[0-9a-f]{64}$/.test(sha256) || !/^\d{1,16}$/.test(size ?? '') || !Number.isSafeInteger(n) || !codec || !known) {
    throw corruptObjectError(
      `${where} has no valid walvault metadata (sha256/size/codec); it was not written by walvault or was altered`,
    );
  }
  return { sha256, size: n, codec: parseCodec(codec, `${where} codec`) };
}

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
    throw classifyDownloadError(e, where, where);
  }
  const actual = sha256Hex(buf);
  if (buf.length !== meta.size || actual !== meta.sha256) {
    throw integrityError(
      `${where} failed verification: got ${buf.length} bytes with SHA-256 ${actual}, expected ${meta.size} bytes with SHA-256 ${meta.sha256}`,
    );
  }
  return buf;
}

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

/** Errors while streaming a body: decoder failures are corruption, local errno codes are the disk's. */
function classifyDownloadError(e: unknown, where: string, target: string): unknown {
  if (isWalvaultError(e)) return e;
  const err = e as NodeJS.ErrnoException;
  if (isDecompressionError(err)) {
    return integrityError(`${where} cannot be decompressed (${err.code}): corrupt or truncated`, { cause: e });
  }
  if (err?.syscall && ['ENOSPC', 'EDQUOT', 'EACCES', 'EROFS', 'EISDIR', 'ENOENT', 'ENOTDIR', 'EPERM', 'EIO'].includes(err.code ?? '')) {
    return fromFsError(e, target, 'write');
  }
  // Anything else mid-body (reset, abort, premature close) is transport trouble: retry.
  return unavailableError(`reading ${where} failed: ${err?.code ?? err?.message ?? String(e)}`, {
    cause: e,
    retryable: true,
  });
}
