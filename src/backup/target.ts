import { backupError, usageError } from '../common/errors.js';
import { formatLsn, parseLsn } from '../wal/names.js';
import type { BackupInfo } from './backup-info.js';

// Recovery targets (PostgreSQL "Recovery Target" settings) and the choice of the base backup to
// restore for one. Pure functions: unit-tested without PostgreSQL or a store.
export type RecoveryTarget =
  | { kind: 'none' }
  | { kind: 'immediate' }
  | { kind: 'time'; /** as given */ input: string; /** normalized, absolute: written to recovery_target_time */ pg: string; /** epoch ms (fraction = microseconds) */ ms: number }
  | { kind: 'lsn'; lsn: string }
  | { kind: 'xid'; xid: string }
  | { kind: 'name'; name: string };

export interface TargetFlags {
  targetTime?: string;
  targetLsn?: string;
  targetXid?: string;
  targetName?: string;
  targetImmediate?: boolean;
}

export function parseTarget(f: TargetFlags): RecoveryTarget {
  const given = [
    f.targetTime !== undefined && '--target-time',
    f.targetLsn !== undefined && '--target-lsn',
    f.targetXid !== undefined && '--target-xid',
    f.targetName !== undefined && '--target-name',
    f.targetImmediate === true && '--target-immediate',
  ].filter(Boolean);
  if (given.length > 1) throw usageError(`only one recovery target may be given, got ${given.join(' and ')}`);
  if (f.targetTime !== undefined) return { kind: 'time', input: f.targetTime, ...parseTargetTime(f.targetTime) };
  if (f.targetLsn !== undefined) {
    try {
      return { kind: 'lsn', lsn: formatLsn(parseLsn(f.targetLsn)) };
    } catch {
      throw usageError(`--target-lsn ${JSON.stringify(f.targetLsn)} is not an LSN (expected X/Y in hex, e.g. 0/16B3748)`);
    }
  }
  if (f.targetXid !== undefined) {
    const x = f.targetXid.trim();
    if (!/^\d{1,20}$/.test(x) || BigInt(x) < 3n) throw usageError(`--target-xid ${JSON.stringify(f.targetXid)} is not a transaction id (a number >= 3)`);
    return { kind: 'xid', xid: x };
  }
  if (f.targetName !== undefined) {
    if (f.targetName === '' || f.targetName.length > 63) throw usageError('--target-name must be 1 to 63 characters (a pg_create_restore_point name)');
    return { kind: 'name', name: f.targetName };
  }
  if (f.targetImmediate) return { kind: 'immediate' };
  return { kind: 'none' };
}

const TIME = /^(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?)?\s*(Z|UTC|GMT|[+-]\d{1,2}(?::?\d{2})?)?$/i;

/**
 * Reads a timestamp such as `2026-11-24 13:59:00`, `2026-11-24T13:59:00.123456+02:00` or
 * `2026-11-24 11:59:00 UTC`. Without a zone it is local time of the machine running walvault (TZ, or
 * `zone`, an IANA name, for tests), and walvault writes the target with an explicit +00 offset, so
 * PostgreSQL's TimeZone setting cannot change its meaning. Microseconds are kept. A date that does
 * not exist (2026-02-30, 24:00) is refused rather than rolled over, and so is a local time that
 * names two instants (the repeated hour when clocks go back) or none (the skipped hour).
 */
export function parseTargetTime(text: string, zone?: string): { pg: string; ms: number } {
  const m = TIME.exec(text.trim());
  const bad = (why = 'is not a timestamp') =>
    usageError(`--target-time ${JSON.stringify(text)} ${why} (e.g. "2026-11-24 13:59:00", "2026-11-24T11:59:00Z", "2026-11-24 13:59:00+02")`);
  if (!m) throw bad();
  const [, y, mo, d, h = '0', mi = '0', s = '0', frac = '', tz] = m;
  const fields = [Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s)] as const;
  const asUtc = Date.UTC(...fields);
  // Date.UTC rolls 02-30 over to 03-02 and 24:00 to the next day: a field it changed did not exist.
  const back = new Date(asUtc);
  const same =
    back.getUTCFullYear() === fields[0] && back.getUTCMonth() === fields[1] && back.getUTCDate() === fields[2] &&
    back.getUTCHours() === fields[3] && back.getUTCMinutes() === fields[4] && back.getUTCSeconds() === fields[5];
  if (!Number.isFinite(asUtc) || !same) throw bad('is not a date and time that exists (check the day of the month, hours 00-23, minutes and seconds 00-59)');
  const micros = Number(frac.padEnd(6, '0'));
  let baseMs: number;
  if (tz === undefined) {
    const found = localInstants(asUtc, zone);
    if (found.length !== 1) {
      const where = zone ?? (process.env['TZ'] || 'the local time zone');
      throw bad(
        found.length === 0
          ? `does not exist in ${where} (the clocks skip that hour); give an explicit offset such as +01 or Z`
          : `is ambiguous in ${where} (the clocks go back and that hour happens twice); give an explicit offset such as +01 or Z`,
      );
    }
    baseMs = found[0]!;
  } else {
    let offsetMin = 0;
    const z = tz.toUpperCase();
    if (z !== 'Z' && z !== 'UTC' && z !== 'GMT') {
      const sign = z[0] === '-' ? -1 : 1;
      const digits = z.slice(1).replace(':', '');
      const hh = digits.length <= 2 ? digits : digits.slice(0, -2);
      const mm = digits.length <= 2 ? '0' : digits.slice(-2);
      offsetMin = sign * (Number(hh) * 60 + Number(mm));
      if (Math.abs(offsetMin) > 15 * 60 || Number(mm) > 59) throw bad();
    }
    baseMs = asUtc - offsetMin * 60_000;
  }
  const ms = baseMs + micros / 1000;
  const iso = new Date(baseMs).toISOString(); // 2026-11-24T11:59:00.000Z
  const pg = `${iso.slice(0, 10)} ${iso.slice(11, 19)}.${String(micros).padStart(6, '0')}+00`;
  return { pg, ms };
}

/**
 * The instants whose wall-clock time in the zone is `wall` (that wall time read as if UTC): none in a
 * skipped hour, two in a repeated one. Offsets are taken a day either side, which covers any single
 * transition.
 */
function localInstants(wall: number, zone: string | undefined): number[] {
  const offset = zone === undefined ? (t: number) => -new Date(t).getTimezoneOffset() * 60_000 : zoneOffset(zone);
  const DAY = 86_400_000;
  const candidates = new Set([offset(wall - DAY), offset(wall), offset(wall + DAY)]);
  return [...candidates].map((o) => wall - o).filter((t) => offset(t) === wall - t).sort((a, b) => a - b);
}

/** UTC offset (ms) of an IANA zone at an instant, from what Intl prints there. */
function zoneOffset(zone: string): (t: number) => number {
  const fmt = new Intl.DateTimeFormat('en-US', {
    timeZone: zone,
    hourCycle: 'h23',
    year: 'numeric',
    month: 'numeric',
    day: 'numeric',
    hour: 'numeric',
    minute: 'numeric',
    second: 'numeric',
  });
  return (t: number) => {
    const p = Object.fromEntries(fmt.formatToParts(new Date(t)).map((x) => [x.type, x.value]));
    const wall = Date.UTC(Number(p['year']), Number(p['month']) - 1, Number(p['day']), Number(p['hour']), Number(p['minute']), Number(p['second']));
    return wall - Math.floor(t / 1000) * 1000;
  };
}

export function describeTarget(t: RecoveryTarget): string {
  switch (t.kind) {
    case 'none':
      return 'the end of the archived WAL';
    case 'immediate':
      return 'the end of the backup (immediate)';
    case 'time':
      return `time ${t.pg}`;
    case 'lsn':
      return `LSN ${t.lsn}`;
    case 'xid':
      return `transaction ${t.xid}`;
    case 'name':
      return `restore point ${JSON.stringify(t.name)}`;
  }
}

/**
 * Picks the backup to restore. `backups` is oldest first. With an explicit id the backup must exist
 * and end before a time/LSN target. With LATEST: for a time or LSN target, the newest backup that
 * ends at or before the target (a backup is only consistent once its WAL up to stopLsn is
 * replayed, so a target inside or before it cannot be reached); otherwise the newest backup.
 */
export function selectBackup(backups: BackupInfo[], which: string, target: RecoveryTarget, repo: string): { backup: BackupInfo; why: string } {
  if (backups.length === 0) throw backupError(`no complete backup in ${repo} (run walvault backup-push first)`);
  const endsBefore = (b: BackupInfo): boolean => {
    if (target.kind === 'time') return Date.parse(b.stopTime) <= target.ms;
    if (target.kind === 'lsn') return parseLsn(b.stopLsn) <= parseLsn(target.lsn);
    if (target.kind === 'xid' && b.startNextXid !== undefined) {
      // A transaction id assigned before the backup started may have committed before it ended.
      const next = BigInt(b.startNextXid);
      const x = BigInt(target.xid);
      const full = x >= 1n << 32n ? x : ((next >> 32n) << 32n) | x;
      return next <= full;
    }
    return true;
  };
  const describeEnd = (b: BackupInfo) =>
    target.kind === 'lsn' ? `stop LSN ${b.stopLsn}` : target.kind === 'xid' ? `next transaction id ${b.startNextXid} at its start` : `${b.stopTime}`;
  if (which.toUpperCase() !== 'LATEST') {
    const backup = backups.find((b) => b.id === which);
    if (!backup) {
      const ids = backups.slice(-5).map((b) => b.id);
      throw backupError(`backup ${JSON.stringify(which)} is not in ${repo} (or is incomplete); newest: ${ids.join(', ')}`);
    }
    if (!endsBefore(backup)) {
      throw backupError(
        `the target (${describeTarget(target)}) is before the end of backup ${backup.id} (${describeEnd(backup)}): ` +
          'a backup can only be recovered to a point after it ended; choose an older backup or LATEST',
      );
    }
    return { backup, why: 'as requested' };
  }
  const candidates = backups.filter(endsBefore);
  const backup = candidates[candidates.length - 1];
  if (!backup) {
    const oldest = backups[0]!;
    throw backupError(
      `the target (${describeTarget(target)}) is before the end of the oldest backup ${oldest.id} (ended ${describeEnd(oldest)}); ` +
        `no backup in ${repo} can be recovered to it`,
    );
  }
  const why =
    target.kind === 'time' || target.kind === 'lsn'
      ? `the newest backup that ends before ${describeTarget(target)}`
      : target.kind === 'xid'
        ? `the newest backup that started before ${describeTarget(target)} began`
        : 'the newest backup';
  return { backup, why };
}
