import type { FileHandle } from 'node:fs/promises';
import { open } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { compressBuffer, compressStream, type Codec } from '../codec/codec.js';
import { fromFsError, isWalvaultError, localFileError } from '../common/errors.js';
import { checkSegmentMatchesName, parseWalHeader, type WalHeader } from '../wal/header.js';
import { parseWalName, type WalName } from '../wal/names.js';

// Reads one WAL file that PostgreSQL handed over (or that the look-ahead picked from
// archive_status/*.ready) and turns it into what is uploaded: SHA-256 and size of the original bytes,
// the long page header checked against the name, and the compressed body.
//
// Memory matters here: one wal-push may prepare up to 1 + lookahead files, and the process already
// carries Node and the AWS SDK (~75 MiB). So compressed codecs stream the file through the hash and
// the compressor in 1 MiB chunks from two reused buffers; only the (small) compressed body is kept.
// Uncompressed uploads need the whole file as the PutObject body anyway.

export interface PreparedWal {
  wal: WalName;
  path: string;
  /** Size of the original bytes. */
  size: number;
  sha256: string;
  header?: WalHeader;
  codec: Codec;
  /** What is stored: the original bytes (codec none) or their compressed form. */
  body: Buffer;
  stat: { mtimeMs: number; ino: number; dev: number };
}

const CHUNK = 1024 * 1024;
const pool: Buffer[] = [];
const takeChunk = (): Buffer => pool.pop() ?? Buffer.allocUnsafeSlow(CHUNK);
const releaseChunk = (b: Buffer): void => {
  if (pool.length < 4) pool.push(b);
};

/** Reads and checks a WAL file. Name validation happens before any I/O. */
export async function prepareLocalWal(path: string, name: string, codec: Codec, level?: number): Promise<PreparedWal> {
  const wal = parseWalName(name);
  const what = `${path} (${wal.name})`;
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw localFileError(`${what} does not exist`);
    if ((e as NodeJS.ErrnoException).code === 'EISDIR') throw localFileError(`${what} is a directory, not a WAL file`);
    throw fromFsError(e, what, 'read');
  }
  try {
    const st = await fh.stat();
    if (st.isDirectory()) throw localFileError(`${what} is a directory, not a WAL file`);
    if (!st.isFile()) throw localFileError(`${what} is not a regular file`);
    const isSegment = wal.kind === 'segment' || wal.kind === 'partial';
    const stat = { mtimeMs: st.mtimeMs, ino: st.ino, dev: st.dev };
    const checkHeader = (first: Buffer, size: number): WalHeader | undefined => {
      if (!isSegment) return undefined;
      const header = parseWalHeader(first, what);
      checkSegmentMatchesName(header, wal.segment!, size, what);
      return header;
    };

    if (codec === 'none' || st.size <= CHUNK) {
      const data = await fh.readFile();
      if (!isSegment && data.length === 0) throw localFileError(`${what} is empty`);
      const header = checkHeader(data, data.length);
      const sha256 = createHash('sha256').update(data).digest('hex');
      const body = codec === 'none' ? data : await compressBuffer(codec, data, level);
      return { wal, path, size: data.length, sha256, ...(header ? { header } : {}), codec, body, stat };
    }
    return await streamCompress(fh, { wal, path, what, codec, stat, ...(level !== undefined ? { level } : {}) }, st.size, checkHeader);
  } catch (e) {
    if (isWalvaultError(e)) throw e;
    throw fromFsError(e, what, 'read');
  } finally {
    await fh.close().catch(() => undefined);
  }
}

async function streamCompress(
  fh: FileHandle,
  f: { wal: WalName; path: string; what: string; codec: Codec; level?: number; stat: PreparedWal['stat'] },
  expectedSize: number,
  checkHeader: (first: Buffer, size: number) => WalHeader | undefined,
): Promise<PreparedWal> {
  const z = compressStream(f.codec, f.level)!;
  const out: Buffer[] = [];
  z.on('data', (d: Buffer) => out.push(d));
  let failure: unknown;
  const finished = new Promise<void>((resolve, reject) => {
    z.once('end', resolve);
    z.once('error', (e) => {
      failure = e;
      reject(e);
    });
  });
  finished.catch(() => undefined);

  // Two buffers in flight per file: one being read while the compressor (on the libuv pool) consumes
  // the other. They come from a pool shared by all files of this process, so a look-ahead batch
  // does not leave megabytes of garbage behind for every file.
  let mine = 0;
  const waiting: Array<(b: Buffer) => void> = [];
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
  z.once('error', () => {
    while (waiting.length) waiting.shift()!(Buffer.allocUnsafeSlow(CHUNK));
  });

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
      if (total > expectedSize) break;
      z.write(chunk, () => give(buf));
    }
    if (total !== expectedSize) throw localFileError(`${f.what} changed size while being read (${expectedSize} bytes, then ${total})`);
    z.end();
    await finished;
  } catch (e) {
    z.destroy();
    throw e;
  }
  const body = Buffer.concat(out);
  return { wal: f.wal, path: f.path, size: total, sha256: hash.digest('hex'), ...(header ? { header } : {}), codec: f.codec, body, stat: f.stat };
}
