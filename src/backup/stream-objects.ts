import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { compressStream } from '../codec/codec.js';
import type { Config } from '../common/config.js';
import { backupError, fromFsError, isWalvaultError } from '../common/errors.js';
import { objectMeta } from '../archive/objects.js';
import { Md5Count } from '../archive/large-body.js';
import { cleanupStaleTemps, ensureDir } from '../fs/atomic.js';
import { HashingStream } from '../fs/hash.js';
import { tempPathFor } from '../fs/temp-names.js';
import { storedSizeFor, type Storage } from '../storage/types.js';
import { backupKey } from './catalog.js';
import { uploadSpooled } from './data-object.js';
import { dataObjectName, safeRelativePath, type DataObject, type Entry, type FileList } from './file-list.js';
import { normalizeName, TAPPED, wrapTarError } from './tar.js';

// backup-push --method stream, format 2: pg_basebackup's tar parsed member by member, each regular
// file routed into data objects as --method files packs them (bundle-plan.ts's rule, applied as the
// members arrive: a member below bundleSize/8 goes into the open bundle, a larger one is an object
// of its own). An object is hashed and compressed into a spool temp file while it is read, then
// uploaded from there (data-object.ts) while the next one is read; at most `uploads` wait or run.
// Memory: stream buffers and the small members walvault reads (backup_label, pg_control, the
// manifest), whatever the database size; spool disk: the objects in flight, compressed.

/** pg_basebackup's manifest: stored as its own object (push-finish.ts), not as a file of the list. */
const MANIFEST = 'backup_manifest';
const EMPTY_SHA256 = createHash('sha256').digest('hex');

export interface StreamState {
  /** The member whose header was read last (global/pg_control: the data is all sent). */
  lastEntry?: string;
  /** The tapped members read so far. */
  files: Map<string, Buffer>;
}

export interface StreamPackOptions {
  storage: Storage;
  config: Config;
  bundleSize: number;
  /** Objects closed and not yet uploaded, at most (the one being read not counted). */
  uploads: number;
  /** Called with backup_label (the first member): returns the backup id the objects go under. */
  start: (label: Buffer) => Promise<string>;
  signal: AbortSignal;
}

export interface StreamedFiles {
  list: FileList;
  /** Total bytes of the files stored. */
  sizeBytes: number;
  storedBytes: number;
}

/** One data object being written: whole-object SHA-256 and size, compressed into a temp file. */
class SpoolObject {
  size = 0;
  private readonly input = new PassThrough({ highWaterMark: 256 * 1024 });
  private readonly whole = new HashingStream();
  private readonly md5 = new Md5Count();
  private readonly done: Promise<void>;

  constructor(
    readonly n: number,
    readonly temp: string,
    config: Config,
    signal: AbortSignal,
  ) {
    const z = compressStream(config.compression, config.compressionLevel);
    const sink = createWriteStream(temp, { flags: 'wx', mode: 0o600 });
    let sinkFailed = false;
    sink.once('error', () => (sinkFailed = true));
    this.done = pipeline([this.input, this.whole, ...(z ? [z] : []), this.md5, sink], { signal }).catch((e: unknown) => {
      if (signal.aborted) throw signal.reason;
      throw sinkFailed && !isWalvaultError(e) ? fromFsError(e, temp, 'write') : e;
    });
    this.done.catch(() => undefined);
  }

  async write(chunk: Buffer): Promise<void> {
    this.size += chunk.length;
    if (!this.input.write(chunk)) await Promise.race([new Promise((r) => this.input.once('drain', r)), this.done]);
  }

  async close(): Promise<{ size: number; sha256: string; stored: number; md5: string }> {
    this.input.end();
    await this.done;
    return { size: this.whole.bytes, sha256: this.whole.digest(), stored: this.md5.bytes, md5: this.md5.digest() };
  }

  /** Stops it; resolves once its temp file is closed (then it can be removed). */
  async abort(): Promise<void> {
    this.input.destroy();
    await this.done.catch(() => undefined);
  }
}

/**
 * Reads the tar on `source` to its end, storing its files under the id `start` returns. On failure
 * every upload has settled and every temp file is gone when it rejects (the caller removes what
 * was uploaded). `state` is updated as members are read (backup-push's archive-wait watch).
 */
export async function packTarStream(source: Readable, state: StreamState, o: StreamPackOptions): Promise<StreamedFiles> {
  const tmpDir = join(o.config.spool, 'tmp');
  await ensureDir(tmpDir);
  await cleanupStaleTemps(tmpDir);
  const stop = new AbortController();
  const signal = AbortSignal.any([o.signal, stop.signal]);
  const threshold = o.bundleSize / 8;
  const extract = tar.extract();
  const fed = pipeline(source, extract).catch((e: unknown) => {
    extract.destroy(e as Error);
    throw e;
  });
  fed.catch(() => undefined);

  let id: string | undefined;
  const objects: DataObject[] = [];
  const entries: Entry[] = [];
  const inFlight = new Set<Promise<void>>();
  const open = new Set<SpoolObject>();
  let failure: unknown;
  let bundle: SpoolObject | undefined;
  let sizeBytes = 0;
  let storedBytes = 0;

  const newObject = (): SpoolObject => {
    const n = objects.length;
    objects.push({ name: dataObjectName(n), backup: id!, size: 0, sha256: '', storedBytes: 0, codec: o.config.compression });
    const obj = new SpoolObject(n, tempPathFor(join(tmpDir, `backup-object-${n}`)), o.config, signal);
    open.add(obj);
    return obj;
  };
  const finish = async (obj: SpoolObject): Promise<void> => {
    const r = await obj.close();
    open.delete(obj);
    const meta = { ...objectMeta({ sha256: r.sha256, size: r.size, codec: o.config.compression }), backup: id! };
    const occupied = storedSizeFor(o.storage, r.stored);
    Object.assign(objects[obj.n]!, { size: r.size, sha256: r.sha256, storedBytes: occupied });
    storedBytes += occupied;
    const up = uploadSpooled({ storage: o.storage, config: o.config, key: backupKey(id!, dataObjectName(obj.n)), signal }, obj.temp, r.stored, r.md5, meta)
      .catch((e: unknown) => {
        failure ??= e;
        stop.abort(e);
      })
      .finally(() => {
        inFlight.delete(up);
        return unlink(obj.temp).catch(() => undefined);
      });
    inFlight.add(up);
    while (inFlight.size > o.uploads) await Promise.race(inFlight);
    if (failure !== undefined) throw failure;
  };

  try {
    for await (const member of extract) {
      if (failure !== undefined) throw failure;
      const h = member.header;
      const path = normalizeName(h.name);
      state.lastEntry = path;
      if (!safeRelativePath(path)) throw backupError(`the backup stream holds a member with an unsafe name ${JSON.stringify(path.slice(0, 80))}`);
      const mode = (h.mode ?? 0o600) & 0o7777;
      if (h.type === 'directory') {
        entries.push({ type: 'dir', path, mode });
        member.resume();
        continue;
      }
      // pg_basebackup sends symbolic links for tablespaces only (pg_wal goes as a directory); the
      // stream method does not take tablespaces (push-finish.ts says so for a tablespace_map).
      if (h.type === 'symlink') throw backupError(`the backup stream holds a symbolic link ${path} -> ${h.linkname ?? ''}; backup-push --method stream does not support tablespaces: use --method files on the database host`);
      if (h.type !== 'file') throw backupError(`the backup stream holds ${path} of tar type ${h.type}, not a file or directory`);
      const size = h.size ?? 0;
      const cap = TAPPED[path];
      if (cap !== undefined && size > cap) throw backupError(`${path} in the backup is ${size} bytes, more than walvault reads (${cap})`);
      const kept: Buffer[] = [];
      if (path === MANIFEST) {
        for await (const c of member) kept.push(c as Buffer);
        state.files.set(path, Buffer.concat(kept));
        continue;
      }
      let chunks: AsyncIterable<unknown> | Buffer[] = member;
      if (id === undefined) {
        // Its start segment names the backup, and so every object key: nothing is stored before it.
        if (path !== 'backup_label') throw backupError(`the backup stream does not begin with backup_label (its first file is ${path})`);
        for await (const c of member) kept.push(c as Buffer);
        chunks = kept.splice(0);
        id = await o.start(Buffer.concat(chunks));
        if (signal.aborted) throw signal.reason;
      }
      if (size === 0 && id !== undefined) {
        // No bytes, no object (an object of empty files only would be an empty object).
        for await (const _ of member);
        if (cap !== undefined) state.files.set(path, Buffer.alloc(0));
        entries.push({ type: 'file', path, mode, size: 0, mtimeMs: h.mtime ? h.mtime.getTime() : 0, sha256: EMPTY_SHA256, extents: [] });
        continue;
      }
      let obj: SpoolObject;
      if (size >= threshold) obj = newObject();
      else {
        if (bundle && bundle.size + size > o.bundleSize) {
          const full = bundle;
          bundle = undefined;
          await finish(full);
        }
        obj = bundle ??= newObject();
      }
      const offset = obj.size;
      const hash = createHash('sha256');
      for await (const c of chunks) {
        const chunk = c as Buffer;
        hash.update(chunk);
        if (cap !== undefined) kept.push(chunk);
        await obj.write(chunk);
      }
      if (cap !== undefined) state.files.set(path, Buffer.concat(kept));
      const got = obj.size - offset;
      sizeBytes += got;
      entries.push({
        type: 'file',
        path,
        mode,
        size: got,
        mtimeMs: h.mtime ? h.mtime.getTime() : 0,
        sha256: hash.digest('hex'),
        extents: got > 0 ? [{ object: obj.n, offset, size: got }] : [],
      });
      if (obj !== bundle) await finish(obj);
    }
    await fed;
    if (id === undefined) throw backupError('the backup stream ended without a backup_label');
    if (bundle) {
      const last = bundle;
      bundle = undefined;
      await finish(last);
    }
    while (inFlight.size > 0) await Promise.race(inFlight);
    if (failure !== undefined) throw failure;
    if (o.signal.aborted) throw o.signal.reason;
    return { list: { format: 2, backup: id, type: 'full', objects, entries }, sizeBytes, storedBytes };
  } catch (e) {
    stop.abort(e);
    extract.destroy();
    await Promise.allSettled([...open].map((obj) => obj.abort().then(() => unlink(obj.temp))));
    await Promise.allSettled([...inFlight]);
    if (o.signal.aborted) throw o.signal.reason;
    throw failure ?? (e instanceof Error ? wrapTarError(e, 'the backup stream') : e);
  }
}
