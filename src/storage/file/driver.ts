import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readdir, stat, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { Readable } from 'node:stream';
import {
  accessDeniedError,
  corruptObjectError,
  integrityError,
  missingBucketError,
  repositoryFullError,
  storageError,
  unavailableError,
  WalvaultError,
  isWalvaultError,
} from '../../common/errors.js';
import { ensureDirDurable, writeFileAtomic } from '../../fs/atomic.js';
import { NotRegularFileError, openRegularFile } from '../../fs/open-regular.js';
import { TEMP_MARK } from '../../fs/temp-names.js';
import type { CallOptions, DeleteFailure, GetResult, ListedObject, ListOptions, ObjectInfo, ObjectMeta, PutBody, PutIfAbsentResult, Storage, UploadOptions } from '../types.js';

// A file:// repository (local disk or NAS mount). Each object is one file: a small header carrying the
// metadata, then the stored bytes. One file means a single atomic link()/rename() publishes data and
// metadata together; link() refuses to replace an existing object, like If-None-Match: * on S3.
const MAGIC = Buffer.from('WALVAULT\x01');
const MAX_HEADER = 64 * 1024;

export function encodeHeader(meta: ObjectMeta): Buffer {
  const json = Buffer.from(JSON.stringify(meta));
  const len = Buffer.alloc(4);
  len.writeUInt32BE(json.length);
  return Buffer.concat([MAGIC, len, json]);
}

export function createFileStorage(root: string): Storage {
  return new FileStorage(root);
}

class FileStorage implements Storage {
  readonly url: string;
  readonly cacheKey: string;
  private rootChecked = false;

  constructor(private readonly root: string) {
    this.url = `file://${root}`;
    this.cacheKey = this.url;
  }

  private path(key: string): string {
    return join(this.root, ...key.split('/'));
  }

  /** The repository directory must exist: creating a missing NAS mount point would archive to local disk. */
  private async checkRoot(): Promise<void> {
    if (this.rootChecked) return;
    try {
      const s = await stat(this.root);
      if (!s.isDirectory()) throw missingBucketError(`repository ${this.url} is not a directory`);
    } catch (e) {
      if (isWalvaultError(e)) throw e;
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        throw missingBucketError(`repository directory ${this.root} does not exist (create or mount it first)`);
      }
      throw mapFsError(e, 'open repository', this.root);
    }
    this.rootChecked = true;
  }

  async putIfAbsent(key: string, body: PutBody, meta: ObjectMeta, opts?: CallOptions): Promise<PutIfAbsentResult> {
    await this.checkRoot();
    const target = this.path(key);
    const created = await this.writeBody(key, target, body, meta, 'create', opts);
    if (created) return { created: true };
    const existing = await this.head(key);
    if (!existing) return this.putIfAbsent(key, body, meta, opts);
    return { created: false, existing };
  }

  async put(key: string, body: PutBody, meta: ObjectMeta, opts?: CallOptions): Promise<void> {
    await this.checkRoot();
    await this.writeBody(key, this.path(key), body, meta, 'replace', opts);
  }

  /** A streamed body is checked against its size and MD5 before it becomes visible, like S3's Content-MD5. */
  private async writeBody(key: string, target: string, body: PutBody, meta: ObjectMeta, mode: 'create' | 'replace', opts?: CallOptions) {
    if (Buffer.isBuffer(body)) return this.write(key, target, Buffer.concat([encodeHeader(meta), body]), mode, opts);
    const md5 = createHash('md5');
    let size = 0;
    const source = body.open();
    const data = Readable.from(
      (async function* () {
        yield encodeHeader(meta);
        for await (const chunk of source) {
          md5.update(chunk as Buffer);
          size += (chunk as Buffer).length;
          yield chunk as Buffer;
        }
      })(),
    );
    const verify = () => {
      const actual = md5.digest('base64');
      if (size !== body.size || actual !== body.md5) {
        throw integrityError(`${key}: the body changed while being stored (${size} bytes with MD5 ${actual}, prepared ${body.size} bytes with MD5 ${body.md5})`);
      }
    };
    try {
      return await this.write(key, target, data, mode, opts, verify);
    } finally {
      source.destroy();
    }
  }

  async upload(key: string, body: Readable, meta: ObjectMeta, opts?: UploadOptions): Promise<{ storedSize: number }> {
    await this.checkRoot();
    let storedSize = 0;
    const header = encodeHeader(meta);
    const counted = Readable.from(
      (async function* () {
        yield header;
        for await (const chunk of body) {
          storedSize += (chunk as Buffer).length;
          opts?.onProgress?.(storedSize);
          yield chunk as Buffer;
        }
      })(),
    );
    await this.write(key, this.path(key), counted, 'replace', opts);
    return { storedSize };
  }

  private async write(key: string, target: string, data: Buffer | Readable, mode: 'create' | 'replace', opts?: CallOptions, verify?: () => void) {
    try {
      await ensureDirDurable(dirname(target), 0o750);
      return await writeFileAtomic(target, data, { mode, fileMode: 0o640, ...(opts?.signal ? { signal: opts.signal } : {}), ...(verify ? { verify } : {}) });
    } catch (e) {
      throw mapFsError(e, 'write', key);
    }
  }

  async head(key: string, _opts?: CallOptions): Promise<ObjectInfo | null> {
    const got = await this.openObject(key);
    if (!got) return null;
    await got.fh.close();
    return got.info;
  }

  async get(key: string, opts?: CallOptions): Promise<GetResult | null> {
    const got = await this.openObject(key);
    if (!got) return null;
    // The descriptor already checked: a path opened again could be something else by now.
    const body = createReadStream('', { fd: got.fh, start: got.headerSize, ...(opts?.signal ? { signal: opts.signal } : {}) });
    return { info: got.info, body };
  }

  /**
   * Opens an object (never blocking, never through a symlink: a FIFO or device put at a key would
   * otherwise hang wal-fetch forever) and reads its header. The caller closes `fh`.
   */
  private async openObject(key: string): Promise<{ fh: FileHandle; info: ObjectInfo; headerSize: number } | null> {
    await this.checkRoot();
    const file = this.path(key);
    const corrupt = (why: string) => corruptObjectError(`object ${key} in ${this.url} ${why}`);
    let fh: FileHandle;
    let size: number;
    let mtime: Date;
    try {
      ({ fh, st: { size, mtime } } = await openRegularFile(file, { noFollow: true }));
    } catch (e) {
      if (e instanceof NotRegularFileError) throw corrupt(`is ${e.kind}, not a file walvault wrote`);
      const code = (e as NodeJS.ErrnoException).code ?? '';
      if (['ENOENT', 'ENOTDIR'].includes(code)) return null;
      if (code === 'ELOOP') throw corrupt('is a symbolic link, not a file walvault wrote');
      throw mapFsError(e, 'read', key);
    }
    try {
      const first = Buffer.alloc(Math.min(size, MAGIC.length + 4));
      await fh.read(first, 0, first.length, 0);
      const noHeader = () => corrupt('has no walvault header');
      if (first.length < MAGIC.length + 4 || !first.subarray(0, MAGIC.length).equals(MAGIC)) throw noHeader();
      const len = first.readUInt32BE(MAGIC.length);
      if (len > MAX_HEADER || MAGIC.length + 4 + len > size) throw noHeader();
      const json = Buffer.alloc(len);
      await fh.read(json, 0, len, MAGIC.length + 4);
      let meta: ObjectMeta;
      try {
        meta = JSON.parse(json.toString('utf8')) as ObjectMeta;
      } catch {
        throw noHeader();
      }
      const headerSize = MAGIC.length + 4 + len;
      return { fh, info: { key, storedSize: size - headerSize, meta, lastModified: mtime }, headerSize };
    } catch (e) {
      await fh.close().catch(() => undefined);
      throw e;
    }
  }

  async *list(prefix: string, opts?: ListOptions): AsyncIterable<ListedObject> {
    await this.checkRoot();
    // Only descend into directories that can hold keys with this prefix.
    const dirPart = prefix.includes('/') ? prefix.slice(0, prefix.lastIndexOf('/')) : '';
    const out: ListedObject[] = [];
    await this.walk(join(this.root, ...dirPart.split('/').filter(Boolean)), prefix, out, opts?.startAfter ?? '');
    out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    yield* out;
  }

  private async walk(dir: string, prefix: string, out: ListedObject[], after: string): Promise<void> {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw mapFsError(e, 'list', dir);
    }
    for (const ent of entries) {
      if (ent.name.startsWith(TEMP_MARK)) continue;
      const full = join(dir, ent.name);
      const key = relative(this.root, full).split(sep).join('/');
      if (ent.isDirectory()) {
        // A directory whose every key sorts at or before `after` is skipped unread.
        if (after && key + '/' < after && !after.startsWith(key + '/')) continue;
        if (prefix.startsWith(key + '/') || (key + '/').startsWith(prefix) || key.startsWith(prefix)) await this.walk(full, prefix, out, after);
      } else if (ent.isFile() && key.startsWith(prefix) && key > after) {
        const s = await stat(full);
        out.push({ key, storedSize: s.size, lastModified: s.mtime, etag: `${s.ino}-${s.mtimeMs}-${s.size}` });
      }
    }
  }

  async delete(keys: string[], opts?: CallOptions): Promise<void> {
    const first = (await this.deleteEach(keys, opts))[0];
    if (first) throw first.error;
  }

  async deleteEach(keys: string[], _opts?: CallOptions): Promise<DeleteFailure[]> {
    await this.checkRoot();
    const failures: DeleteFailure[] = [];
    for (const key of keys) {
      await unlink(this.path(key)).catch((e: NodeJS.ErrnoException) => {
        if (e.code === 'ENOENT') return;
        const error = mapFsError(e, 'delete', key);
        // The repository itself failing (gone, I/O errors) ends the call; a refused key is reported.
        if (error.retryable || error.code === 'MissingBucket') throw error;
        failures.push({ key, error });
      });
    }
    return failures;
  }

  /** A directory has no Object Lock (immutable files are refused like any other unlink). */
  async objectLockEnabled(_opts?: CallOptions): Promise<boolean> {
    return false;
  }

  async objectLock(_key: string, _opts?: CallOptions): Promise<string | null> {
    return null;
  }

  async abortStaleUploads(prefix: string, olderThan: Date, _opts?: CallOptions): Promise<number> {
    await this.checkRoot();
    let removed = 0;
    const sweep = async (dir: string): Promise<void> => {
      const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
      for (const ent of entries) {
        const full = join(dir, ent.name);
        if (ent.isDirectory()) await sweep(full);
        else if (ent.name.startsWith(TEMP_MARK) && (await stat(full)).mtime < olderThan) {
          await unlink(full).catch(() => undefined);
          removed++;
        }
      }
    };
    await sweep(join(this.root, ...prefix.split('/').filter(Boolean)));
    return removed;
  }

  close(): void {}
}

function mapFsError(e: unknown, op: string, what: string): WalvaultError {
  if (isWalvaultError(e)) return e;
  const err = e as NodeJS.ErrnoException;
  const code = err.code ?? 'EUNKNOWN';
  const msg = `file repository: cannot ${op} ${what}: ${code}`;
  if (err.name === 'AbortError') return unavailableError(`${msg} (aborted)`, { cause: e });
  if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') return accessDeniedError(msg, { cause: e });
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return repositoryFullError(`${msg} (repository filesystem is full)`, { cause: e });
  }
  if (['EIO', 'ESTALE', 'ETIMEDOUT', 'EAGAIN', 'EBUSY', 'EHOSTDOWN'].includes(code)) return unavailableError(msg, { cause: e });
  return storageError(msg, { cause: e });
}
