import { join } from 'node:path';
import type { Config } from '../common/config.js';
import { cleanupStaleTemps, ensureDir } from '../fs/atomic.js';
import type { Storage } from '../storage/types.js';
import { planObjects } from './bundle-plan.js';
import { backupKey } from './catalog.js';
import type { WalkedEntry } from './data-dir-walk.js';
import { removeIncompleteBackup } from './push-cleanup.js';
import { storeObject, type Source, type StoredObject } from './data-object.js';
import { dataObjectName, type DataObject, type Entry, type Extent, type FileList } from './file-list.js';
import { splitTablespacePath } from './tablespaces.js';
import { BLOCK_SIZE, pieceExtents } from './block-map.js';
import type { Reference } from './reference.js';
import { log } from '../common/log.js';

// The parallel half of backup-push --method files: `jobs` workers take the planned objects
// (bundle-plan.ts) in order and store each (data-object.ts). One object's upload is retried alone;
// the first object that fails for good stops the others, and once none is in flight any more, what
// this backup uploaded is removed (best effort: without backup.json nothing would use it anyway).

const CONTROL_FILE = 'global/pg_control';

export type ExtraFiles = Array<{ path: string; body: Buffer }>;

export interface UploadFilesOptions {
  backup: string;
  dataDir: string;
  entries: WalkedEntry[];
  /**
   * Files that are not in the data directory (backup_label, tablespace_map): stored after every
   * data file, as the last object. A function is called only then: pg_backup_stop, which returns
   * them, must come after the data files were read.
   */
  extra: ExtraFiles | (() => Promise<ExtraFiles>);
  jobs: number;
  bundleSize: number;
  /** Incremental: files unchanged since the reference are not read, changed files store changed blocks. */
  reference?: Reference;
  signal: AbortSignal;
  /** Called with the number of file bytes read so far. */
  onProgress?: (bytesRead: number) => void;
}

export interface UploadedFiles {
  list: FileList;
  /** Total bytes of the files, as read. */
  sizeBytes: number;
  /** What the store holds for the data objects and block maps. */
  storedBytes: number;
  /** Files read, and files kept from the reference without being read (incremental). */
  filesRead: number;
  filesUnchanged: number;
}

export async function uploadFiles(storage: Storage, config: Config, opts: UploadFilesOptions): Promise<UploadedFiles> {
  const files = opts.entries.filter((e) => e.type === 'file');
  // pg_control is read after every other file, as PostgreSQL's own base backup does.
  const control = files.findIndex((f) => f.path === CONTROL_FILE);
  const ref = opts.reference;
  const unchanged = new Set(ref ? files.flatMap((f, i) => (i !== control && unchangedSince(f, ref) ? [i] : [])) : []);
  const rest = files.flatMap((f, i) => (i === control || unchanged.has(i) ? [] : [i]));
  const plan = planObjects(
    rest.map((i) => files[i]!.size ?? 0),
    opts.bundleSize,
    rest.map((i) => splitTablespacePath(files[i]!.path)?.oid ?? ''),
  );
  const tmpDir = join(config.spool, 'tmp');
  await ensureDir(tmpDir);
  // Objects left by a killed backup-push (or wal-push) would otherwise fill the spool's disk.
  await cleanupStaleTemps(tmpDir);

  const stop = new AbortController();
  const signal = AbortSignal.any([opts.signal, stop.signal]);
  let read = 0;
  const onRead = (n: number) => {
    read += n;
    opts.onProgress?.(read);
  };
  const blockSize = BLOCK_SIZE;
  const job = async (n: number, sources: Source[]) => {
    if (ref && ref.list.blockSize === blockSize) {
      for (const s of sources) {
        if ('size' in s) {
          const m = await ref.blockMap(s.path, signal);
          if (m) s.reference = m;
        }
      }
    }
    return storeObject({ storage, config, backup: opts.backup, dataDir: opts.dataDir, tmpDir, key: backupKey(opts.backup, dataObjectName(n)), n, sources, blockSize, signal, onRead });
  };

  const stored: StoredObject[] = [];
  let next = 0;
  let failure: unknown;
  const worker = async () => {
    while (next < plan.length && !signal.aborted) {
      const o = plan[next++]!;
      const sources = o.files.map((f) => ({ index: rest[f.index]!, path: files[rest[f.index]!]!.path, size: f.size }));
      stored[o.n] = await job(o.n, sources);
    }
  };
  const workers = Array.from({ length: Math.max(1, Math.min(opts.jobs, plan.length)) }, () =>
    worker().catch((e: unknown) => {
      // The first failure is the one to report; the others are mostly its abort.
      failure ??= e;
      stop.abort(e);
    }),
  );
  await Promise.all(workers);
  try {
    if (failure !== undefined) throw opts.signal.aborted ? opts.signal.reason : failure;
    if (opts.signal.aborted) throw opts.signal.reason;
    let n = plan.length;
    if (control >= 0) {
      stored[n] = await job(n, [{ index: control, path: CONTROL_FILE, size: files[control]!.size ?? 0 }]);
      n++;
    }
    const extra = typeof opts.extra === 'function' ? await opts.extra() : opts.extra;
    if (extra.length > 0) stored[n] = await job(n, extra.map((x, i) => ({ index: files.length + i, path: x.path, body: x.body })));
    const up = assemble({ backup: opts.backup, blockSize, walked: opts.entries, files, extra, stored, unchanged, ...(ref ? { reference: ref } : {}) });
    if (ref) log.info(`backup ${opts.backup}: ${up.filesUnchanged} files unchanged since ${ref.info.id} (not read), ${up.filesRead} read`);
    return up;
  } catch (e) {
    await removeIncompleteBackup(storage, config, opts.backup);
    throw e;
  }
}

interface AssembleInput {
  backup: string;
  blockSize: number;
  walked: WalkedEntry[];
  files: WalkedEntry[];
  extra: ExtraFiles;
  stored: StoredObject[];
  unchanged: Set<number>;
  reference?: Reference;
}

/** The file list: the walk's order (parents first), files where they were stored, vanished ones left out. */
function assemble(x: AssembleInput): UploadedFiles {
  const { backup, stored, reference: ref } = x;
  const where = new Map<number, { object: number; read: StoredObject['files'][number] }>();
  for (const o of stored) for (const f of o.files) where.set(f.index, { object: o.n, read: f });
  const objects: DataObject[] = stored.map((o) => ({ name: dataObjectName(o.n), backup, size: o.size, sha256: o.sha256, storedBytes: o.storedBytes, codec: o.codec }));
  const storedBytes = stored.reduce((a, o) => a + o.storedBytes + o.mapBytes, 0);
  const carried = new ObjectCarrier(objects, ref?.list);
  const entries: Entry[] = [];
  let sizeBytes = 0;
  let filesRead = 0;
  let filesUnchanged = 0;
  const fileIndex = new Map(x.files.map((f, i) => [f, i]));
  // pg_backup_stop's backup_label is the one that counts, never a stray file of that name.
  const extraPaths = new Set(x.extra.map((e) => e.path));
  const addFile = (path: string, i: number, walked?: WalkedEntry) => {
    const before = ref?.byPath.get(path);
    if (x.unchanged.has(i) && before && walked) {
      filesUnchanged++;
      sizeBytes += before.size;
      entries.push({ ...before, mode: walked.mode & 0o7777, extents: carried.extents(before.extents) });
      return;
    }
    const w = where.get(i);
    if (!w) return; // vanished
    const { read } = w;
    filesRead++;
    sizeBytes += read.size;
    const whole = read.stored.length === 1 && read.stored[0]!.size === read.size;
    const extents =
      read.size === 0 ? [] : whole ? [{ object: w.object, offset: read.offset, size: read.size }] : pieceExtents(read.size, read.stored, w.object, read.offset, carried.extents(before?.extents ?? []));
    const blocks = read.blocks ? { blocks: { backup, ...read.blocks } } : {};
    entries.push({ type: 'file', path, mode: read.mode, size: read.size, mtimeMs: read.mtimeMs, sha256: read.sha256, extents, ...blocks });
  };
  for (const e of x.walked) {
    if (e.type === 'dir') entries.push({ type: 'dir', path: e.path, mode: e.mode & 0o7777 });
    else if (e.type === 'link') entries.push({ type: 'link', path: e.path, mode: e.mode & 0o7777, target: e.target ?? '' });
    else if (!extraPaths.has(e.path)) addFile(e.path, fileIndex.get(e)!, e);
  }
  x.extra.forEach((e, i) => addFile(e.path, x.files.length + i));
  const list: FileList = {
    format: 2,
    backup,
    type: ref ? 'incremental' : 'full',
    ...(ref ? { reference: ref.info.id } : {}),
    blockSize: x.blockSize,
    objects,
    entries,
  };
  return { list, sizeBytes, storedBytes, filesRead, filesUnchanged };
}

/**
 * Not read again: a file with the size and mtime it had in the reference, last modified at least
 * MTIME_GUARD_MS before the reference started. Then any write after the reference read it carries a
 * later mtime even where mtimes are coarse (1 s on ext3 and HFS+, 2 s on FAT/exFAT) or stamped by
 * another clock (an NFS server's, a few seconds off the database host's, which stamps START TIME).
 */
export const MTIME_GUARD_MS = 10_000;

function unchangedSince(f: WalkedEntry, ref: Reference): boolean {
  const before = ref.byPath.get(f.path);
  if (!before || f.size !== before.size || f.mtimeMs !== before.mtimeMs) return false;
  return before.mtimeMs < Date.parse(ref.info.startTime) - MTIME_GUARD_MS;
}

/** The reference's objects in this list, each once, appended after this backup's own. */
class ObjectCarrier {
  private readonly index = new Map<number, number>();

  constructor(
    private readonly objects: DataObject[],
    private readonly from: FileList | undefined,
  ) {}

  extents(extents: readonly Extent[]): Extent[] {
    return extents.map((e) => ({ ...e, object: this.carry(e.object) }));
  }

  private carry(i: number): number {
    let n = this.index.get(i);
    if (n === undefined) {
      n = this.objects.length;
      this.objects.push({ ...this.from!.objects[i]! });
      this.index.set(i, n);
    }
    return n;
  }
}
