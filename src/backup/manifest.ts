import { backupError } from '../common/errors.js';
import { formatLsn, parseLsn } from '../wal/names.js';

// PostgreSQL's backup_manifest (PG13+): JSON with the file list and the WAL range that must be
// replayed for the backup to be consistent. pg_basebackup writing a tar to stdout injects it into
// the tar stream as its last member.
//   { "PostgreSQL-Backup-Manifest-Version": 1,
//     "Files": [ { "Path": "backup_label", "Size": 211, ... }, ... ],
//     "WAL-Ranges": [ { "Timeline": 1, "Start-LSN": "0/700028", "End-LSN": "0/700100" } ],
//     "Manifest-Checksum": "..." }
export interface WalRange {
  timeline: number;
  startLsn: string;
  endLsn: string;
}

export interface BackupManifestInfo {
  version: number;
  fileCount: number;
  /** Sum of the files' sizes (the data directory as restored, without tar headers). */
  filesBytes: number;
  walRanges: WalRange[];
  /** Present from PostgreSQL 17 (manifest version 2). */
  systemIdentifier?: string;
  /** Files under pg_tblspc/: tablespaces other than pg_default / pg_global. */
  tablespaceFiles: number;
}

export function parseBackupManifest(text: string, what = 'backup_manifest'): BackupManifestInfo {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw backupError(`${what} is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof doc !== 'object' || doc === null) throw backupError(`${what} is not a JSON object`);
  const d = doc as Record<string, unknown>;
  const version = Number(d['PostgreSQL-Backup-Manifest-Version']);
  if (!Number.isInteger(version) || version < 1) throw backupError(`${what} has no PostgreSQL-Backup-Manifest-Version`);
  const files = d['Files'];
  const ranges = d['WAL-Ranges'];
  if (!Array.isArray(files) || !Array.isArray(ranges)) throw backupError(`${what} lacks "Files" or "WAL-Ranges"`);
  let filesBytes = 0;
  let tablespaceFiles = 0;
  for (const f of files as Array<Record<string, unknown>>) {
    const size = Number(f?.['Size']);
    if (Number.isFinite(size)) filesBytes += size;
    const path = typeof f?.['Path'] === 'string' ? f['Path'] : '';
    if (path.startsWith('pg_tblspc/')) tablespaceFiles++;
  }
  const walRanges: WalRange[] = (ranges as Array<Record<string, unknown>>).map((r, i) => {
    const timeline = Number(r?.['Timeline']);
    const start = r?.['Start-LSN'];
    const end = r?.['End-LSN'];
    if (!Number.isInteger(timeline) || timeline < 1 || typeof start !== 'string' || typeof end !== 'string') {
      throw backupError(`${what}: WAL-Ranges[${i}] is malformed`);
    }
    return { timeline, startLsn: formatLsn(parseLsn(start)), endLsn: formatLsn(parseLsn(end)) };
  });
  if (walRanges.length === 0) throw backupError(`${what} has an empty WAL-Ranges list`);
  const info: BackupManifestInfo = { version, fileCount: files.length, filesBytes, walRanges, tablespaceFiles };
  const sysid = d['System-Identifier'];
  if (typeof sysid === 'number' || typeof sysid === 'string') info.systemIdentifier = String(sysid);
  return info;
}

/** The WAL range the backup needs: start of the first range to the end of the last (on its timeline). */
export function manifestWalSpan(m: BackupManifestInfo): { startLsn: string; stopLsn: string; startTimeline: number; stopTimeline: number } {
  // Ranges are listed newest timeline first when the backup spans a timeline switch (a standby
  // promoted during the backup); order them by start LSN to be independent of that.
  const sorted = [...m.walRanges].sort((a, b) => (parseLsn(a.startLsn) < parseLsn(b.startLsn) ? -1 : 1));
  const first = sorted[0]!;
  const last = sorted[sorted.length - 1]!;
  return { startLsn: first.startLsn, stopLsn: last.endLsn, startTimeline: first.timeline, stopTimeline: last.timeline };
}
