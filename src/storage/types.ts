import type { Readable } from 'node:stream';
import type { WalvaultError } from '../common/errors.js';

/**
 * Object metadata walvault stores next to every object (S3 user metadata `x-amz-meta-walvault-*`,
 * or the header of a file:// object). Keys are lower-case without the `walvault-` prefix.
 *   sha256  hex SHA-256 of the ORIGINAL (uncompressed) bytes
 *   size    length of the original bytes, decimal
 *   codec   none | zstd | gzip
 */
export type ObjectMeta = Record<string, string>;

export interface ObjectInfo {
  key: string;
  /** Stored (compressed) size in bytes. */
  storedSize: number;
  meta: ObjectMeta;
  lastModified?: Date;
}

export interface ListedObject {
  key: string;
  storedSize: number;
  lastModified: Date;
  /** Changes whenever the object is rewritten (S3 ETag; file://: inode, mtime and size): verify's memory. */
  etag?: string;
}

export interface GetResult {
  info: ObjectInfo;
  body: Readable;
}

/**
 * A PutObject body too large to hold in memory (a WAL segment above 16 MiB, or its compressed form
 * spooled to a temp file). `open()` is called once per attempt and must yield exactly `size` bytes
 * whose MD5 is `md5` (base64); the store checks it (S3 Content-MD5, file:// before publishing), so
 * bytes that changed since they were hashed are rejected rather than stored.
 */
export interface StreamBody {
  size: number;
  md5: string;
  open(): Readable;
}

/** A whole object for one PutObject: small ones in memory, large ones re-readable from disk. */
export type PutBody = Buffer | StreamBody;

export const bodySize = (b: PutBody): number => (Buffer.isBuffer(b) ? b.length : b.size);

/** What a body of `bytes` written through `storage` occupies in the store (what backups record). */
export const storedSizeFor = (storage: Pick<Storage, 'storedSizeFor'>, bytes: number): number => storage.storedSizeFor?.(bytes) ?? bytes;

export type PutIfAbsentResult = { created: true } | { created: false; existing: ObjectInfo };

/** One key a delete could not remove, and the store's answer. */
export interface DeleteFailure {
  key: string;
  error: WalvaultError;
}

/** Per-call options; `signal` aborts the request (per-attempt timeout or the overall deadline). */
export interface CallOptions {
  signal?: AbortSignal;
}

export interface ListOptions extends CallOptions {
  /** Only keys that sort after this key (relative to the repository, like `prefix`). */
  startAfter?: string;
  /** Keys per request (S3 MaxKeys) for a caller that reads only the first few; the store may return fewer. */
  maxKeys?: number;
}

export interface UploadOptions extends CallOptions {
  /**
   * Best guess of the total size, if known. S3 allows 10,000 parts, so the driver raises the part size
   * to fit twice this estimate (a database grows during its backup; estimates undercount).
   */
  expectedSize?: number;
  /** Called with the number of stored bytes sent so far. */
  onProgress?: (storedBytes: number) => void;
}

/**
 * The one storage interface both drivers implement. Keys are relative to the repository prefix and
 * use `/` separators. Every method throws a WalvaultError (src/common/errors.ts) on failure:
 * `unavailableError` (retryable) for network/5xx/throttling, `accessDeniedError` for 403 and bad
 * credentials, `missingBucketError` when the bucket/directory does not exist. A missing key is never
 * an exception: it is `null`, and only on an authoritative answer (S3's NoSuchKey, ENOENT); any other
 * 404 is an `unavailableError`. Retries are NOT done here: callers wrap
 * calls with src/common/retry.ts so one policy governs every storage call.
 */
export interface Storage {
  /** Human-readable location, secrets removed, e.g. `s3://bucket/prefix` or `file:///srv/wal`. */
  readonly url: string;

  /** The cipher new objects are sealed with (src/storage/encrypting.ts), undefined when not encrypting. */
  readonly encryption?: string | undefined;

  /** What a body of `bytes` occupies in the store (larger when encrypting); absent = `bytes`. */
  storedSizeFor?(bytes: number): number;

  /** What decides which objects this storage reaches (src/storage/repo-key.ts repoCacheKey): keys the spool. */
  readonly cacheKey: string;

  /**
   * Create `key` only if it does not exist. On an existing key returns its info (metadata) and
   * leaves it untouched. S3: one PutObject with `If-None-Match: *` and Content-MD5; stores that answer
   * 501 to conditional writes or ignore them (found by a probe, remembered in the spool) get HEAD then PUT.
   */
  putIfAbsent(key: string, body: PutBody, meta: ObjectMeta, opts?: CallOptions): Promise<PutIfAbsentResult>;

  /**
   * Unconditional write. No command writes through it (every object walvault writes is create-only:
   * putIfAbsent, archive/small-objects.ts putOnce); it stays for the drivers' HEAD-then-PUT fallback
   * and for tests that plant objects.
   */
  put(key: string, body: PutBody, meta: ObjectMeta, opts?: CallOptions): Promise<void>;

  /** Streamed upload of unknown length with bounded memory (S3 multipart); invisible until complete. */
  upload(key: string, body: Readable, meta: ObjectMeta, opts?: UploadOptions): Promise<{ storedSize: number }>;

  head(key: string, opts?: CallOptions): Promise<ObjectInfo | null>;

  get(key: string, opts?: CallOptions): Promise<GetResult | null>;

  /**
   * All keys under `prefix` (a key prefix, not necessarily ending in `/`), in lexical order; with
   * `startAfter`, only those after it (S3 `StartAfter`: the store skips the rest, no paging through it).
   */
  list(prefix: string, opts?: ListOptions): AsyncIterable<ListedObject>;

  /** Deletes keys; missing keys are not an error. */
  delete(keys: string[], opts?: CallOptions): Promise<void>;

  /**
   * Deletes keys and names each one the store refused (missing keys are not failures); throws only
   * when a request as a whole fails (network, 5xx, credentials). S3: DeleteObjects in batches with
   * Content-MD5, one DeleteObject per key on a store that answers NotImplemented to DeleteObjects.
   */
  deleteEach(keys: string[], opts?: CallOptions): Promise<DeleteFailure[]>;

  /** S3 Object Lock is enabled on the bucket (asked once per Storage; always false for file://). */
  objectLockEnabled(opts?: CallOptions): Promise<boolean>;

  /** Why `key` cannot be deleted now (a retain-until date in the future, a legal hold), or null. */
  objectLock(key: string, opts?: CallOptions): Promise<string | null>;

  /** Aborts multipart uploads (or removes temp files) under `prefix` started before `olderThan`. */
  abortStaleUploads(prefix: string, olderThan: Date, opts?: CallOptions): Promise<number>;

  /** Releases sockets so the process can exit promptly. */
  close(): void;
}
