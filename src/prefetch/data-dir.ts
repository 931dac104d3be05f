import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import { endianness } from 'node:os';
import { join } from 'node:path';

// What the data directory being restored says about itself, read before any storage code loads:
// the first wal-fetch of a restore keys the prefetch spool with it when the spool has no copy of the
// repository manifest yet (a new machine, an emptied spool), so that the worker can start at once.

/**
 * The PostgreSQL system identifier in `dataDir`/global/pg_control: the first field of
 * ControlFileData (a uint64 in the machine's byte order) in every PostgreSQL version. Null when
 * there is no readable pg_control. Only a cache key: the prefetch worker checks it against the
 * repository's manifest before fetching anything (src/prefetch/worker.ts).
 */
export function dataDirSystemIdentifier(dataDir: string): string | null {
  const head = readControlHead(dataDir);
  return head ? parseSystemIdentifier(head, endianness()) : null;
}

/** Where replay will start: a segment name (backup_label) or an LSN and timeline (pg_control). */
export interface RecoveryStart {
  timeline: number;
  segment?: string;
  lsn?: string;
}

/**
 * Where the restore's WAL replay starts, to prefetch its first segments while PostgreSQL is still
 * asking for timeline history files: the START WAL LOCATION of backup_label (a base backup being
 * restored), else the redo pointer of pg_control's latest checkpoint. Only a guess that costs a few
 * downloads when wrong: files are served by exact name, and the first segment request resets it.
 */
export function recoveryStart(dataDir: string): RecoveryStart | null {
  try {
    const label = readFileSync(join(dataDir, 'backup_label'), 'latin1');
    const m = /^START WAL LOCATION: [0-9A-F]+\/[0-9A-F]+ \(file ([0-9A-F]{24})\)$/m.exec(label);
    return m ? { timeline: parseInt(m[1]!.slice(0, 8), 16), segment: m[1]! } : null;
  } catch {
    // no backup_label: a cleanly stopped or crashed cluster, replay starts at its checkpoint's redo
  }
  const head = readControlHead(dataDir);
  return head ? parseControlStart(head, endianness()) : null;
}

/**
 * ControlFileData from PostgreSQL 11 on (pg_control_version >= 1100): system_identifier (uint64),
 * pg_control_version (uint32), catalog_version_no, state, time (int64, 8-aligned), checkPoint
 * (uint64), then checkPointCopy: redo (uint64) at offset 40 and ThisTimeLineID (uint32) at 48.
 */
export function parseControlStart(head: Buffer, order: 'LE' | 'BE'): RecoveryStart | null {
  if (head.length < CONTROL_HEAD) return null;
  const u32 = (o: number) => (order === 'LE' ? head.readUInt32LE(o) : head.readUInt32BE(o));
  const version = u32(8);
  if (version < 1100 || version >= 10000) return null;
  const redo = order === 'LE' ? head.readBigUInt64LE(40) : head.readBigUInt64BE(40);
  const timeline = u32(48);
  if (timeline === 0 || redo === 0n) return null;
  return { timeline, lsn: `${(redo >> 32n).toString(16).toUpperCase()}/${(redo & 0xffffffffn).toString(16).toUpperCase()}` };
}

const CONTROL_HEAD = 52;

function readControlHead(dataDir: string): Buffer | null {
  let fd: number;
  try {
    fd = openSync(join(dataDir, 'global', 'pg_control'), 'r');
  } catch {
    return null;
  }
  try {
    const buf = Buffer.alloc(CONTROL_HEAD);
    return readSync(fd, buf, 0, CONTROL_HEAD, 0) === CONTROL_HEAD ? buf : null;
  } catch {
    return null;
  } finally {
    closeSync(fd);
  }
}

export function parseSystemIdentifier(head: Buffer, order: 'LE' | 'BE'): string | null {
  if (head.length < 8) return null;
  const v = order === 'LE' ? head.readBigUInt64LE(0) : head.readBigUInt64BE(0);
  return v === 0n ? null : v.toString();
}
