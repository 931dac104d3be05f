import { mkdir, readdir, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { writeJsonReplace } from '../fs/json-file.js';
import { parseIdentity, type FileIdentity } from '../fs/file-identity.js';
import { verifyFileSync, type VerifyResult } from '../fs/verify-file.js';
import { pidAlive } from '../common/pid.js';

// What the look-ahead of wal-push writes after each successful upload, so that PostgreSQL's own later
// call for that file can exit 0 at once: one small JSON file per WAL file, in the spool (outside
// PGDATA), per repository. The record is only a hint: the fast path trusts it only when the local file
// still has the identity it had while it was read and hashed for the upload (src/fs/file-identity.ts),
// or else after re-reading it and finding the same size and SHA-256, so a stale record (a different
// file under the same name: a new cluster, a restored backup, a rewound primary) is never taken for
// an upload.
//
// This module is on the startup-critical path of every wal-push: Node built-ins and the import-light
// fs/ helpers only (json-file, verify-file), nothing that loads the storage driver.

export interface PushRecord {
  v: 1;
  name: string;
  size: number;
  sha256: string;
  /** stat of the local file when it was read for the upload (diagnostics). */
  mtimeMs: number;
  ino: number;
  dev: number;
  /**
   * The file's identity, unchanged from before to after the read that computed `sha256`. Absent
   * when it changed or was too recent to tell (and in records of older versions): then the fast
   * path re-hashes.
   */
  identity?: FileIdentity;
  /** Repository URL the object is in (the directory is per repository too; checked again). */
  repo: string;
  pushedAt: string;
}

/** `<repoCacheDir>/pushed`: the caller computes repoCacheDir (src/archive/cache-dir.ts). */
export function pushRecordDir(repoCache: string): string {
  return join(repoCache, 'pushed');
}

function recordPath(repoCache: string, name: string): string {
  return join(pushRecordDir(repoCache), `${name}.json`);
}

export async function writePushRecord(repoCache: string, rec: PushRecord): Promise<void> {
  const dir = pushRecordDir(repoCache);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  // No fsync: a record lost in a crash only costs one normal (idempotent) push, and a torn one fails
  // to parse and is ignored.
  await writeJsonReplace(recordPath(repoCache, rec.name), rec);
}

export async function readPushRecord(repoCache: string, name: string): Promise<PushRecord | null> {
  let text: string;
  try {
    text = await readFile(recordPath(repoCache, name), 'utf8');
  } catch {
    return null;
  }
  return parsePushRecord(text, name);
}

export function parsePushRecord(text: string, name: string): PushRecord | null {
  try {
    const r = JSON.parse(text) as PushRecord;
    if (
      r &&
      r.v === 1 &&
      r.name === name &&
      Number.isSafeInteger(r.size) &&
      r.size > 0 &&
      typeof r.sha256 === 'string' &&
      /^[0-9a-f]{64}$/.test(r.sha256) &&
      typeof r.repo === 'string'
    ) {
      // A malformed identity only costs the hash, never the record.
      const identity = parseIdentity(r.identity);
      delete r.identity;
      return identity ? { ...r, identity } : r;
    }
  } catch {
    // torn or foreign file: not a record
  }
  return null;
}

export async function removePushRecord(repoCache: string, name: string): Promise<void> {
  await unlink(recordPath(repoCache, name)).catch(() => undefined);
}

/** Names that have a record (cheap: one readdir). */
export async function listPushRecords(repoCache: string): Promise<string[]> {
  const names = await readdir(pushRecordDir(repoCache)).catch(() => [] as string[]);
  return names.filter((n) => n.endsWith('.json')).map((n) => n.slice(0, -'.json'.length));
}

/**
 * Drops records whose file is no longer waiting for archiving (PostgreSQL archived it and recycled
 * it, or the record belongs to another incarnation), keeping `keep`. Best effort.
 */
export async function pruneRecords(repoCache: string, stillReady: Set<string>, keep: Set<string> = new Set()): Promise<void> {
  const dir = pushRecordDir(repoCache);
  const entries = await readdir(dir).catch(() => [] as string[]);
  for (const entry of entries) {
    if (entry.endsWith('.tmp')) {
      // Left by a writer killed between write and rename: tidy it. A live writer's (the look-ahead
      // worker recording an upload while wal-push prunes) is never touched, or its record is lost.
      const writer = Number(/\.(\d+)\.tmp$/.exec(entry)?.[1]);
      if (!(writer > 0 && pidAlive(writer))) await unlink(join(dir, entry)).catch(() => undefined);
      continue;
    }
    if (!entry.endsWith('.json')) continue;
    const name = entry.slice(0, -'.json'.length);
    if (!stillReady.has(name) && !keep.has(name)) await unlink(join(dir, entry)).catch(() => undefined);
  }
}

/**
 * Checks a local file against a recorded upload: the recorded identity, else the same size and
 * SHA-256, or not trusted. `forceHash` (setting fastPathHash) ignores the identity.
 */
export function verifyAgainstRecord(path: string, rec: PushRecord, forceHash = false): VerifyResult {
  return verifyFileSync(path, rec.size, rec.sha256, forceHash ? undefined : rec.identity);
}
