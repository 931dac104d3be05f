import { lstatSync, type Stats } from 'node:fs';
import { readdir, readlink, realpath } from 'node:fs/promises';
import { isAbsolute, join, relative, resolve, sep } from 'node:path';
import { backupError } from '../common/errors.js';
import { log } from '../common/log.js';
import { safeRelativePath } from './file-list.js';

// What a file-level backup copies from a running data directory: the rules of PostgreSQL's own base
// backup (sendDir in src/backend/backup/basebackup.c, PostgreSQL 15), so that a restore of either
// kind of backup holds the same files:
//  - anything named pgsql_tmp* (temporary files and directories), anywhere;
//  - the files in EXCLUDED_FILES, anywhere (pg_internal.init* by prefix);
//  - the contents of the directories in EXCLUDED_CONTENTS (recreated or cleared at server start),
//    anywhere; the directories themselves are kept, empty, for their permissions;
//  - pg_wal: an empty directory plus pg_wal/archive_status (the WAL comes from the archive);
//  - in database directories (base/<oid>, pg_tblspc/<oid>/PG_<major>_<catversion>/<oid>): every
//    fork of an unlogged relation except its init fork, and temporary relations (t<n>_<oid>...);
//  - symbolic links are kept only as pg_tblspc/<oid> (tablespaces), each followed by its target's
//    PG_<major>_<catversion> directory (this server's, as sendTablespace sends; other versions'
//    directories in the location are not this cluster's), listed as pg_tblspc/<oid>/PG_.../..., as
//    in PostgreSQL's backup manifest; pg_wal or an excluded directory
//    that is a link becomes a plain directory; any other link or special file is skipped, with a
//    warning (PostgreSQL: "skipping special file");
//  - global/pg_control comes last: PostgreSQL copies it after everything else.

export interface WalkedEntry {
  type: 'file' | 'dir' | 'link';
  /** Relative to the data directory, '/'-separated. */
  path: string;
  /** Permission bits. */
  mode: number;
  size?: number;
  mtimeMs?: number;
  /** 'link' entries: the absolute target. */
  target?: string;
}

const TEMP_PREFIX = 'pgsql_tmp';
const EXCLUDED_FILES = new Set(['postgresql.auto.conf.tmp', 'current_logfiles.tmp', 'backup_label', 'tablespace_map', 'backup_manifest', 'postmaster.pid', 'postmaster.opts']);
const EXCLUDED_PREFIXES = ['pg_internal.init'];
const EXCLUDED_CONTENTS = new Set(['pg_stat_tmp', 'pg_replslot', 'pg_dynshmem', 'pg_notify', 'pg_serial', 'pg_snapshots', 'pg_subtrans']);
const CONTROL_FILE = 'global/pg_control';
/** Names stat'ed between two turns of the event loop. */
const STAT_BATCH = 2000;

/** Fork suffixes as PostgreSQL's forkname_chars reads them ("main" is never written as a suffix). */
const FORK = '(?:_(fsm|vm|init))?';
const RELATION = new RegExp(`^(\\d{1,10})${FORK}(?:\\.\\d+)?$`);
const TEMP_RELATION = new RegExp(`^t\\d+_\\d+${FORK}(?:\\.\\d+)?$`);

/** A relation file name: its relfilenode and fork ('main' when there is no suffix), or undefined. */
export function parseRelationFileName(name: string): { relNumber: string; fork: 'main' | 'fsm' | 'vm' | 'init' } | undefined {
  const m = RELATION.exec(name);
  if (!m) return undefined;
  return { relNumber: m[1]!, fork: (m[2] as 'fsm' | 'vm' | 'init' | undefined) ?? 'main' };
}

export function isTempRelationFileName(name: string): boolean {
  return TEMP_RELATION.test(name);
}

/**
 * Files of unlogged relations left out of a backup: every fork but the init fork of a relation that
 * has one (`<relfilenode>_init` among `names`). At recovery's end PostgreSQL recreates the main fork
 * from the init fork.
 */
export function unloggedForkExcluded(name: string, names: ReadonlySet<string>): boolean {
  const rel = parseRelationFileName(name);
  return rel !== undefined && rel.fork !== 'init' && names.has(`${rel.relNumber}_init`);
}

function excludedName(name: string): boolean {
  return name.startsWith(TEMP_PREFIX) || EXCLUDED_FILES.has(name) || EXCLUDED_PREFIXES.some((p) => name.startsWith(p));
}

/** base/<digits>, or <digits> inside a tablespace's version directory (PG_<major>_<catversion>). */
function isDatabaseDir(relPath: string, serverVersion: number): boolean {
  const parts = relPath.split('/');
  const last = parts[parts.length - 1]!;
  if (!/^\d+$/.test(last)) return false;
  if (parts.length === 2 && parts[0] === 'base') return true;
  const parent = parts[parts.length - 2];
  return parent !== undefined && new RegExp(`^PG_${serverVersion}_\\d+$`).test(parent);
}

interface Named {
  name: string;
  st: Stats;
}

export interface WalkOptions {
  serverVersion: number;
  /**
   * PG_<major>_<catversion> (TABLESPACE_VERSION_DIRECTORY): the directory of each tablespace's
   * location that holds this cluster's files. Without it a tablespace is only its link.
   */
  tablespaceVersionDir?: string;
}

/** TABLESPACE_VERSION_DIRECTORY of a server: PG_<major>_<catalog version> (pg_control's catalog_version_no). */
export function tablespaceVersionDir(serverVersion: number, catalogVersion: number): string {
  return `PG_${serverVersion}_${catalogVersion}`;
}

export async function walkDataDirectory(dataDir: string, opts: WalkOptions): Promise<WalkedEntry[]> {
  const root = resolve(dataDir);
  const rootSt = statOrFail(root, root);
  if (!rootSt?.isDirectory()) throw backupError(`the data directory ${root} is not a directory`);
  // PostgreSQL's convert_link_to_directory: a linked directory is recorded with pg_dir_create_mode,
  // 0700 or 0750 as the data directory itself.
  const dirMode = rootSt.mode & 0o750;
  const out: WalkedEntry[] = [];
  let control: WalkedEntry | undefined;
  // Tablespace links first: one that points back inside the data directory must not be copied
  // twice (PostgreSQL's rpath), and the walk may reach that directory before pg_tblspc.
  const tablespaces = new Map<string, { target: string; inside?: string }>();
  const insideTablespaces = new Set<string>();
  for (const name of (await readNames(join(root, 'pg_tblspc'), root)) ?? []) {
    if (!statOrFail(join(root, 'pg_tblspc', name), root)?.isSymbolicLink()) continue;
    const t = await tablespaceTarget(join(root, 'pg_tblspc', name), root);
    if (!t) continue;
    tablespaces.set(name, t);
    if (t.inside !== undefined) insideTablespaces.add(t.inside);
  }

  const walk = async (relDir: string): Promise<void> => {
    const absDir = relDir ? join(root, relDir) : root;
    const children = await readNames(absDir, root);
    if (children === undefined) return; // vanished
    const dbDir = relDir !== '' && isDatabaseDir(relDir, opts.serverVersion);
    const nameSet = new Set(children);
    const kept = children.filter((name) => {
      if (excludedName(name)) return false;
      if (dbDir && (unloggedForkExcluded(name, nameSet) || isTempRelationFileName(name))) return false;
      return true;
    });
    const stats = await statAll(absDir, kept, root);
    for (const { name, st } of stats) {
      const rel = relDir ? `${relDir}/${name}` : name;
      if (!safeRelativePath(rel)) throw backupError(`cannot back up ${JSON.stringify(join(root, rel))}: its name has control characters or a backslash; rename or remove it`);
      const mode = st.mode & 0o7777;
      if (EXCLUDED_CONTENTS.has(name) && (st.isDirectory() || st.isSymbolicLink())) {
        out.push({ type: 'dir', path: rel, mode: st.isDirectory() ? mode : dirMode });
        continue;
      }
      if (rel === 'pg_wal') {
        const m = st.isDirectory() ? mode : dirMode;
        out.push({ type: 'dir', path: 'pg_wal', mode: m }, { type: 'dir', path: 'pg_wal/archive_status', mode: m });
        if (opts.serverVersion >= 17) out.push({ type: 'dir', path: 'pg_wal/summaries', mode: m });
        continue;
      }
      if (relDir === 'pg_tblspc' && st.isSymbolicLink()) {
        const target = tablespaces.get(name) ?? (await tablespaceTarget(join(absDir, name), root));
        if (target === undefined) continue;
        out.push({ type: 'link', path: rel, mode, target: target.target });
        const version = opts.tablespaceVersionDir;
        if (!version) continue;
        // Read through the link, as the engine reads the files later (join(dataDir, path)).
        const vst = statOrFail(join(absDir, name, version), root);
        if (!vst) continue; // dropped meanwhile, or a dangling link: only the link is recorded
        if (!vst.isDirectory()) {
          log.warn(`skipping ${join(target.target, version)}: not a directory`);
          continue;
        }
        out.push({ type: 'dir', path: `${rel}/${version}`, mode: vst.mode & 0o7777 });
        await walk(`${rel}/${version}`);
        continue;
      }
      if (st.isDirectory()) {
        out.push({ type: 'dir', path: rel, mode });
        if (!insideTablespaces.has(rel)) await walk(rel);
      } else if (st.isFile()) {
        const entry: WalkedEntry = { type: 'file', path: rel, mode, size: st.size, mtimeMs: st.mtimeMs };
        if (rel === CONTROL_FILE) control = entry;
        else out.push(entry);
      } else {
        log.warn(`skipping special file ${join(root, rel)}${st.isSymbolicLink() ? ' (a symbolic link outside pg_tblspc)' : ''}`);
      }
    }
  };
  await walk('');
  if (control) out.push(control);
  return out;
}

/** Sorted names of a directory; undefined if it vanished. Names must be UTF-8 to be listed and restored. */
async function readNames(absDir: string, root: string): Promise<string[] | undefined> {
  let raw: Buffer[];
  try {
    raw = await readdir(absDir, { encoding: 'buffer' });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw fsError(e, absDir, root);
  }
  // Byte order of the names, the same on every machine (no locale).
  return raw
    .sort(Buffer.compare)
    .map((raw) => {
      const name = raw.toString('utf8');
      if (!Buffer.from(name, 'utf8').equals(raw)) {
        throw backupError(`cannot back up a file in ${absDir} whose name is not valid UTF-8 (${JSON.stringify(name)}); rename or remove it`);
      }
      return name;
    });
}

/**
 * lstat of every name, synchronously: on a directory of 100,000 relation files that is several times
 * faster than the thread pool's round trips. The event loop gets a turn every STAT_BATCH names, so a
 * signal or an abort is still seen during the walk of a large directory.
 */
async function statAll(absDir: string, names: string[], root: string): Promise<Named[]> {
  const out: Named[] = [];
  for (let i = 0; i < names.length; i++) {
    if (i > 0 && i % STAT_BATCH === 0) await new Promise((r) => setImmediate(r));
    const st = statOrFail(join(absDir, names[i]!), root);
    if (st) out.push({ name: names[i]!, st });
  }
  return out;
}

/** lstat; undefined when the file vanished meanwhile (PostgreSQL drops and recycles files all the time). */
function statOrFail(path: string, root: string): Stats | undefined {
  try {
    return lstatSync(path, { throwIfNoEntry: false });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw fsError(e, path, root);
  }
}

function fsError(e: unknown, path: string, root: string): Error {
  const code = (e as NodeJS.ErrnoException).code ?? 'EUNKNOWN';
  const hint = code === 'EACCES' || code === 'EPERM' ? ` (run backup-push as the data directory's owner, ${root})` : '';
  return backupError(`cannot read ${path} in the data directory: ${code}${hint}`, { cause: e });
}

/** The absolute target of a tablespace link, and its path inside the data directory if it points there. */
async function tablespaceTarget(link: string, root: string): Promise<{ target: string; inside?: string } | undefined> {
  let raw: string;
  try {
    raw = await readlink(link);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw fsError(e, link, root);
  }
  const target = isAbsolute(raw) ? raw : resolve(join(link, '..'), raw);
  let real: string | undefined;
  let realRoot = root;
  try {
    real = await realpath(target);
    realRoot = await realpath(root);
  } catch {
    // A dangling tablespace link is recorded as it is; the restore decides.
  }
  if (real !== undefined) {
    const rel = relative(realRoot, real);
    if (rel && !rel.startsWith('..') && !isAbsolute(rel)) return { target, inside: rel.split(sep).join('/') };
  }
  return { target };
}
