import { CODECS, type Codec } from '../codec/codec.js';
import { controlChar } from '../common/control-chars.js';
import { backupError } from '../common/errors.js';

// Backup format 2: a backup is a list of files (files.json) plus data objects, so that no single
// upload nears S3's limits (10,000 parts, 5 TiB) whatever the database size, objects are fetched and
// retried one by one, and later backups can refer to earlier objects.
//
//   <prefix>/backups/<id>/data/<NNNNNN>    a data object: the bytes of one large file, or of many small
//                                          files one after the other (a bundle); compressed as a whole,
//                                          metadata SHA-256/size/codec of the uncompressed bytes
//   <prefix>/backups/<id>/files.json       this list (compressed with the backup's codec)
//   <prefix>/backups/<id>/backup_manifest  PostgreSQL's backup manifest (pg_verifybackup at restore)
//   <prefix>/backups/<id>/backup.json      the sentinel, written last; sha256 = SHA-256 of files.json
//
// A file's bytes are its extents one after the other, each bytes [offset, offset + size) of an
// object's uncompressed content: one extent for a file stored whole, several for a file an
// incremental backup stored in part (its unchanged ranges name objects of earlier backups).
// Directories and symbolic links (tablespaces) are entries without an object. The list comes from the repository:
// every field is checked before it becomes a path, a size or an object key (backup-fetch runs as root).

export const FILE_LIST_OBJECT = 'files.json';
export const DATA_PREFIX = 'data/';

/** The key (below backups/<id>/) of data object number `n`. */
export function dataObjectName(n: number): string {
  return `${DATA_PREFIX}${String(n).padStart(6, '0')}`;
}

export interface DataObject {
  /** Below backups/<backup>/: dataObjectName(n). */
  name: string;
  /** The backup that stored it: this one, or (incremental backups, later) an earlier one. */
  backup: string;
  /** Uncompressed size and SHA-256 (also in the object's metadata), and what the store holds. */
  size: number;
  sha256: string;
  storedBytes: number;
  codec: Codec;
}

interface EntryBase {
  /** Relative to the data directory, '/'-separated, no '.', '..' or empty parts. */
  path: string;
  /** Permission bits (mode & 0o7777). */
  mode: number;
}

export interface FileEntry extends EntryBase {
  type: 'file';
  size: number;
  /** Modification time in milliseconds since the epoch, as read at backup time. */
  mtimeMs: number;
  sha256: string;
  /** The file's bytes in order (none for an empty file); the sizes add up to `size`. */
  extents: Extent[];
  /** Where its block checksums are (files above one block; block-map.ts), in this or an earlier backup. */
  blocks?: BlockMapRef;
}

/** CHECKSUM_BYTES per block of the file, from byte `offset` of backups/<backup>/<name>. */
export interface BlockMapRef {
  backup: string;
  name: string;
  offset: number;
}

/** Bytes [offset, offset + size) of the uncompressed content of FileList.objects[object]. */
export interface Extent {
  object: number;
  offset: number;
  size: number;
}

export interface DirEntry extends EntryBase {
  type: 'dir';
}

export interface LinkEntry extends EntryBase {
  type: 'link';
  /** Absolute target (a tablespace location). */
  target: string;
}

export type Entry = FileEntry | DirEntry | LinkEntry;

export interface FileList {
  format: 2;
  backup: string;
  /** A full backup names only its own objects; an incremental one also those of earlier backups. */
  type: 'full' | 'incremental';
  /** The backup an incremental one was taken against. */
  reference?: string;
  /** Block size of the files' block maps (absent: no block maps, as in backups before them). */
  blockSize?: number;
  objects: DataObject[];
  /** Parents before children; within an object, files in offset order. */
  entries: Entry[];
}

/** Largest files.json walvault reads back (uncompressed): ~ 5 million entries. */
export const MAX_FILE_LIST_BYTES = 1024 * 1024 * 1024;

export function serializeFileList(list: FileList): Buffer {
  return Buffer.from(JSON.stringify(list) + '\n');
}

const SHA256 = /^[0-9a-f]{64}$/;
const OBJECT_NAME = /^data\/\d{6,9}$/;
const BLOCK_MAP_NAME = /^blocks\/\d{6,9}$/;

/** `text` as a FileList for backup `backup`, or a BackupError naming `what` and the first bad field. */
export function parseFileList(text: string, backup: string, what: string, backupIdGrammar: RegExp): FileList {
  const bad = (why: string): never => {
    throw backupError(`${what} is not a valid backup file list: ${why}`);
  };
  let x: unknown;
  try {
    x = JSON.parse(text);
  } catch {
    return bad('not JSON');
  }
  if (typeof x !== 'object' || x === null || Array.isArray(x)) return bad('not a JSON object');
  const l = x as Record<string, unknown>;
  if (l['format'] !== 2) bad('"format" must be 2');
  if (l['backup'] !== backup) bad(`"backup" must be ${backup}`);
  const type = l['type'];
  if (type !== 'full' && type !== 'incremental') bad('"type" must be full or incremental');
  const reference = l['reference'];
  if (type === 'incremental' ? typeof reference !== 'string' || !backupIdGrammar.test(reference) || reference === backup : reference !== undefined) {
    bad('"reference" must name another backup for an incremental backup, and only then');
  }
  if (!Array.isArray(l['objects']) || !Array.isArray(l['entries'])) return bad('"objects" and "entries" must be arrays');
  const isInt = (v: unknown, max = Number.MAX_SAFE_INTEGER): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && v <= max;
  const blockSize = l['blockSize'];
  if (blockSize !== undefined && (!isInt(blockSize, 1 << 30) || blockSize < 512)) bad('"blockSize" must be an integer from 512');
  const objects = (l['objects'] as unknown[]).map((o, i): DataObject => {
    const r = o as Record<string, unknown>;
    if (typeof o !== 'object' || o === null) bad(`objects[${i}] is not an object`);
    if (typeof r['name'] !== 'string' || !OBJECT_NAME.test(r['name'])) bad(`objects[${i}].name must be data/<digits>`);
    if (typeof r['backup'] !== 'string' || !backupIdGrammar.test(r['backup'])) bad(`objects[${i}].backup must be a backup id`);
    if (!isInt(r['size']) || !isInt(r['storedBytes'])) bad(`objects[${i}] sizes must be non-negative integers`);
    if (typeof r['sha256'] !== 'string' || !SHA256.test(r['sha256'])) bad(`objects[${i}].sha256 must be a SHA-256`);
    if (typeof r['codec'] !== 'string' || !(CODECS as readonly string[]).includes(r['codec'])) bad(`objects[${i}].codec must be one of ${CODECS.join(', ')}`);
    return { name: r['name'] as string, backup: r['backup'] as string, size: r['size'] as number, sha256: r['sha256'] as string, storedBytes: r['storedBytes'] as number, codec: r['codec'] as Codec };
  });
  const seen = new Set<string>();
  const kinds = new Map<string, Entry['type']>();
  const entries = (l['entries'] as unknown[]).map((e, i): Entry => {
    const r = e as Record<string, unknown>;
    if (typeof e !== 'object' || e === null) bad(`entries[${i}] is not an object`);
    const path = r['path'];
    if (typeof path !== 'string' || !safeRelativePath(path)) bad(`entries[${i}].path ${JSON.stringify(String(path).slice(0, 80))} is not a safe relative path`);
    const p = path as string;
    if (seen.has(p)) bad(`entries[${i}].path ${p} appears twice`);
    const parent = p.includes('/') ? p.slice(0, p.lastIndexOf('/')) : '';
    // A tablespace's files sit below its link pg_tblspc/<oid> (restored into its location, not through it).
    if (parent && kinds.get(parent) !== 'dir' && !(kinds.get(parent) === 'link' && tablespaceLinkOid(parent) !== undefined)) {
      bad(`entries[${i}].path ${p} comes before (or without) its directory`);
    }
    seen.add(p);
    if (!isInt(r['mode'], 0o7777)) bad(`entries[${i}].mode must be permission bits`);
    const mode = r['mode'] as number;
    if (r['type'] === 'dir') {
      kinds.set(p, 'dir');
      return { type: 'dir', path: p, mode };
    }
    if (r['type'] === 'link') {
      const t = r['target'];
      if (typeof t !== 'string' || !t.startsWith('/') || t.length > 4096 || controlChar(t) !== undefined) bad(`entries[${i}].target must be an absolute path`);
      kinds.set(p, 'link');
      return { type: 'link', path: p, mode, target: t as string };
    }
    if (r['type'] !== 'file') bad(`entries[${i}].type must be file, dir or link`);
    kinds.set(p, 'file');
    if (!isInt(r['size']) || typeof r['mtimeMs'] !== 'number' || !Number.isFinite(r['mtimeMs'])) bad(`entries[${i}] size and mtimeMs must be numbers`);
    if (typeof r['sha256'] !== 'string' || !SHA256.test(r['sha256'])) bad(`entries[${i}].sha256 must be a SHA-256`);
    if (!Array.isArray(r['extents'])) bad(`entries[${i}].extents must be an array`);
    let total = 0;
    const extents = (r['extents'] as unknown[]).map((x, k): Extent => {
      const e = x as Record<string, unknown>;
      if (typeof x !== 'object' || x === null || !isInt(e['object'], objects.length - 1)) bad(`entries[${i}].extents[${k}].object must index objects`);
      if (!isInt(e['offset']) || !isInt(e['size']) || (e['size'] as number) === 0) bad(`entries[${i}].extents[${k}] offset and size must be integers, size above 0`);
      const o = objects[e['object'] as number]!;
      if ((e['offset'] as number) + (e['size'] as number) > o.size) bad(`entries[${i}] (${p}) reaches past the end of ${o.name}`);
      total += e['size'] as number;
      return { object: e['object'] as number, offset: e['offset'] as number, size: e['size'] as number };
    });
    if (total !== r['size']) bad(`entries[${i}] (${p}): its extents hold ${total} bytes, not its size ${r['size'] as number}`);
    const file: FileEntry = { type: 'file', path: p, mode, size: r['size'] as number, mtimeMs: r['mtimeMs'] as number, sha256: r['sha256'] as string, extents };
    const b = r['blocks'] as Record<string, unknown> | undefined;
    if (b !== undefined) {
      if (blockSize === undefined || typeof b !== 'object' || b === null) return bad(`entries[${i}].blocks needs "blockSize" and must be an object`);
      if (typeof b['backup'] !== 'string' || !backupIdGrammar.test(b['backup'])) bad(`entries[${i}].blocks.backup must be a backup id`);
      if (typeof b['name'] !== 'string' || !BLOCK_MAP_NAME.test(b['name'])) bad(`entries[${i}].blocks.name must be blocks/<digits>`);
      if (!isInt(b['offset'])) bad(`entries[${i}].blocks.offset must be a non-negative integer`);
      file.blocks = { backup: b['backup'] as string, name: b['name'] as string, offset: b['offset'] as number };
    }
    return file;
  });
  return {
    format: 2,
    backup,
    type: type as FileList['type'],
    ...(type === 'incremental' ? { reference: reference as string } : {}),
    ...(blockSize !== undefined ? { blockSize: blockSize as number } : {}),
    objects,
    entries,
  };
}

/** The tablespace OID of a pg_tblspc/<oid> link path (tablespaces.ts), or undefined. */
export function tablespaceLinkOid(path: string): string | undefined {
  return /^pg_tblspc\/(\d{1,10})$/.exec(path)?.[1];
}

/** A relative '/'-separated path with no empty, '.' or '..' part and no control characters. */
export function safeRelativePath(p: string): boolean {
  if (p.length === 0 || p.length > 4096 || p.startsWith('/') || controlChar(p) !== undefined || p.includes('\\')) return false;
  return p.split('/').every((part) => part !== '' && part !== '.' && part !== '..');
}
