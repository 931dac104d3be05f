import { createWriteStream } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { stat, unlink } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import type { Transform } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import { join } from 'node:path';
import { compressBuffer, compressStream, type Codec } from '../codec/codec.js';
import { fromFsError, isWalvaultError, localFileError } from '../common/errors.js';
import { cleanupStaleTemps, ensureDir } from '../fs/atomic.js';
import { stableIdentity, type FileIdentity } from '../fs/file-identity.js';
import { fileKind, NotRegularFileError, openRegularFile } from '../fs/open-regular.js';
import { tempPathFor } from '../fs/temp-names.js';
import type { PutBody } from '../storage/types.js';
import { checkSegmentMatchesName, parseWalHeader, type WalHeader } from '../wal/header.js';
import { parseWalName, type WalName } from '../wal/names.js';
import { freeNow, Md5Count, openBody, readRange, streamed } from './large-body.js';

// Reads one WAL file that PostgreSQL handed over (or that the look-ahead picked from
// archive_status/*.ready) and turns it into what is uploaded: SHA-256 and size of the original bytes,
// the long page header checked against the name, and the body.
//
// Memory matters here: one wal-push may prepare up to 1 + lookahead files, and the process already
// carries Node and the AWS SDK (~75 MiB). The file is always read in 1 MiB chunks from a small
// shared pool. Files up to IN_MEMORY_MAX (the default 16 MiB segment) keep their body in memory, the
// fast path. Larger ones (initdb --wal-segsize up to 1 GiB) never are: uncompressed, the body is
// the WAL file itself, read again for the upload; compressed, it is spooled to a private temp file.
// Either way its MD5 is computed here and checked by the store, so bytes that change between the
// two reads are refused, never stored under the first read's SHA-256.

export interface PreparedWal {
  wal: WalName;
  path: string;
  /** Size of the original bytes. */
  size: number;
  sha256: string;
  header?: WalHeader;
  codec: Codec;
  /** What is stored: the original bytes (codec none) or their compressed form. */
  body: PutBody;
  stat: { mtimeMs: number; ino: number; dev: number };
  /**
   * The file's identity, the same before and after the read that computed `sha256` (fstat of the
   * descriptor read through), so that the fast path can trust these bytes without reading them
   * again; absent when it changed meanwhile or too shortly before (src/fs/file-identity.ts).
   */
  identity?: FileIdentity;
  /** Removes the spooled body, if any; idempotent. */
  dispose(): Promise<void>;
}

/** Largest file whose body is held in memory. */
export const IN_MEMORY_MAX = 16 * 1024 * 1024;
/** Memory one streamed file holds at most: two read chunks, the compressor's state, stream buffers. */
export const STREAMED_MEMORY = 8 * 1024 * 1024;

const CHUNK = 1024 * 1024;
const pool: Buffer[] = [];
const takeChunk = (): Buffer => pool.pop() ?? Buffer.allocUnsafeSlow(CHUNK);
const releaseChunk = (b: Buffer): void => {
  if (pool.length < 4) pool.push(b);
};
const noop = async () => undefined;

/** Bytes of memory preparing and uploading a file of `size` bytes holds (for ByteBudget). */
export const memoryFor = (size: number): number => (size > IN_MEMORY_MAX ? STREAMED_MEMORY : size);

/**
 * Reads and checks a WAL file. Name validation happens before any I/O. `tmpDir` (in the spool) gets
 * the compressed body of a file larger than IN_MEMORY_MAX.
 */
export async function prepareLocalWal(path: string, name: string, codec: Codec, level: number | undefined, tmpDir: string): Promise<PreparedWal> {
  const wal = parseWalName(name);
  const what = `${path} (${wal.name})`;
  const readStartedMs = Date.now();
  const { fh, st } = await openLocalWal(path, what);
  let keepOpen = false;
  try {
    // An identity is only an optimisation of the fast path: failing to take one costs a re-hash there.
    const identity = () => fh.stat({ bigint: true }).catch(() => undefined);
    const before = await identity();
    const finish = async (p: PreparedWal): Promise<PreparedWal> => {
      const after = await identity();
      const id = before && after ? stableIdentity(before, after, readStartedMs) : undefined;
      return id ? { ...p, identity: id } : p;
    };
    const isSegment = wal.kind === 'segment' || wal.kind === 'partial';
    const stat = { mtimeMs: st.mtimeMs, ino: st.ino, dev: st.dev };
    const checkHeader = (first: Buffer, size: number): WalHeader | undefined => {
      if (!isSegment) return undefined;
      const header = parseWalHeader(first, what);
      checkSegmentMatchesName(header, wal.segment!, size, what);
      return header;
    };
    const base = { wal, path, size: st.size, codec, stat, dispose: noop };

    if (st.size <= CHUNK || (codec === 'none' && st.size <= IN_MEMORY_MAX)) {
      const data = await fh.readFile();
      if (!isSegment && data.length === 0) throw localFileError(`${what} is empty`);
      const header = checkHeader(data, data.length);
      const sha256 = createHash('sha256').update(data).digest('hex');
      const body = await compressBuffer(codec, data, level);
      return await finish({ ...base, size: data.length, sha256, ...(header ? { header } : {}), body });
    }
    const read = (feed: Feed) => readThrough(fh, what, st.size, checkHeader, feed);
    if (st.size <= IN_MEMORY_MAX) {
      const z = compressStream(codec, level)!;
      const out: Buffer[] = [];
      z.on('data', (d: Buffer) => out.push(d));
      const r = await read({ z, done: finished(z) });
      const body = Buffer.concat(out);
      freeNow(out);
      return await finish({ ...base, ...r, body });
    }
    if (codec === 'none') {
      const md5 = createHash('md5');
      const r = await read({ each: (c) => md5.update(c) });
      const size = st.size;
      // The body is read again through this descriptor: the same inode, whatever the path names now.
      const open = () => readRange(fh, size);
      keepOpen = true;
      return await finish({ ...base, ...r, body: { size, md5: md5.digest('base64'), open }, dispose: () => fh.close().catch(() => undefined) });
    }
    return await finish(await spoolCompressed(base, tmpDir, level, read));
  } catch (e) {
    if (isWalvaultError(e)) throw e;
    throw fromFsError(e, what, 'read');
  } finally {
    if (!keepOpen) await fh.close().catch(() => undefined);
  }
}

/**
 * Refuses anything but a regular file by type BEFORE opening it: open() of a FIFO blocks until a
 * writer appears (forever, past any deadline), and opening a device can have side effects. The
 * open itself is non-blocking and the descriptor checked again, so a swap in between cannot hang it.
 */
async function openLocalWal(path: string, what: string) {
  const refuse = (e: unknown) => {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return localFileError(`${what} does not exist`);
    return fromFsError(e, what, 'read');
  };
  const st = await stat(path).catch((e: unknown) => {
    throw refuse(e);
  });
  checkType(st, what);
  let opened: Awaited<ReturnType<typeof openRegularFile>>;
  try {
    opened = await openRegularFile(path);
  } catch (e) {
    if (e instanceof NotRegularFileError) throw notAWalFile(e.kind, what);
    throw refuse(e);
  }
  if (opened.st.ino !== st.ino || opened.st.dev !== st.dev) {
    await opened.fh.close().catch(() => undefined);
    throw localFileError(`${what} was replaced while being opened`);
  }
  return opened;
}

function checkType(st: import('node:fs').Stats, what: string): void {
  if (!st.isFile()) throw notAWalFile(fileKind(st), what);
}

function notAWalFile(kind: string, what: string) {
  if (kind === 'a directory') return localFileError(`${what} is a directory, not a WAL file`);
  return localFileError(`${what} is ${kind}, not a WAL file; refusing to read it`);
}

type Feed = { z: Transform; done: Promise<void> } | { each: (chunk: Buffer) => void };
interface ReadResult {
  size: number;
  sha256: string;
  header?: WalHeader;
}

let swept: Promise<number> | undefined;

/** Compresses into a private temp file in the spool while computing the MD5 of what is stored. */
async function spoolCompressed(
  base: Omit<PreparedWal, 'sha256' | 'body'>,
  tmpDir: string,
  level: number | undefined,
  read: (feed: Feed) => Promise<ReadResult>,
): Promise<PreparedWal> {
  await ensureDir(tmpDir);
  // A killed wal-push's body, possibly a gigabyte: swept once per process, before this process has
  // temp files of its own there (the sweep takes files with our pid for a recycled pid's).
  swept ??= cleanupStaleTemps(tmpDir);
  await swept;
  const temp = tempPathFor(join(tmpDir, base.wal.name));
  const dispose = () => unlink(temp).catch(() => undefined);
  let sinkError: unknown;
  try {
    const z = compressStream(base.codec, level)!;
    const md5 = new Md5Count();
    const done = pipeline(z, md5, createWriteStream(temp, { flags: 'wx', mode: 0o600 }));
    done.catch((e: unknown) => (sinkError = e));
    const r = await read({ z, done });
    const size = md5.bytes;
    const fh = await openBody(temp);
    const body = { size, md5: md5.digest(), open: () => readRange(fh, size) };
    return { ...base, ...r, body, dispose: () => fh.close().then(dispose, dispose) };
  } catch (e) {
    await dispose();
    // The spool's disk (full, read-only) is not the WAL file's: report which one failed.
    throw e === sinkError && !isWalvaultError(e) ? fromFsError(e, temp, 'write') : e;
  }
}

/**
 * Reads the file once, hashing every chunk and handing it to the compressor (at most two chunks in
 * flight: one being read while the compressor, on the libuv pool, consumes the other) or to `each`.
 */
async function readThrough(
  fh: FileHandle,
  what: string,
  expectedSize: number,
  checkHeader: (first: Buffer, size: number) => WalHeader | undefined,
  feed: Feed,
): Promise<ReadResult> {
  const z = 'z' in feed ? feed.z : undefined;
  let failure: unknown;
  // The chunks come from a pool shared by all files of this process, so a look-ahead batch does not
  // leave megabytes of garbage behind for every file.
  let mine = 0;
  const waiting: Array<(b: Buffer) => void> = [];
  const fail = (e: unknown) => {
    failure ??= e ?? new Error('compressor closed');
    while (waiting.length) waiting.shift()!(Buffer.allocUnsafeSlow(CHUNK));
  };
  if (z) {
    z.once('error', fail);
    (feed as { done: Promise<void> }).done.catch(fail);
  }
  const give = (b: Buffer) => {
    const w = waiting.shift();
    if (w) w(b);
    else {
      mine--;
      releaseChunk(b);
    }
  };
  const take = (): Promise<Buffer> => {
    // After a compressor error no buffer comes back: use a fresh one and stop below.
    if (failure) return Promise.resolve(Buffer.allocUnsafeSlow(CHUNK));
    if (mine < 2) {
      mine++;
      return Promise.resolve(takeChunk());
    }
    return new Promise((resolve) => waiting.push(resolve));
  };

  const hash = createHash('sha256');
  let header: WalHeader | undefined;
  let total = 0;
  try {
    for (;;) {
      if (failure) throw failure;
      const buf = await take();
      const { bytesRead } = await fh.read(buf, 0, CHUNK, total);
      if (bytesRead === 0) {
        give(buf);
        break;
      }
      const chunk = bytesRead === CHUNK ? buf : buf.subarray(0, bytesRead);
      if (total === 0) header = checkHeader(chunk, expectedSize);
      hash.update(chunk);
      total += bytesRead;
      // A file held in memory makes no streaming garbage of its own (pooled chunks): no collection.
      if (expectedSize > IN_MEMORY_MAX) streamed(bytesRead);
      if (total > expectedSize) break;
      if (z) z.write(chunk, () => give(buf));
      else {
        (feed as { each: (c: Buffer) => void }).each(chunk);
        give(buf);
      }
    }
    if (total !== expectedSize) throw localFileError(`${what} changed size while being read (${expectedSize} bytes, then ${total})`);
    if (z) {
      z.end();
      await (feed as { done: Promise<void> }).done;
    }
  } catch (e) {
    z?.destroy();
    await (feed as { done?: Promise<void> }).done?.catch(() => undefined);
    throw e;
  }
  return { size: total, sha256: hash.digest('hex'), ...(header ? { header } : {}) };
}
