import { createHash } from 'node:crypto';
import { internalError } from '../common/errors.js';
import { formatLsn, parseLsn } from '../wal/names.js';

// PostgreSQL's backup manifest, version 1, byte for byte as the server writes it for pg_basebackup
// (src/backend/backup/backup_manifest.c, PostgreSQL 13-16; 17 writes version 2 but still reads 1),
// so pg_verifybackup checks a restored file-level backup exactly like a streamed one:
//
//   { "PostgreSQL-Backup-Manifest-Version": 1,
//   "Files": [
//   { "Path": "backup_label", "Size": 227, "Last-Modified": "2026-11-30 06:00:00 GMT", "Checksum-Algorithm": "SHA256", "Checksum": "<hex>" },
//   ...
//   ],
//   "WAL-Ranges": [
//   { "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }
//   ],
//   "Manifest-Checksum": "<hex>"}
//
// Manifest-Checksum is the SHA-256 of every byte before its line; pg_verifybackup recomputes it up to
// the file's second-to-last newline. Paths are written as "Path" (JSON-escaped as PostgreSQL's
// escape_json does); "Encoded-Path" (hex) exists for names that are not UTF-8, which the data
// directory walk refuses, so it never occurs here.

export interface ManifestFile {
  path: string;
  size: number;
  mtimeMs: number;
  /** Lower-case hex SHA-256 of the file's bytes. */
  sha256: string;
}

export interface ManifestWal {
  timeline: number;
  startLsn: string;
  endLsn: string;
}

/** PostgreSQL's escape_json: the two-character escapes, \u00XX for other control characters. */
export function escapeJson(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === '"') out += '\\"';
    else if (ch === '\\') out += '\\\\';
    else if (ch === '\b') out += '\\b';
    else if (ch === '\f') out += '\\f';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (c < 0x20) out += `\\u${c.toString(16).padStart(4, '0')}`;
    else out += ch;
  }
  return out + '"';
}

/** pg_strftime("%Y-%m-%d %H:%M:%S %Z", pg_gmtime(mtime)) of the whole seconds. */
export function manifestTime(mtimeMs: number): string {
  const d = new Date(Math.floor(mtimeMs / 1000) * 1000);
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getUTCFullYear(), 4)}-${p(d.getUTCMonth() + 1)}-${p(d.getUTCDate())} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} GMT`;
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function fileLine(f: ManifestFile): string {
  if (!Number.isSafeInteger(f.size) || f.size < 0) throw internalError(`backup manifest: bad size for ${f.path}`);
  if (!/^[0-9a-f]{64}$/.test(f.sha256)) throw internalError(`backup manifest: bad SHA-256 for ${f.path}`);
  if (LONE_SURROGATE.test(f.path)) throw internalError('backup manifest: a path is not valid Unicode');
  return `{ "Path": ${escapeJson(f.path)}, "Size": ${f.size}, "Last-Modified": "${manifestTime(f.mtimeMs)}", "Checksum-Algorithm": "SHA256", "Checksum": "${f.sha256}" }`;
}

/**
 * The manifest in pieces, hashing as it goes: a caller with millions of files can write it out
 * without holding it whole (buildBackupManifest joins them).
 */
export function* backupManifestChunks(files: Iterable<ManifestFile>, wal: ManifestWal): Generator<Buffer> {
  if (!Number.isInteger(wal.timeline) || wal.timeline < 1 || wal.timeline > 0xffffffff) throw internalError(`backup manifest: bad timeline ${wal.timeline}`);
  const start = formatLsn(parseLsn(wal.startLsn));
  const end = formatLsn(parseLsn(wal.endLsn));
  const hash = createHash('sha256');
  const emit = (s: string): Buffer => {
    const b = Buffer.from(s, 'utf8');
    hash.update(b);
    return b;
  };
  yield emit('{ "PostgreSQL-Backup-Manifest-Version": 1,\n"Files": [');
  let first = true;
  let batch = '';
  for (const f of files) {
    batch += (first ? '\n' : ',\n') + fileLine(f);
    first = false;
    if (batch.length >= 64 * 1024) {
      yield emit(batch);
      batch = '';
    }
  }
  yield emit(`${batch}\n],\n"WAL-Ranges": [\n{ "Timeline": ${wal.timeline}, "Start-LSN": "${start}", "End-LSN": "${end}" }\n],\n`);
  yield Buffer.from(`"Manifest-Checksum": "${hash.digest('hex')}"}\n`, 'utf8');
}

/** PostgreSQL backup manifest (version 1, as pg_basebackup writes it) with SHA256 checksums, WAL-Ranges and Manifest-Checksum. */
export function buildBackupManifest(files: Iterable<ManifestFile>, wal: ManifestWal): Buffer {
  return Buffer.concat([...backupManifestChunks(files, wal)]);
}
