import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { compressStream, type Codec } from '../codec/codec.js';
import { retryPolicy, type Config } from '../common/config.js';
import { backupError, fromFsError, isWalvaultError } from '../common/errors.js';
import { ATTEMPT_TIMEOUT_BYTES, Deadline, policyForBody, withRetry } from '../common/retry.js';
import { HashingStream } from '../fs/hash.js';
import { NotRegularFileError, openRegularFile } from '../fs/open-regular.js';
import { tempPathFor } from '../fs/temp-names.js';
import { Md5Count, openBody, readRange, streamed } from '../archive/large-body.js';
import { objectMeta, smallObjectMeta } from '../archive/objects.js';
import { putOnce } from '../archive/small-objects.js';
import { storedSizeFor, type ObjectMeta, type Storage } from '../storage/types.js';
import { BlockScanner, blockCount, blockMapName, CHECKSUM_BYTES } from './block-map.js';

// One data object of a format-2 backup: its files read once, one after the other, each hashed, the
// whole hashed (the SHA-256 the metadata records) and compressed into a private temp file in the
// spool, then uploaded from there. The object's metadata must be known before its upload starts
// (S3 fixes it at CreateMultipartUpload/PutObject), and the files of a running cluster change while
// they are read: reading them twice (hash, then upload) would record a hash of other bytes. The
// spool copy also makes a retry send the same bytes again. Memory: a few read chunks per object,
// whatever its size; disk: one compressed object per job.

/**
 * Where an object's bytes come from: a file of the data directory, or bytes in memory. `reference`:
 * the file's block map in the reference backup and its size then; only blocks that differ are stored.
 */
export type Source =
  | { index: number; path: string; size: number; reference?: { map: Buffer; size: number } }
  | { index: number; path: string; body: Buffer };

/** What was actually read for one source (none for a file that vanished before it was opened). */
export interface ReadFile {
  index: number;
  /** Where the stored runs begin in the object (they follow one another). */
  offset: number;
  size: number;
  /** Runs of the file stored in this object, in file order (all of it unless a reference said otherwise). */
  stored: Array<{ fileOffset: number; size: number }>;
  /** Its block map, in this backup's map of the object (files above one block). */
  blocks?: { name: string; offset: number };
  sha256: string;
  mtimeMs: number;
  mode: number;
}

export interface StoredObject {
  n: number;
  size: number;
  sha256: string;
  storedBytes: number;
  codec: Codec;
  files: ReadFile[];
  /** Bytes of its block map object (blocks/<n>), 0 when none was needed. */
  mapBytes: number;
}

/** A multiple of every block size: a chunk starts at a block boundary. */
const READ_CHUNK = 256 * 1024;
/** Above this (compressed), a multipart upload: S3 refuses a single PUT above 5 GiB. */
const MULTIPART_ABOVE = 1024 * 1024 * 1024;

export interface ObjectJob {
  storage: Storage;
  config: Config;
  backup: string;
  dataDir: string;
  tmpDir: string;
  key: string;
  n: number;
  sources: Source[];
  /** Block size of the block maps (block-map.ts). */
  blockSize: number;
  signal: AbortSignal;
  onRead?: (bytes: number) => void;
}

export async function storeObject(job: ObjectJob): Promise<StoredObject> {
  const { config } = job;
  const temp = tempPathFor(join(job.tmpDir, `backup-object-${job.n}`));
  try {
    const files: ReadFile[] = [];
    const maps: Buffer[] = [];
    const whole = new HashingStream();
    const md5 = new Md5Count();
    const z = compressStream(config.compression, config.compressionLevel);
    const sink = createWriteStream(temp, { flags: 'wx', mode: 0o600 });
    let sinkFailed = false;
    sink.once('error', () => (sinkFailed = true));
    try {
      await pipeline([Readable.from(readSources(job, files, maps)), whole, ...(z ? [z] : []), md5, sink], { signal: job.signal });
    } catch (e) {
      if (job.signal.aborted) throw job.signal.reason;
      // The spool's disk (full, read-only) is not the data directory's: say which one failed.
      if (sinkFailed && !isWalvaultError(e)) throw fromFsError(e, temp, 'write');
      throw e;
    }
    const stored = md5.bytes;
    const meta = { ...objectMeta({ sha256: whole.digest(), size: whole.bytes, codec: config.compression }), backup: job.backup };
    await uploadSpooled(job, temp, stored, md5.digest(), meta);
    const mapBytes = await storeBlockMap(job, files, maps);
    return { n: job.n, size: whole.bytes, sha256: meta.sha256, storedBytes: storedSizeFor(job.storage, stored), codec: config.compression, files, mapBytes };
  } finally {
    await unlink(temp).catch(() => undefined);
  }
}

/** The block maps of the object's files as one object next to it (raw: checksums do not compress). */
async function storeBlockMap(job: ObjectJob, files: ReadFile[], maps: Buffer[]): Promise<number> {
  if (maps.length === 0) return 0;
  const body = Buffer.concat(maps);
  const name = blockMapName(job.n);
  let offset = 0;
  for (const f of files) {
    if (!f.blocks) continue;
    f.blocks = { name, offset };
    offset += blockCount(f.size, job.blockSize) * CHECKSUM_BYTES;
  }
  const key = job.key.replace(/data\/\d+$/, name);
  const deadline = new Deadline(job.config.deadline * 1000);
  try {
    await withRetry(`upload ${key}`, retryPolicy(job.config), deadline, async (s) => {
      try {
        await putOnce(job.storage, key, body, { ...smallObjectMeta(body), backup: job.backup }, { signal: AbortSignal.any([s, job.signal]) });
      } catch (e) {
        if (job.signal.aborted) throw job.signal.reason;
        throw e;
      }
    });
  } finally {
    deadline.dispose();
  }
  return storedSizeFor(job.storage, body.length);
}

/** Uploads a spooled (compressed) object from its temp file, with retries (also backup-push --method stream). */
export async function uploadSpooled(job: Pick<ObjectJob, 'storage' | 'config' | 'key' | 'signal'>, temp: string, size: number, md5: string, meta: ObjectMeta & { sha256: string }): Promise<void> {
  const fh = await openBody(temp);
  // A large object gets more time: one attempt timeout and one deadline per started 64 MiB.
  const units = Math.max(1, Math.ceil(size / ATTEMPT_TIMEOUT_BYTES));
  const deadline = new Deadline(job.config.deadline * 1000 * units);
  try {
    await withRetry(`upload ${job.key}`, policyForBody(retryPolicy(job.config), size), deadline, async (s) => {
      const signal = AbortSignal.any([s, job.signal]);
      try {
        if (size > MULTIPART_ABOVE) await job.storage.upload(job.key, readRange(fh, size), meta, { signal, expectedSize: size });
        // (a multipart upload cannot be conditional everywhere; a backup's keys are its own, fresh id)
        else await putOnce(job.storage, job.key, { size, md5, open: () => readRange(fh, size) }, meta, { signal });
      } catch (e) {
        // Stopped (interrupted, or another object failed for good): not a failure to retry.
        if (job.signal.aborted) throw job.signal.reason;
        throw e;
      }
    });
  } finally {
    deadline.dispose();
    await fh.close().catch(() => undefined);
  }
}

/**
 * The object's bytes, file after file. A file is read up to its size at the walk (a file that grew
 * since is recorded as it was then; one that shrank as what was there): the offset of the next file
 * is what was actually produced. WAL replay from the backup's start repairs both.
 */
async function* readSources(job: ObjectJob, files: ReadFile[], maps: Buffer[]): AsyncGenerator<Buffer> {
  let offset = 0;
  for (const src of job.sources) {
    if ('body' in src) {
      const size = src.body.length;
      const sha256 = createHash('sha256').update(src.body).digest('hex');
      files.push({ index: src.index, offset, size, stored: size > 0 ? [{ fileOffset: 0, size }] : [], sha256, mtimeMs: Date.now(), mode: 0o600 });
      offset += src.body.length;
      if (src.body.length > 0) yield src.body;
      continue;
    }
    const path = join(job.dataDir, src.path);
    let opened: Awaited<ReturnType<typeof openRegularFile>>;
    try {
      opened = await openRegularFile(path, { noFollow: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        // Dropped by PostgreSQL (a table, an index) since the walk: not in the backup.
        continue;
      }
      throw unreadable(path, e);
    }
    const { fh, st } = opened;
    const hash = createHash('sha256');
    const blocks = new BlockScanner(job.blockSize, src.reference);
    let got = 0;
    let kept = 0;
    try {
      while (got < src.size) {
        const want = Math.min(READ_CHUNK, src.size - got);
        let n: number;
        // Fresh chunks: the compressor keeps references to them past this loop.
        const buf = Buffer.allocUnsafeSlow(want);
        try {
          n = (await fh.read(buf, 0, want, got)).bytesRead;
        } catch (e) {
          throw unreadable(path, e);
        }
        if (n === 0) break;
        const chunk = n === want ? buf : buf.subarray(0, n);
        hash.update(chunk);
        const parts = blocks.scan(chunk, got);
        got += n;
        streamed(n);
        job.onRead?.(n);
        for (const p of parts) {
          kept += p.length;
          yield p;
        }
        // A short read is the file's end (it shrank): blocks must stay aligned to the file's offsets.
        if (n < want) break;
      }
    } finally {
      await fh.close().catch(() => undefined);
    }
    const map = blocks.map(got);
    if (map) maps.push(map);
    files.push({
      index: src.index,
      offset,
      size: got,
      stored: blocks.stored,
      ...(map ? { blocks: { name: '', offset: 0 } } : {}),
      sha256: hash.digest('hex'),
      mtimeMs: st.mtimeMs,
      mode: st.mode & 0o7777,
    });
    offset += kept;
  }
}

function unreadable(path: string, e: unknown) {
  if (e instanceof NotRegularFileError) return backupError(`cannot back up ${path}: it became ${e.kind} during the backup`);
  const err = e as NodeJS.ErrnoException;
  return backupError(`cannot read ${path}: ${err.code ?? 'error'} (${(err.message ?? String(e)).replace(/^\w+: /, '')}); the backup was not recorded`, { cause: e });
}
