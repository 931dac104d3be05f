import { backupError } from '../common/errors.js';
import type { BackupInfo } from './backup-info.js';
import { backupKey } from './catalog.js';
import type { DataObject, DirEntry, FileEntry, FileList } from './file-list.js';
import { TablespaceRouter, type TablespacePlan } from './tablespaces.js';

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
  /** The tablespace (OID) whose location these pieces go to (paths relative to it); else the data directory. */
  tablespace?: string;
}

export interface RestorePlan {
  backup: string;
  dirs: DirEntry[];
  /** Empty files: no object holds any of their bytes; created with the directories. */
  empty: FileEntry[];
  /** Files in several extents: created empty with the directories, checked by re-reading at the end. */
  pieced: FileEntry[];
  /** Objects with at least one piece, in list order (one plan per root an object has pieces for). */
  objects: ObjectPlan[];
  /** Tablespaces: their directories and files, relative to their locations. */
  tablespaces: TablespacePlan[];
  /** [restored as, final name]: HELD_BACK files of this list, renamed last. */
  renames: Array<[string, string]>;
  /** Earlier backups whose objects this one uses (incremental), to check before anything is written. */
  references: string[];
  fileCount: number;
  fileBytes: number;
  /** Uncompressed bytes of the objects to read (the progress total). */
  objectBytes: number;
}

/**
 * Restored under another name and renamed into place once everything else is in (pieced-files.ts):
 * PostgreSQL does not start on a directory without global/pg_control, so a restore killed half-way
 * leaves nothing it could start on.
 */
export const HELD_BACK: Readonly<Record<string, string>> = { 'global/pg_control': 'global/pg_control.walvault-restore' };

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
  // Pieces per object and root ('' the data directory, else a tablespace OID).
  const byObject = new Map<number, Map<string, Piece[]>>();
  const empty: FileEntry[] = [];
  const pieced: FileEntry[] = [];
  let fileCount = 0;
  let fileBytes = 0;
  const add = (p: Piece, root: string) => {
    const roots = byObject.get(p.object) ?? new Map<string, Piece[]>();
    roots.set(root, [...(roots.get(root) ?? []), p]);
    byObject.set(p.object, roots);
  };
  const router = new TablespaceRouter(bad);
  const renames: Array<[string, string]> = [];
  const temporary = new Set(Object.values(HELD_BACK));
  for (const listed of list.entries) {
    if (temporary.has(listed.path)) bad(`${listed.path} is a name backup-fetch keeps for itself`);
    if (listed.type === 'link') {
      router.addLink(listed);
      continue;
    }
    const held = listed.type === 'file' ? HELD_BACK[listed.path] : undefined;
    if (held) renames.push([held, listed.path]);
    const { tablespace, entry: e } = router.route(held ? { ...listed, path: held } : listed);
    const root = tablespace?.oid ?? '';
    if (e.type === 'dir') (tablespace?.dirs ?? dirs).push(e);
    if (e.type !== 'file') continue;
    fileCount++;
    fileBytes += e.size;
    if (e.extents.length === 0) {
      (tablespace?.empty ?? empty).push(e);
      continue;
    }
    const base = { path: e.path, mode: e.mode, mtimeMs: e.mtimeMs, sha256: e.sha256 };
    if (e.extents.length === 1) {
      const x = e.extents[0]!;
      add({ ...base, object: x.object, offset: x.offset, size: x.size }, root);
      continue;
    }
    (tablespace?.pieced ?? pieced).push(e);
    let position = 0;
    for (const x of e.extents) {
      add({ ...base, object: x.object, offset: x.offset, size: x.size, position }, root);
      position += x.size;
    }
  }
  if (fileBytes !== backup.sizeBytes) bad(`the files add up to ${fileBytes} bytes, backup.json records ${backup.sizeBytes}`);
  const objects: ObjectPlan[] = [];
  let objectBytes = 0;
  list.objects.forEach((object, index) => {
    const roots = byObject.get(index);
    if (!roots) return;
    // An object with pieces for several roots (walvault packs each root apart) is fetched once per root.
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
  const tablespaces = [...router.tablespaces.values()];
  return { backup: backup.id, dirs, empty, pieced, objects, tablespaces, renames, references: [...references], fileCount, fileBytes, objectBytes };
}

/** Every file of the plan once: the name it is restored as (`path`) and its final name. */
export function planFiles(plan: RestorePlan): Array<{ path: string; final: string; size: number; sha256: string }> {
  const final = new Map(plan.renames);
  const out: Array<{ path: string; final: string; size: number; sha256: string }> = [];
  const add = (path: string, size: number, sha256: string) => out.push({ path, final: final.get(path) ?? path, size, sha256 });
  for (const f of [...plan.empty, ...plan.pieced]) add(f.path, f.size, f.sha256);
  for (const o of plan.objects) for (const p of o.files) if (p.position === undefined) add(p.path, p.size, p.sha256);
  return out;
}

/**
 * backup-fetch --delta: the plan without the files already in place (`kept`, by the name they are
 * restored as); objects left with nothing to write are not fetched at all.
 */
export function withoutKept(plan: RestorePlan, kept: Set<string>): RestorePlan {
  const objects = plan.objects.map((o) => ({ ...o, files: o.files.filter((p) => !kept.has(p.path)) })).filter((o) => o.files.length > 0);
  return {
    ...plan,
    empty: plan.empty.filter((f) => !kept.has(f.path)),
    pieced: plan.pieced.filter((f) => !kept.has(f.path)),
    objects,
    objectBytes: objects.reduce((n, o) => n + o.object.size, 0),
  };
}
