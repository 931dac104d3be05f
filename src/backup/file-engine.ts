import { join } from 'node:path';
import type { Config } from '../common/config.js';
import { cleanupStaleTemps, ensureDir } from '../fs/atomic.js';
import type { Storage } from '../storage/types.js';
import { planObjects } from './bundle-plan.js';
import { backupKey } from './catalog.js';
import type { WalkedEntry } from './data-dir-walk.js';
import { removeIncompleteBackup } from './push-cleanup.js';
import { storeObject, type Source, type StoredObject } from './data-object.js';
import { dataObjectName, type Entry, type FileList } from './file-list.js';
import { splitTablespacePath } from './tablespaces.js';

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
  signal: AbortSignal;
  /** Called with the number of file bytes read so far. */
  onProgress?: (bytesRead: number) => void;
}

export interface UploadedFiles {
  list: FileList;
  /** Total bytes of the files, as read. */
  sizeBytes: number;
  /** What the store holds for the data objects. */
  storedBytes: number;
}

export async function uploadFiles(storage: Storage, config: Config, opts: UploadFilesOptions): Promise<UploadedFiles> {
  const files = opts.entries.filter((e) => e.type === 'file');
  // pg_control is read after every other file, as PostgreSQL's own base backup does.
  const control = files.findIndex((f) => f.path === CONTROL_FILE);
  const rest = files.flatMap((f, i) => (i === control ? [] : [i]));
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
  const job = (n: number, sources: Source[]) =>
    storeObject({ storage, config, backup: opts.backup, dataDir: opts.dataDir, tmpDir, key: backupKey(opts.backup, dataObjectName(n)), n, sources, signal, onRead });

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
    return assemble(opts.backup, opts.entries, files, extra, stored);
  } catch (e) {
    await removeIncompleteBackup(storage, config, opts.backup);
    throw e;
  }
}

/** The file list: the walk's order (parents first), files where they were stored, vanished ones left out. */
function assemble(backup: string, walked: WalkedEntry[], files: WalkedEntry[], extra: ExtraFiles, stored: StoredObject[]): UploadedFiles {
  const where = new Map<number, { object: number; read: StoredObject['files'][number] }>();
  for (const o of stored) for (const f of o.files) where.set(f.index, { object: o.n, read: f });
  const entries: Entry[] = [];
  let sizeBytes = 0;
  const fileIndex = new Map(files.map((f, i) => [f, i]));
  // pg_backup_stop's backup_label is the one that counts, never a stray file of that name.
  const extraPaths = new Set(extra.map((x) => x.path));
  const addFile = (path: string, i: number) => {
    const w = where.get(i);
    if (!w) return; // vanished
    const { read } = w;
    sizeBytes += read.size;
    const extents = read.size > 0 ? [{ object: w.object, offset: read.offset, size: read.size }] : [];
    entries.push({ type: 'file', path, mode: read.mode, size: read.size, mtimeMs: read.mtimeMs, sha256: read.sha256, extents });
  };
  for (const e of walked) {
    if (e.type === 'dir') entries.push({ type: 'dir', path: e.path, mode: e.mode & 0o7777 });
    else if (e.type === 'link') entries.push({ type: 'link', path: e.path, mode: e.mode & 0o7777, target: e.target ?? '' });
    else if (!extraPaths.has(e.path)) addFile(e.path, fileIndex.get(e)!);
  }
  extra.forEach((x, i) => addFile(x.path, files.length + i));
  const objects = stored.map((o) => ({ name: dataObjectName(o.n), backup, size: o.size, sha256: o.sha256, storedBytes: o.storedBytes, codec: o.codec }));
  const storedBytes = objects.reduce((a, o) => a + o.storedBytes, 0);
  return { list: { format: 2, backup, type: 'full', objects, entries }, sizeBytes, storedBytes };
}
