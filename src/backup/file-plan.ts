import { backupError } from '../common/errors.js';
import type { BackupInfo } from './backup-info.js';
import { backupKey } from './catalog.js';
import type { DataObject, DirEntry, FileEntry, FileList } from './file-list.js';
import { TablespaceRouter, type TablespacePlan } from './tablespaces.js';

// What backup-fetch does with a format-2 file list, decided before anything is written: the
// directories to create first, and per data object the files to cut out of it in offset order.
// parseFileList has checked every field; this refuses what the restore cannot do safely.

/** A file stored whole in one object: bytes [offset, offset + size) of it. */
export type Piece = FileEntry & { object: number; offset: number };

export interface ObjectPlan {
  /** Index in FileList.objects. */
  index: number;
  object: DataObject;
  /** backups/<backup>/<name>. */
  key: string;
  /** Its files, by offset, none overlapping. */
  files: Piece[];
  /** The tablespace (OID) whose location these files go to (paths relative to it); else the data directory. */
  tablespace?: string;
}

export interface RestorePlan {
  backup: string;
  dirs: DirEntry[];
  /** Empty files: no object holds any of their bytes; created with the directories. */
  empty: FileEntry[];
  /** Objects with at least one file, in list order (one per root an object has files for). */
  objects: ObjectPlan[];
  /** Tablespaces: their directories and empty files, relative to their locations. */
  tablespaces: TablespacePlan[];
  fileCount: number;
  fileBytes: number;
  /** Uncompressed bytes of the objects to read (the progress total). */
  objectBytes: number;
}

export function planRestore(list: FileList, backup: BackupInfo, what: string): RestorePlan {
  const bad = (why: string): never => {
    throw backupError(`${what}: ${why}; refusing to restore backup ${backup.id}`);
  };
  const keys = new Set<string>();
  for (const o of list.objects) {
    // Objects of earlier backups come with incremental backups (a later round), which will check
    // that the backup they name exists and is older; until then a list only names its own objects.
    if (o.backup !== backup.id) bad(`${o.name} belongs to backup ${o.backup}, not to this one`);
    const key = backupKey(o.backup, o.name);
    if (keys.has(key)) bad(`${o.name} is listed twice`);
    keys.add(key);
  }
  const dirs: DirEntry[] = [];
  // Pieces per object and root ('' the data directory, else a tablespace OID).
  const byObject = new Map<number, Map<string, Piece[]>>();
  const empty: FileEntry[] = [];
  const router = new TablespaceRouter(bad);
  let fileCount = 0;
  let fileBytes = 0;
  for (const listed of list.entries) {
    if (listed.type === 'link') {
      router.addLink(listed);
      continue;
    }
    const { tablespace, entry: e } = router.route(listed);
    if (e.type === 'dir') (tablespace?.dirs ?? dirs).push(e);
    if (e.type !== 'file') continue;
    fileCount++;
    fileBytes += e.size;
    if (e.extents.length === 0) {
      (tablespace?.empty ?? empty).push(e);
      continue;
    }
    if (e.extents.length > 1) bad(`${e.path} is stored in ${e.extents.length} pieces (an incremental backup); restoring those is not supported yet`);
    const { object, offset } = e.extents[0]!;
    const roots = byObject.get(object) ?? new Map<string, Piece[]>();
    const files = roots.get(tablespace?.oid ?? '') ?? [];
    files.push({ ...e, object, offset });
    roots.set(tablespace?.oid ?? '', files);
    byObject.set(object, roots);
  }
  if (fileBytes !== backup.sizeBytes) bad(`the files add up to ${fileBytes} bytes, backup.json records ${backup.sizeBytes}`);
  const objects: ObjectPlan[] = [];
  let objectBytes = 0;
  list.objects.forEach((object, index) => {
    const roots = byObject.get(index);
    if (!roots) return;
    // An object with files for several roots (walvault packs each root apart) is fetched once per root.
    for (const [root, files] of roots) {
      files.sort((a, b) => a.offset - b.offset || a.size - b.size);
      let end = 0;
      for (const f of files) {
        if (f.offset < end) bad(`${f.path} overlaps the file before it in ${object.name}`);
        end = f.offset + f.size;
      }
      objects.push({ index, object, key: backupKey(object.backup, object.name), files, ...(root ? { tablespace: root } : {}) });
      objectBytes += object.size;
    }
  });
  return { backup: backup.id, dirs, empty, objects, tablespaces: [...router.tablespaces.values()], fileCount, fileBytes, objectBytes };
}
