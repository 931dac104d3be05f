import { backupError } from '../common/errors.js';
import { formatLsn, parseLsn } from '../wal/names.js';

// backup_label (inside the base backup) and the backup history file `<seg>.<offset>.backup` (archived
// next to the WAL) share one "KEY: value" line format, written by do_pg_backup_start/stop
// (src/backend/access/transam/xlog.c):
//   START WAL LOCATION: 0/700028 (file 000000010000000000000007)
//   CHECKPOINT LOCATION: 0/700060
//   BACKUP METHOD: streamed
//   BACKUP FROM: primary
//   START TIME: 2026-11-24 06:12:37 UTC
//   LABEL: walvault-test
//   START TIMELINE: 1
// and, in the history file only, STOP WAL LOCATION / STOP TIME / STOP TIMELINE.
export interface BackupLabel {
  startLsn: string;
  startSegment: string;
  checkpointLsn: string;
  backupFrom: string;
  /** As written by the server: second precision, in the server's log_timezone. */
  startTimeText: string;
  /** startTimeText as an instant, when its zone can be read unambiguously (UTC, GMT, numeric offsets). */
  startTime?: Date;
  label: string;
  startTimeline: number;
  stopLsn?: string;
  stopTimeText?: string;
  stopTime?: Date;
  stopTimeline?: number;
}

function fields(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const i = line.indexOf(': ');
    if (i <= 0) continue;
    const key = line.slice(0, i).trim();
    if (!out.has(key)) out.set(key, line.slice(i + 2).replace(/\r$/, ''));
  }
  return out;
}

const LOCATION = /^([0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8})(?: \(file ([0-9A-F]{24})\))?$/;

export function parseBackupLabel(text: string, what = 'backup_label'): BackupLabel {
  const f = fields(text);
  const need = (key: string): string => {
    const v = f.get(key);
    if (v === undefined) throw backupError(`${what} has no "${key}" line; is this a PostgreSQL backup label?`);
    return v;
  };
  const start = LOCATION.exec(need('START WAL LOCATION'));
  if (!start || !start[2]) throw backupError(`${what}: cannot read START WAL LOCATION ${JSON.stringify(f.get('START WAL LOCATION'))}`);
  const checkpoint = LOCATION.exec(need('CHECKPOINT LOCATION'));
  if (!checkpoint) throw backupError(`${what}: cannot read CHECKPOINT LOCATION ${JSON.stringify(f.get('CHECKPOINT LOCATION'))}`);
  const tli = Number(need('START TIMELINE'));
  if (!Number.isInteger(tli) || tli < 1) throw backupError(`${what}: bad START TIMELINE ${JSON.stringify(f.get('START TIMELINE'))}`);
  const startTimeText = need('START TIME');
  const label: BackupLabel = {
    startLsn: normLsn(start[1]!),
    startSegment: start[2],
    checkpointLsn: normLsn(checkpoint[1]!),
    backupFrom: f.get('BACKUP FROM') ?? 'primary',
    startTimeText,
    label: f.get('LABEL') ?? '',
    startTimeline: tli,
  };
  const st = parsePgTimestamp(startTimeText);
  if (st) label.startTime = st;
  const stop = f.get('STOP WAL LOCATION');
  if (stop !== undefined) {
    const m = LOCATION.exec(stop);
    if (!m) throw backupError(`${what}: cannot read STOP WAL LOCATION ${JSON.stringify(stop)}`);
    label.stopLsn = normLsn(m[1]!);
  }
  const stopTime = f.get('STOP TIME');
  if (stopTime !== undefined) {
    label.stopTimeText = stopTime;
    const t = parsePgTimestamp(stopTime);
    if (t) label.stopTime = t;
  }
  const stopTli = f.get('STOP TIMELINE');
  if (stopTli !== undefined && Number.isInteger(Number(stopTli))) label.stopTimeline = Number(stopTli);
  return label;
}

function normLsn(s: string): string {
  return formatLsn(parseLsn(s));
}

/**
 * "2026-11-24 06:12:37 UTC" (pg_strftime "%Y-%m-%d %H:%M:%S %Z"). Only zones that name an offset
 * unambiguously are read (UTC, GMT, Z, +03, -0330, +05:30); an abbreviation such as CEST or EST is
 * ambiguous without the tz database, so the caller falls back to its own clock.
 */
export function parsePgTimestamp(text: string): Date | undefined {
  const m = /^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))? ?(UTC|GMT|Z|[+-]\d{2}(?::?\d{2})?)$/.exec(text.trim());
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s, frac, zone] = m;
  let offsetMin = 0;
  if (zone && zone !== 'UTC' && zone !== 'GMT' && zone !== 'Z') {
    const sign = zone[0] === '-' ? -1 : 1;
    const digits = zone.slice(1).replace(':', '');
    offsetMin = sign * (Number(digits.slice(0, 2)) * 60 + Number(digits.slice(2, 4) || '0'));
  }
  const ms = frac ? Number(frac.slice(0, 3).padEnd(3, '0')) : 0;
  const t = Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s), ms) - offsetMin * 60_000;
  return Number.isFinite(t) ? new Date(t) : undefined;
}

/** Name of the backup history file PostgreSQL archives for a backup that started at `startLsn`. */
export function backupHistoryFileName(startSegment: string, startLsn: string, segSize: number): string {
  const offset = parseLsn(startLsn) % BigInt(segSize);
  return `${startSegment}.${offset.toString(16).toUpperCase().padStart(8, '0')}.backup`;
}
