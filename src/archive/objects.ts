import { CODECS, isDecompressionError, parseCodec, type Codec } from '../codec/codec.js';
import { corruptObjectError, fromFsError, integrityError, isWalvaultError, unavailableError } from '../common/errors.js';
import { sha256Hex } from '../fs/hash.js';
import type { ObjectInfo, ObjectMeta } from '../storage/types.js';

// What walvault records about every object (SHA-256, size, codec), checked by every reader
// (small-objects.ts, fetch.ts): nothing reaches its destination unless it matches what the writer recorded.
export interface StoredMeta {
  sha256: string;
  size: number;
  codec: Codec;
}

export function objectMeta(m: StoredMeta): ObjectMeta & { sha256: string } {
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

/** The metadata of an uncompressed bookkeeping object (manifest, state, backup.json). */
export function smallObjectMeta(body: Buffer): ObjectMeta & { sha256: string } {
  return objectMeta({ sha256: sha256Hex(body), size: body.length, codec: 'none' });
}

/**
 * Errors while streaming a body: decoder failures are corruption, local errno codes are the disk's
 * (when the body goes to a file `target`), anything else is transport trouble.
 */
export function classifyDownloadError(e: unknown, where: string, target?: string): unknown {
  if (isWalvaultError(e)) return e;
  const err = e as NodeJS.ErrnoException;
  if (isDecompressionError(err)) {
    return integrityError(`${where} cannot be decompressed (${err.code}): corrupt or truncated`, { cause: e });
  }
  if (target !== undefined && err?.syscall && ['ENOSPC', 'EDQUOT', 'EACCES', 'EROFS', 'EISDIR', 'ENOENT', 'ENOTDIR', 'EPERM', 'EIO'].includes(err.code ?? '')) {
    return fromFsError(e, target, 'write');
  }
  // Anything else mid-body (reset, abort, premature close) is transport trouble: retry.
  return unavailableError(`reading ${where} failed: ${err?.code ?? err?.message ?? String(e)}`, {
    cause: e,
    retryable: true,
  });
}
