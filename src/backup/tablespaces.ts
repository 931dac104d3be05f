import { isAbsolute, relative, resolve } from 'node:path';
import { backupError, internalError, usageError } from '../common/errors.js';
import { controlChar } from '../common/control-chars.js';
import { tablespaceLinkOid, type DirEntry, type FileEntry, type LinkEntry } from './file-list.js';

// Tablespaces in a format-2 backup. backup-push records each pg_tblspc/<oid> link (with its original
// absolute target) and the files of its location's PG_<major>_<catversion> directory under
// pg_tblspc/<oid>/..., as PostgreSQL's backup manifest names them, plus pg_backup_stop's
// tablespace_map. backup-fetch restores each tablespace into its own root, a location it created or
// took by the data directory's rules (restore-roots.ts; --tablespace-map OID=DIR, default the
// original location, which must then be new or empty), never through the link; then it creates
// pg_tblspc/<oid> -> location, and rewrites tablespace_map to name the same locations: at recovery
// start PostgreSQL replaces every pg_tblspc/<oid> named there by a link to the path it names
// (read_tablespace_map, remove_tablespace_symlink), so both must agree. A location inside the data
// directory (PostgreSQL warns against it) is refused at restore: map it elsewhere.

const UNDER = /^pg_tblspc\/(\d{1,10})\/(.+)$/;
export const TABLESPACE_MAP = 'tablespace_map';

/** A path below pg_tblspc/<oid>/: the OID and the path inside the location. */
export function splitTablespacePath(path: string): { oid: string; rel: string } | undefined {
  const m = UNDER.exec(path);
  return m ? { oid: m[1]!, rel: m[2]! } : undefined;
}

/** What a restore writes into one tablespace location; paths relative to the location. */
export interface TablespacePlan {
  oid: string;
  /** Where it was when backed up (the link's target). */
  original: string;
  dirs: DirEntry[];
  empty: FileEntry[];
  /** Files in several extents (an incremental backup), created empty with the directories. */
  pieced: FileEntry[];
  /** Chosen by backup-fetch (chooseLocations): the directory the files are restored into. */
  location?: string;
  /** Resuming an interrupted restore: what the progress record in the location says is done. */
  done?: Set<string>;
}

/**
 * Sorts the entries of a file list by root: pg_tblspc/<oid> links become tablespaces, entries below
 * one go to it with paths relative to its location. `bad` throws (the list is refused).
 */
export class TablespaceRouter {
  readonly tablespaces = new Map<string, TablespacePlan>();
  constructor(private readonly bad: (why: string) => never) {}

  addLink(e: LinkEntry): void {
    const oid = tablespaceLinkOid(e.path);
    // The extractor writes no link; the only ones a restore makes are these, to chosen locations.
    if (oid === undefined) this.bad(`${e.path} is a symbolic link outside pg_tblspc/<oid>`);
    this.tablespaces.set(oid, { oid, original: e.target, dirs: [], empty: [], pieced: [] });
  }

  /** The tablespace an entry belongs to (and its path there), or undefined for the data directory. */
  route<T extends DirEntry | FileEntry>(e: T): { tablespace?: TablespacePlan; entry: T } {
    const s = splitTablespacePath(e.path);
    if (!s) return { entry: e };
    const tablespace = this.tablespaces.get(s.oid);
    // parseFileList puts parents first: an entry below pg_tblspc/<oid> without the link is below a directory.
    if (!tablespace) return { entry: e };
    return { tablespace, entry: { ...e, path: s.rel } };
  }
}

/** OID=DIR flags (repeatable) as a map; DIR must be absolute, as PostgreSQL's LOCATION. */
export function parseTablespaceMapFlags(specs: readonly string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const spec of specs) {
    const m = /^(\d{1,10})=([\s\S]+)$/.exec(spec);
    if (!m) throw usageError(`--tablespace-map ${JSON.stringify(spec)}: expected OID=DIR (the tablespace's OID, as in pg_tblspc/<oid>)`);
    const [, oid, dir] = m as unknown as [string, string, string];
    if (!isAbsolute(dir)) throw usageError(`--tablespace-map ${oid}=${dir}: the directory must be an absolute path`);
    if (controlChar(dir) !== undefined || dir.includes('\\')) throw usageError(`--tablespace-map ${oid}: the directory contains a control character or a backslash`);
    if (out.has(oid)) throw usageError(`--tablespace-map names tablespace ${oid} twice`);
    out.set(oid, resolve(dir));
  }
  return out;
}

const inside = (dir: string, path: string) => {
  const r = relative(dir, path);
  return r === '' || (!r.startsWith('..') && !isAbsolute(r));
};

/**
 * The location of every tablespace of the backup: --tablespace-map's, else the original one. Refuses
 * (before anything is written) a map naming no tablespace of the backup, a location inside the data
 * directory or holding it, and two tablespaces sharing or nesting locations.
 */
export function chooseLocations(tablespaces: Iterable<TablespacePlan>, flags: Map<string, string>, pgdata: string, backup: string): TablespacePlan[] {
  const list = [...tablespaces];
  for (const oid of flags.keys()) {
    if (!list.some((t) => t.oid === oid)) {
      const known = list.map((t) => t.oid).join(', ');
      throw usageError(`--tablespace-map ${oid}=...: backup ${backup} has no tablespace ${oid}${known ? ` (its tablespaces: ${known})` : ' (it has no tablespaces)'}`);
    }
  }
  for (const t of list) {
    const location = resolve(flags.get(t.oid) ?? t.original);
    const how = flags.has(t.oid) ? `--tablespace-map ${t.oid}=${location}` : `tablespace ${t.oid}'s original location ${location}`;
    if (inside(pgdata, location) || inside(location, pgdata)) {
      throw backupError(`${how} is inside the data directory ${pgdata} (or holds it); restore it elsewhere with --tablespace-map ${t.oid}=<dir>`);
    }
    const clash = list.find((o) => o !== t && o.location !== undefined && (inside(o.location, location) || inside(location, o.location)));
    if (clash) throw backupError(`${how} overlaps tablespace ${clash.oid}'s location ${clash.location}; give each its own directory with --tablespace-map`);
    t.location = location;
  }
  return list;
}

/** PostgreSQL's tablespace_map line: "<oid> <path>", with \n, \r and \ escaped by a backslash. */
export function tablespaceMapText(list: readonly TablespacePlan[]): string {
  return list.map((t) => `${t.oid} ${t.location!.replace(/[\\\n\r]/g, (c) => `\\${c}`)}\n`).join('');
}

/** The directory a tablespace's files are restored into (chosen before the restore starts). */
export function tablespaceRoot(t: TablespacePlan | undefined): string {
  if (!t?.location) throw internalError(`a tablespace of the restore has no location chosen`);
  return t.location;
}
