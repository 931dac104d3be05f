import { backupError } from '../common/errors.js';
import type { BackupInfo } from './backup-info.js';
import { backupKey } from './catalog.js';
import type { DataObject, DirEntry, FileEntry, FileList } from './file-list.js';

// What backup-fetch does with a format-2 file list, decided before anything is written: the
// directories to create first, and per data object the bytes to cut out of it in offset order.
// parseFileList has checked every field; this refuses what the restore cannot do safely.
//
// A file stored whole (one extent) is cut out and written as it passes, its SHA-256 checked on the
// way. A file in pieces (an incremental backup: several extents, possibly in objects of earlier
// backups) is created empty with the directories; each extent is then written at its position in
// the file (the sum of the sizes of the extents before it) by whichever job fetches its object, and
// the whole file is checked by re-reading it once every object is in (pieced-files.ts).

/** Bytes [offset, offset + size) of an object, bound for `path`: the whole file, or (`position`) one extent of it. */
export interface Piece {
  path: string;
  mode: number;
  mtimeMs: number;
  /** The whole file's SHA-256; checked as the bytes pass only when the piece is the whole file. */
  sha256: string;
  object: number;
  offset: number;
  size: number;
  /** Where in the file these bytes go; undefined for a file stored whole (written from its start, created by this piece). */
  position?: number;
}

export interface ObjectPlan {
  /** Index in FileList.objects. */
  index: number;
  object: DataObject;
  /** backups/<backup>/<name>. */
  key: string;
  /** Its pieces, by offset, none overlapping. */
  files: Piece[];
}

export interface RestorePlan {
  backup: string;
  dirs: DirEntry[];
  /** Empty files: no object holds any of their bytes; created with the directories. */
  empty: FileEntry[];
  /** Files in several extents: created empty with the directories, checked by re-reading at the end. */
  pieced: FileEntry[];
  /** Objects with at least one piece, in list order. */
  objects: ObjectPlan[];
  /** Earlier backups whose objects this one uses (incremental), to check before anything is written. */
  references: string[];
  fileCount: number;
  fileBytes: number;
  /** Uncompressed bytes of the objects to read (the progress total). */
  objectBytes: number;
}

/** Paths of the files `op` creates (pieces of whole files): what a failed attempt leaves to remove. */
export function createdBy(op: ObjectPlan): string[] {
  return op.files.filter((f) => f.position === undefined).map((f) => f.path);
}

export function planRestore(list: FileList, backup: BackupInfo, what: string): RestorePlan {
  const bad = (why: string): never => {
    throw backupError(`${what}: ${why}; refusing to restore backup ${backup.id}`);
  };
  const keys = new Set<string>();
  const references = new Set<string>();
  for (const o of list.objects) {
    // Only an incremental backup stands on others; loadRestorePlan then checks each one named.
    if (o.backup !== backup.id) {
      if (list.type !== 'incremental') bad(`${o.name} belongs to backup ${o.backup}, not to this one`);
      references.add(o.backup);
    }
    const key = backupKey(o.backup, o.name);
    if (keys.has(key)) bad(`${o.name}${o.backup !== backup.id ? ` of backup ${o.backup}` : ''} is listed twice`);
    keys.add(key);
  }
  const dirs: DirEntry[] = [];
  const byObject = new Map<number, Piece[]>();
  const empty: FileEntry[] = [];
  const pieced: FileEntry[] = [];
  let fileCount = 0;
  let fileBytes = 0;
  const add = (p: Piece) => {
    const files = byObject.get(p.object) ?? [];
    files.push(p);
    byObject.set(p.object, files);
  };
  for (const e of list.entries) {
    if (e.type === 'link') {
      // The link would point at the original cluster's live tablespace, whose files this backup
      // does not hold: recovery on it would write there.
      bad(`${e.path} is a symbolic link (a tablespace); restoring tablespaces is not supported yet`);
    }
    if (e.type === 'dir') dirs.push(e);
    if (e.type !== 'file') continue;
    fileCount++;
    fileBytes += e.size;
    if (e.extents.length === 0) {
      empty.push(e);
      continue;
    }
    const base = { path: e.path, mode: e.mode, mtimeMs: e.mtimeMs, sha256: e.sha256 };
    if (e.extents.length === 1) {
      const x = e.extents[0]!;
      add({ ...base, object: x.object, offset: x.offset, size: x.size });
      continue;
    }
    pieced.push(e);
    let position = 0;
    for (const x of e.extents) {
      add({ ...base, object: x.object, offset: x.offset, size: x.size, position });
      position += x.size;
    }
  }
  if (fileBytes !== backup.sizeBytes) bad(`the files add up to ${fileBytes} bytes, backup.json records ${backup.sizeBytes}`);
  const objects: ObjectPlan[] = [];
  let objectBytes = 0;
  list.objects.forEach((object, index) => {
    const files = byObject.get(index);
    if (!files) return;
    files.sort((a, b) => a.offset - b.offset || a.size - b.size);
    let end = 0;
    for (const f of files) {
      if (f.offset < end) bad(`${f.path} overlaps the file before it in ${object.name}`);
      end = f.offset + f.size;
    }
    objects.push({ index, object, key: backupKey(object.backup, object.name), files });
    objectBytes += object.size;
  });
  return { backup: backup.id, dirs, empty, pieced, objects, references: [...references], fileCount, fileBytes, objectBytes };
}
