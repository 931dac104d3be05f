// A format-2 backup (src/backup/file-list.ts) built by the test itself from a plain data directory
// (a real `pg_basebackup -Fp -X none` of a throwaway cluster), so backup-fetch's reader is tested
// against what the format says, independently of backup-push's writer: files in walk order, parents
// first; files smaller than bundleSize/8 packed one after the other into bundles of at most
// bundleSize, larger ones an object each; every object zstd-compressed with walvault's metadata;
// pg_basebackup's own backup_manifest as its own object (so pg_verifybackup checks the restore for
// real); files.json; backup.json last, from backup_label and the manifest.
import { createHash } from 'node:crypto';
import { lstat, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { zstdCompressSync } from 'node:zlib';
import type { BackupInfo } from '../../src/backup/backup-info.js';
import { makeBackupId } from '../../src/backup/catalog.js';
import { dataObjectName, serializeFileList, type DataObject, type Entry, type FileEntry, type FileList } from '../../src/backup/file-list.js';
import { parseBackupLabel } from '../../src/backup/label.js';
import { manifestWalSpan, parseBackupManifest } from '../../src/backup/manifest.js';
import { segmentOfEndLsn } from '../../src/wal/names.js';
import { putRaw, type TestStore } from './stores.js';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

export interface Format2Options {
  /** Repository prefix in the bucket (the `pg` of s3://bucket/pg). */
  prefix: string;
  bundleSize: number;
  systemIdentifier: string;
  walSegmentSize: number;
  /** Appended to the backup id (`_2`, ...) so one data directory can make several backups. */
  suffix?: string;
  /**
   * An incremental backup of the same data directory on top of `reference` (made from it before):
   * every file the reference stored as an object of its own is stored in three extents, the first
   * and last thirds in the reference's object, the middle third in an object of this backup.
   * The backup starts a second after the reference.
   */
  reference?: Format2Backup;
  /** Changes the list before it is written (a hostile or damaged files.json); backup.json follows it. */
  mutate?: (list: FileList) => void;
}

export interface Format2Backup {
  id: string;
  list: FileList;
  info: BackupInfo;
  /** Object keys relative to the bucket. */
  keys: string[];
}

/** Every file and directory under `dir` (relative paths), parents first, names sorted. */
async function walk(dir: string, rel = ''): Promise<Array<{ path: string; dir: boolean; mode: number; mtimeMs: number }>> {
  const out: Array<{ path: string; dir: boolean; mode: number; mtimeMs: number }> = [];
  for (const name of (await readdir(join(dir, rel))).sort()) {
    const path = rel ? `${rel}/${name}` : name;
    if (path === 'backup_manifest') continue;
    const st = await lstat(join(dir, path));
    if (st.isDirectory()) {
      out.push({ path, dir: true, mode: st.mode & 0o7777, mtimeMs: st.mtimeMs });
      out.push(...(await walk(dir, path)));
    } else if (st.isFile()) out.push({ path, dir: false, mode: st.mode & 0o7777, mtimeMs: st.mtimeMs });
    else throw new Error(`format2-fixture: ${path} is neither a file nor a directory`);
  }
  return out;
}

export async function writeFormat2Backup(store: TestStore, bucket: string, dataDir: string, opts: Format2Options): Promise<Format2Backup> {
  const label = parseBackupLabel(await readFile(join(dataDir, 'backup_label'), 'utf8'));
  const manifest = await readFile(join(dataDir, 'backup_manifest'));
  const span = manifestWalSpan(parseBackupManifest(manifest.toString('utf8')));
  const startTime = new Date((label.startTime ?? new Date()).getTime() + (opts.reference ? 1000 : 0));
  const id = makeBackupId(label.startSegment, startTime) + (opts.suffix ?? '');
  const base = `${opts.prefix}/backups/${id}`;
  const keys: string[] = [];
  const put = async (name: string, body: Buffer, codec: 'zstd' | 'none'): Promise<number> => {
    const stored = codec === 'zstd' ? zstdCompressSync(body) : body;
    await putRaw(store, bucket, `${base}/${name}`, stored, { 'walvault-sha256': sha256(body), 'walvault-size': String(body.length), 'walvault-codec': codec });
    keys.push(`${base}/${name}`);
    return stored.length;
  };

  const entries: Entry[] = [];
  const objects: DataObject[] = [];
  // The reference's objects this one uses, by their index there.
  const borrowed = new Map<number, number>();
  const refWhole = (r: Format2Backup, path: string, digest: string): { object: number; offset: number } | undefined => {
    const e = r.list.entries.find((x): x is FileEntry => x.type === 'file' && x.path === path);
    const x = e?.extents[0];
    if (!e || !x || e.sha256 !== digest || e.extents.length !== 1 || e.size < 3 || r.list.entries.some((y) => y !== e && y.type === 'file' && y.extents.some((z) => z.object === x.object))) return undefined;
    let n = borrowed.get(x.object);
    if (n === undefined) {
      objects.push({ ...r.list.objects[x.object]! });
      bodies.push(Buffer.alloc(0));
      n = objects.length - 1;
      borrowed.set(x.object, n);
    }
    return { object: n, offset: x.offset };
  };
  let bundle: Buffer[] = [];
  let bundleBytes = 0;
  const bodies: Buffer[] = [];
  const newObject = (parts: Buffer[]): number => {
    const body = Buffer.concat(parts);
    objects.push({ name: dataObjectName(objects.length), backup: id, size: body.length, sha256: sha256(body), storedBytes: 0, codec: 'zstd' });
    bodies.push(body);
    return objects.length - 1;
  };
  // Files of the open bundle get its index once it is closed.
  let pending: FileEntry[] = [];
  const closeBundle = () => {
    if (bundle.length === 0) return;
    const n = newObject(bundle);
    for (const e of pending) for (const x of e.extents) x.object = n;
    bundle = [];
    bundleBytes = 0;
    pending = [];
  };
  for (const w of await walk(dataDir)) {
    if (w.dir) {
      entries.push({ type: 'dir', path: w.path, mode: w.mode });
      continue;
    }
    const bytes = await readFile(join(dataDir, w.path));
    const extent = { object: -1, offset: 0, size: bytes.length };
    const file: FileEntry = { type: 'file', path: w.path, mode: w.mode, size: bytes.length, mtimeMs: w.mtimeMs, sha256: sha256(bytes), extents: bytes.length > 0 ? [extent] : [] };
    const ref = opts.reference && refWhole(opts.reference, w.path, sha256(bytes));
    if (ref) {
      const a = Math.floor(bytes.length / 3);
      const b = Math.floor((2 * bytes.length) / 3);
      file.extents = [
        { object: ref.object, offset: ref.offset, size: a },
        { object: newObject([bytes.subarray(a, b)]), offset: 0, size: b - a },
        { object: ref.object, offset: ref.offset + b, size: bytes.length - b },
      ];
    } else if (bytes.length >= opts.bundleSize / 8) {
      extent.object = newObject([bytes]);
    } else {
      if (bundleBytes + bytes.length > opts.bundleSize) closeBundle();
      extent.offset = bundleBytes;
      bundle.push(bytes);
      bundleBytes += bytes.length;
      pending.push(file);
    }
    entries.push(file);
  }
  closeBundle();
  let storedBytes = 0;
  for (let i = 0; i < objects.length; i++) {
    if (objects[i]!.backup !== id) continue;
    objects[i]!.storedBytes = await put(objects[i]!.name, bodies[i]!, 'zstd');
    storedBytes += objects[i]!.storedBytes;
  }

  const list: FileList = { format: 2, backup: id, type: opts.reference ? 'incremental' : 'full', ...(opts.reference ? { reference: opts.reference.id } : {}), objects, entries };
  opts.mutate?.(list);
  const listBody = serializeFileList(list);
  storedBytes += await put('files.json', listBody, 'zstd');
  await put('backup_manifest', manifest, 'none');
  const sizeBytes = list.entries.reduce((n, e) => n + (e.type === 'file' ? e.size : 0), 0);
  const info: BackupInfo = {
    format: 2,
    method: 'files',
    id,
    label: label.label,
    startTime: startTime.toISOString(),
    stopTime: new Date(Date.now() + 1000).toISOString(),
    startLsn: label.startLsn,
    stopLsn: span.stopLsn,
    checkpointLsn: label.checkpointLsn,
    timeline: label.startTimeline,
    stopTimeline: span.stopTimeline,
    startSegment: label.startSegment,
    stopSegment: segmentOfEndLsn(span.stopLsn, span.stopTimeline, opts.walSegmentSize),
    walSegmentSize: opts.walSegmentSize,
    sizeBytes,
    sha256: sha256(listBody),
    storedBytes,
    codec: 'zstd',
    fileCount: parseBackupManifest(manifest.toString('utf8')).fileCount,
    filesBytes: parseBackupManifest(manifest.toString('utf8')).filesBytes,
    manifestSha256: sha256(manifest),
    pgVersion: 15,
    systemIdentifier: opts.systemIdentifier,
    backupFrom: label.backupFrom,
    serverStartTime: label.startTimeText,
    walvaultVersion: 'test-fixture',
  };
  await put('backup.json', Buffer.from(JSON.stringify(info, null, 2) + '\n'), 'none');
  return { id, list, info, keys };
}
