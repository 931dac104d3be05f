import { closeSync, openSync, readSync } from 'node:fs';
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
  let fd: number;
  try {
    fd = openSync(join(dataDir, 'global', 'pg_control'), 'r');
  } catch {
    return null;
  }
  try {
    const buf = Buffer.alloc(8);
    if (readSync(fd, buf, 0, 8, 0) !== 8) return null;
    return parseSystemIdentifier(buf, endianness());
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
