import { CODECS } from '../codec/codec.js';
import { controlChar } from '../common/control-chars.js';
import { backupError } from '../common/errors.js';

/** What backup.json records. Times are ISO 8601 UTC; LSNs are "X/Y"; sizes are bytes. */
export interface BackupInfo {
  /**
   * 1: one tar stream (base.tar, pg_basebackup's). 2: a file list and data objects
   * (file-list.ts); `method` says how the files were read.
   */
  format: 1 | 2;
  method?: 'files' | 'stream';
  /** Format 2: full, or incremental against `reference` (absent: full; format 1 is always full). */
  type?: 'full' | 'incremental';
  reference?: string;
  id: string;
  label: string;
  /** When the backup started (the server's START TIME when readable, else walvault's clock). */
  startTime: string;
  /**
   * An instant at or after the end of the backup (the later of walvault's clock when pg_basebackup
   * finished and the server's STOP TIME rounded up): a recovery target after it is reachable.
   */
  stopTime: string;
  startLsn: string;
  stopLsn: string;
  checkpointLsn: string;
  /** Timeline the backup started on (START TIMELINE) and the one its WAL range ends on. */
  timeline: number;
  stopTimeline: number;
  startSegment: string;
  stopSegment: string;
  walSegmentSize: number;
  /**
   * Format 1: size and SHA-256 of the uncompressed tar stream. Format 2: total size of the files and
   * the SHA-256 of files.json (which holds each file's). storedBytes: what the store holds.
   */
  sizeBytes: number;
  sha256: string;
  storedBytes: number;
  codec: string;
  /** Files in the data directory per backup_manifest, and their total size. */
  fileCount: number;
  filesBytes: number;
  manifestSha256: string;
  pgVersion: number;
  systemIdentifier: string;
  /**
   * Next transaction id (with epoch, 64-bit) of the checkpoint the backup starts from, from the
   * backup's pg_control: transactions from this one on began after the backup started.
   */
  startNextXid?: string;
  backupFrom: string;
  serverStartTime: string;
  serverStopTime?: string;
  walvaultVersion: string;
}

// backup.json comes from the repository, which whoever can write the bucket controls; backup-fetch
// often runs as root. Every field is checked against what backup-push writes before any of it
// becomes a path (pg_verifybackup's directory, object keys), a size, a number or a log line.

/** What makeBackupId creates (plus the _<n> suffix backup-push adds when the name is taken). */
export const BACKUP_ID_GRAMMAR = /^base_[0-9A-F]{24}_\d{8}T\d{6}Z(?:_[1-9]\d{0,5})?$/;

const LSN = /^[0-9A-F]{1,8}\/[0-9A-F]{1,8}$/;
const SEGMENT = /^[0-9A-F]{24}$/;
const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?Z$/;
const SHA256 = /^[0-9a-f]{64}$/;
const DECIMAL_U64 = /^\d{1,20}$/;
const MiB = 1024 * 1024;

type Rec = Record<string, unknown>;

/** `x` as a BackupInfo, or a BackupError naming `what` (the object) and the first bad field. */
export function validateBackupInfo(x: unknown, what: string): BackupInfo {
  const bad = (field: string, why: string): never => {
    const shown: string | undefined = JSON.stringify((x as Rec)[field]);
    throw backupError(`${what} is not a valid backup description: "${field}" ${why} (got ${shown === undefined ? 'nothing' : shown.slice(0, 80)})`);
  };
  if (typeof x !== 'object' || x === null || Array.isArray(x)) throw backupError(`${what} is not a valid backup description: not a JSON object`);
  const b = x as Rec;
  const str = (f: string, re: RegExp, why: string): string => {
    const v = b[f];
    if (typeof v !== 'string' || !re.test(v)) bad(f, why);
    return v as string;
  };
  const text = (f: string, optional = false): void => {
    const v = b[f];
    if (optional && v === undefined) return;
    if (typeof v !== 'string' || v.length > 1024 || controlChar(v) !== undefined) bad(f, 'must be text of at most 1024 characters without control characters');
  };
  const int = (f: string, min: number, max: number): number => {
    const v = b[f];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) bad(f, `must be an integer from ${min} to ${max}`);
    return v as number;
  };
  if (b['format'] !== 1 && b['format'] !== 2) bad('format', 'must be 1 or 2');
  if (b['format'] === 2 && b['method'] !== 'files' && b['method'] !== 'stream') bad('method', 'must be files or stream');
  if (b['format'] === 1 && b['method'] !== undefined) bad('method', 'belongs to format 2 only');
  const id = str('id', BACKUP_ID_GRAMMAR, 'must be a backup id base_<24 hex digits>_<yyyymmddThhmmssZ>');
  if (b['type'] !== undefined && b['type'] !== 'full' && b['type'] !== 'incremental') bad('type', 'must be full or incremental');
  if (b['format'] === 1 && b['type'] === 'incremental') bad('type', 'must be full for format 1');
  if (b['type'] === 'incremental') {
    if (str('reference', BACKUP_ID_GRAMMAR, 'must name the backup an incremental one was taken against') === id) bad('reference', 'must name another backup');
  } else if (b['reference'] !== undefined) bad('reference', 'belongs to incremental backups only');
  text('label');
  for (const f of ['startTime', 'stopTime']) {
    if (!Number.isFinite(Date.parse(str(f, ISO_UTC, 'must be an ISO 8601 UTC time')))) bad(f, 'must be a real date');
  }
  const lsnOf = (f: string) => {
    const [hi, lo] = str(f, LSN, 'must be an LSN X/Y (upper-case hex)').split('/');
    return (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`);
  };
  const start = lsnOf('startLsn');
  if (lsnOf('stopLsn') < start) bad('stopLsn', 'must not be before startLsn');
  lsnOf('checkpointLsn');
  const tli = int('timeline', 1, 0xffffffff);
  const stopTli = int('stopTimeline', 1, 0xffffffff);
  if (stopTli < tli) bad('stopTimeline', 'must not be below timeline');
  for (const f of ['startSegment', 'stopSegment']) {
    if (/^0{8}/.test(str(f, SEGMENT, 'must be a WAL segment name (24 upper-case hex digits)'))) bad(f, 'names timeline 0');
  }
  const seg = int('walSegmentSize', MiB, 1024 * MiB);
  if ((seg & (seg - 1)) !== 0) bad('walSegmentSize', 'must be a power of two');
  int('sizeBytes', 0, Number.MAX_SAFE_INTEGER);
  int('storedBytes', 0, Number.MAX_SAFE_INTEGER);
  int('fileCount', 0, Number.MAX_SAFE_INTEGER);
  int('filesBytes', 0, Number.MAX_SAFE_INTEGER);
  str('sha256', SHA256, 'must be a SHA-256 in lower-case hex');
  str('manifestSha256', /^(?:[0-9a-f]{64})?$/, 'must be a SHA-256 in lower-case hex');
  if (typeof b['codec'] !== 'string' || !(CODECS as readonly string[]).includes(b['codec'])) bad('codec', `must be one of ${CODECS.join(', ')}`);
  // 0 when backup-push could not read PG_VERSION; else a major version, which names a directory.
  const v = int('pgVersion', 0, 999);
  if (v !== 0 && v < 10) bad('pgVersion', 'must be 0 (unknown) or a PostgreSQL major version from 10');
  str('systemIdentifier', DECIMAL_U64, 'must be a decimal 64-bit number');
  if (b['startNextXid'] !== undefined) str('startNextXid', DECIMAL_U64, 'must be a decimal 64-bit number');
  if (b['backupFrom'] !== 'primary' && b['backupFrom'] !== 'standby') bad('backupFrom', 'must be primary or standby');
  text('serverStartTime');
  text('serverStopTime', true);
  text('walvaultVersion');
  return b as unknown as BackupInfo;
}
