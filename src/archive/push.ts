import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { retryPolicy, type Config } from '../common/config.js';
import { conflictError } from '../common/errors.js';
import { policyForBody, withRetry, type Deadline, type RetryPolicy } from '../common/retry.js';
import { ensureManifest } from './manifest.js';
import { objectMeta, parseStoredMeta, type StoredMeta } from './objects.js';
import { bodySize, type Storage } from '../storage/types.js';
import { walObjectKey } from '../wal/names.js';
import { memoryFor, prepareLocalWal, STREAMED_MEMORY, type PreparedWal } from './local-wal.js';
import type { ByteBudget } from './byte-budget.js';

// One WAL file from disk to the repository, shared by wal-push, its look-ahead and the look-ahead
// worker: read and checked, hashed and compressed within a memory budget, and uploaded with the
// no-overwrite rule.

export type PushOutcome = 'pushed' | 'already-archived';

/** Pushes one local WAL file with no-overwrite semantics. Shared by wal-push and its look-ahead. */
export async function pushWalFile(
  storage: Storage,
  file: PreparedWal,
  config: Config,
  deadline: Deadline,
  policy: RetryPolicy = retryPolicy(config),
): Promise<{ outcome: PushOutcome; storedSize: number }> {
  const what = `wal-push ${file.wal.name}`;
  await ensureManifest(storage, file.header, file.path, { spool: config.spool, policy, deadline });
  const mine: StoredMeta = { sha256: file.sha256, size: file.size, codec: file.codec };
  const key = walObjectKey(file.wal);
  const stored = bodySize(file.body);
  const res = await withRetry(what, policyForBody(policy, stored), deadline, (signal) => storage.putIfAbsent(key, file.body, objectMeta(mine), { signal }));
  if (res.created) return { outcome: 'pushed', storedSize: stored };

  // PostgreSQL re-archives after a crash: identical content is success, anything else is a conflict.
  let theirs: StoredMeta;
  try {
    theirs = parseStoredMeta(res.existing, `${storage.url}/${key}`);
  } catch {
    throw conflictError(
      `${file.wal.name} already exists in ${storage.url} without walvault metadata; refusing to overwrite it (local SHA-256 ${file.sha256})`,
    );
  }
  if (theirs.sha256 !== mine.sha256 || theirs.size !== mine.size) {
    throw conflictError(
      `${file.wal.name} is already archived with different content: archive SHA-256 ${theirs.sha256} (${theirs.size} bytes), ` +
        `local SHA-256 ${mine.sha256} (${mine.size} bytes); refusing to overwrite (two clusters writing to one repository?)`,
    );
  }
  return { outcome: 'already-archived', storedSize: res.existing.storedSize };
}


export interface PushedFile {
  file: PreparedWal;
  outcome: PushOutcome;
  storedSize: number;
}

export async function prepareAndPush(
  storage: Storage | Promise<Storage>,
  path: string,
  name: string,
  config: Config,
  deadline: Deadline,
  budget: ByteBudget,
  policy: RetryPolicy,
  reserved?: number,
): Promise<PushedFile> {
  // Reserve the memory before reading; after compression only an in-memory body is held.
  let held = reserved ?? (await memoryReservation(path));
  if (reserved === undefined) await budget.acquire(held);
  let file: PreparedWal | undefined;
  try {
    file = await prepareLocalWal(path, name, config.compression, config.compressionLevel, join(config.spool, 'tmp'));
    const inMemory = Buffer.isBuffer(file.body) ? file.body.length : STREAMED_MEMORY;
    budget.release(held - Math.min(held, inMemory));
    held = Math.min(held, inMemory);
    // (the storage driver may still be loading: reading and compressing overlap with it)
    const { outcome, storedSize } = await pushWalFile(await storage, file, config, deadline, policy);
    return { file, outcome, storedSize };
  } finally {
    budget.release(held);
    await file?.dispose();
  }
}

/** What a file will hold in memory while it is prepared and uploaded: the ByteBudget reservation. */
export const memoryReservation = (path: string) => stat(path).then((s) => memoryFor(s.size), () => 0);
