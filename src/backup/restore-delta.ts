import { constants } from 'node:fs';
import { lstat, open, readdir, rm, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { backupError, fromFsError } from '../common/errors.js';
import { openPlainFile } from './extract.js';
import { HELD_BACK } from './file-plan.js';
import { readSha256 } from './pieced-files.js';
import { RECORD_NAME } from './restore-record.js';

// backup-fetch --delta: restore over an existing, stopped data directory of the same cluster (a
// standby to rebuild, a copy gone astray). Before anything is removed: no live postmaster.pid, and
// global/pg_control of the same system (or the progress record of a restore walvault left there).
// Then everything that is not exactly in the backup goes: files whose size and SHA-256 match the
// list stay, any other file, link or directory is removed (nothing of the old pg_wal, no signal
// file, no old backup_label, backup_manifest or postmaster files survive). global/pg_control is
// always rewritten, so PostgreSQL cannot start on the directory until the restore has finished.
// Run in the process that owns the directory (the restore worker's "delta" op for another owner):
// lstat and unlink only, no link followed.

export interface DeltaRequest {
  systemIdentifier: string;
  /** Every file of the backup under its final name. */
  files: Array<{ path: string; size: number; sha256: string }>;
  dirs: string[];
}

export interface DeltaResult {
  /** Bit i set: files[i] is already there, exactly. Base64. */
  kept: string;
  removed: number;
}

/** Files hashed at once. */
const PARALLEL = 4;

export async function scanDelta(root: string, req: DeltaRequest): Promise<DeltaResult> {
  await checkDeltaTarget(root, req.systemIdentifier);
  const index = new Map(req.files.map((f, i) => [f.path, i]));
  const dirs = new Set(req.dirs);
  const candidates: number[] = [];
  let removed = 0;
  const remove = async (full: string, dir: boolean) => {
    removed++;
    await (dir ? rm(full, { recursive: true, force: true }) : unlink(full)).catch((e: unknown) => {
      throw fromFsError(e, full, 'write');
    });
  };
  const walk = async (rel: string): Promise<void> => {
    for (const name of await readdir(rel ? join(root, rel) : root)) {
      const path = rel ? `${rel}/${name}` : name;
      const full = join(root, path);
      const st = await lstat(full);
      if (st.isDirectory()) {
        if (dirs.has(path)) await walk(path);
        else await remove(full, true);
        continue;
      }
      const i = index.get(path);
      if (st.isFile() && i !== undefined && st.size === req.files[i]!.size && !Object.hasOwn(HELD_BACK, path)) candidates.push(i);
      else await remove(full, false);
    }
  };
  await walk('');
  const kept = new Uint8Array(Math.ceil(req.files.length / 8));
  let next = 0;
  const work = async (): Promise<void> => {
    const buf = Buffer.allocUnsafe(1024 * 1024);
    for (let k = next++; k < candidates.length; k = next++) {
      const f = req.files[candidates[k]!]!;
      const full = join(root, f.path);
      let same = false;
      try {
        const fh = await openPlainFile(full, constants.O_RDONLY);
        try {
          const { size, digest } = await readSha256(fh, buf);
          same = size === f.size && digest === f.sha256;
        } finally {
          await fh.close();
        }
      } catch {
        same = false;
      }
      if (same) kept[candidates[k]! >> 3]! |= 1 << (candidates[k]! & 7);
      else await remove(full, false);
    }
  };
  await Promise.all(Array.from({ length: PARALLEL }, work));
  return { kept: Buffer.from(kept).toString('base64'), removed };
}

/** Refuses a running cluster, or one of another system. */
async function checkDeltaTarget(root: string, systemIdentifier: string): Promise<void> {
  const pidFile = await readSmall(join(root, 'postmaster.pid'), 4096);
  if (pidFile !== null) {
    const pid = Number(pidFile.toString('utf8').split('\n')[0]);
    if (Number.isSafeInteger(pid) && pid > 0 && alive(pid)) {
      throw backupError(`${root} is in use: postmaster.pid names process ${pid}, which is running; stop PostgreSQL before backup-fetch --delta`);
    }
  }
  const control = await readSmall(join(root, 'global', 'pg_control'), 8192);
  if (control === null || control.length < 8) {
    // An interrupted restore of walvault holds its progress record instead (pg_control comes last).
    if ((await readSmall(join(root, RECORD_NAME), 64 * 1024 * 1024)) !== null) return;
    throw backupError(`${root} has no global/pg_control: not a data directory backup-fetch --delta can restore over`);
  }
  const found = control.readBigUInt64LE(0).toString();
  if (found !== systemIdentifier) {
    throw backupError(`${root} belongs to database system ${found}, the backup to ${systemIdentifier}; backup-fetch --delta restores over the same system only`);
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The start of a plain file (no link followed), or null when there is none. */
async function readSmall(path: string, max: number): Promise<Buffer | null> {
  let fh;
  try {
    fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    throw fromFsError(e, path, 'read');
  }
  try {
    if (!(await fh.stat()).isFile()) throw backupError(`${path} is not a plain file; refusing backup-fetch --delta`);
    const buf = Buffer.alloc(max);
    const { bytesRead } = await fh.read(buf, 0, max, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}
