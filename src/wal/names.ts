import { badWalNameError } from '../common/errors.js';

// The archiver only ever hands over four kinds of names (pgarch.c, xlog_internal.h). Anything else is
// refused before any I/O: %f ends up in storage keys and %p paths, so it must never carry `/` or `..`.
export type WalFileKind = 'segment' | 'partial' | 'history' | 'backup';

export interface WalName {
  name: string;
  kind: WalFileKind;
  /** Timeline ID (all kinds carry one). */
  timeline: number;
  /** The 24-hex segment part for segment, partial and backup files. */
  segment?: string;
}

const SEGMENT = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$/;
const PARTIAL = /^([0-9A-F]{24})\.partial$/;
const HISTORY = /^([0-9A-F]{8})\.history$/;
const BACKUP = /^([0-9A-F]{24})\.[0-9A-F]{8}\.backup$/;

export const MAX_WAL_NAME_LENGTH = 64;

export function parseWalName(name: string): WalName {
  if (typeof name !== 'string' || name.length === 0) throw badWalNameError('WAL file name is empty');
  if (name.length > MAX_WAL_NAME_LENGTH) {
    throw badWalNameError(`WAL file name is ${name.length} characters long (at most ${MAX_WAL_NAME_LENGTH})`);
  }
  const printable = JSON.stringify(name);
  let m: RegExpExecArray | null;
  if ((m = SEGMENT.exec(name))) return { name, kind: 'segment', timeline: parseInt(m[1]!, 16), segment: name };
  if ((m = PARTIAL.exec(name))) return { name, kind: 'partial', timeline: timelineOfName(m[1]!), segment: m[1]! };
  if ((m = HISTORY.exec(name))) return { name, kind: 'history', timeline: parseInt(m[1]!, 16) };
  if ((m = BACKUP.exec(name))) return { name, kind: 'backup', timeline: timelineOfName(m[1]!), segment: m[1]! };
  throw badWalNameError(
    `${printable} is not a WAL file name (expected a 24-hex segment, <segment>.partial, <timeline>.history or <segment>.<offset>.backup)`,
  );
}

/** The timeline in the first 8 hex digits of a WAL file name (segment, .partial, .backup, .history). */
export function timelineOfName(name: string): number {
  return parseInt(name.slice(0, 8), 16);
}

/** Segments and .partial files are sharded by their first 16 hex digits (timeline + log id). */
export function walObjectKey(w: WalName): string {
  if (w.kind === 'segment' || w.kind === 'partial') return `wal/${w.name.slice(0, 16)}/${w.name}`;
  return `wal/${w.name}`;
}

/** Number of segments per 4 GiB "log id" for a given segment size. */
export function segmentsPerLogId(segSize: number): bigint {
  return 0x100000000n / BigInt(segSize);
}

/** Absolute segment number of a 24-hex segment name. */
export function segmentNumber(segment: string, segSize: number): bigint {
  const log = BigInt('0x' + segment.slice(8, 16));
  const seg = BigInt('0x' + segment.slice(16, 24));
  return log * segmentsPerLogId(segSize) + seg;
}

/** A 32-bit number as the 8 upper-case hex digits of WAL file names. */
export const hex8 = (n: number | bigint): string => n.toString(16).toUpperCase().padStart(8, '0');

export function segmentName(timeline: number, segno: bigint, segSize: number): string {
  const per = segmentsPerLogId(segSize);
  return hex8(timeline) + hex8(segno / per) + hex8(segno % per);
}

/** The segment after `segment` on the same timeline. */
export function nextSegment(segment: string, segSize: number, step = 1n): string {
  return segmentName(timelineOfName(segment), segmentNumber(segment, segSize) + step, segSize);
}

/** Segment containing an LSN written "X/Y" (hex), on a timeline. */
export function segmentOfLsn(lsn: string, timeline: number, segSize: number): string {
  return segmentName(timeline, parseLsn(lsn) / BigInt(segSize), segSize);
}

/**
 * Segment holding the last byte before an END pointer such as a backup's stop LSN (PostgreSQL's
 * XLByteToPrevSeg): an end exactly on a segment boundary belongs to the segment before it, which is
 * the file pg_backup_stop waits for and names in the backup history file.
 */
export function segmentOfEndLsn(lsn: string, timeline: number, segSize: number): string {
  const end = parseLsn(lsn);
  return segmentName(timeline, (end > 0n ? end - 1n : 0n) / BigInt(segSize), segSize);
}

export function parseLsn(lsn: string): bigint {
  const m = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(lsn.trim());
  if (!m) throw badWalNameError(`${JSON.stringify(lsn)} is not an LSN (expected X/Y in hex)`);
  return (BigInt('0x' + m[1]) << 32n) | BigInt('0x' + m[2]);
}

export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}
