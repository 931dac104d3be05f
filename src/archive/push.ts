import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { retryPolicy, type Config } from '../common/config.js';
import { conflictError } from '../common/errors.js';
import { policyForBody, withRetry, type Deadline, type RetryPolicy } from '../common/retry.js';
import { ensureManifest } from './manifest.js';
import { objectMeta, parseStoredMeta, type StoredMeta } from './objects.js';
import { bodySize, storedSizeFor, type Storage } from '../storage/types.js';
import { walObjectKey } from '../wal/names.js';
import { IN_MEMORY_MAX, memoryFor, prepareLocalWal, STREAMED_MEMORY, type PreparedWal } from './local-wal.js';
import { ByteBudget } from './byte-budget.js';
import { freeNow, smallYoungGeneration } from './large-body.js';
import type { Codec } from '../codec/codec.js';

// One WAL file from disk to the repository, shared by wal-push, its look-ahead and the look-ahead
// worker: read and checked, hashed and compressed within a memory budget, and uploaded with the
// no-overwrite rule.

smallYoungGeneration();

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
  if (res.created) return { outcome: 'pushed', storedSize: storedSizeFor(storage, stored) };

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

/**
 * Files read, hashed and compressed at once by one process. Two keep both cores busy (SHA-256 on the
 * main thread, compression in the libuv pool); more would only hold more buffers and compressor
 * state at once, while uploads (which need no slot) stay as concurrent as the memory budget allows.
 */
const preparing = new ByteBudget(2);

/**
 * What a compressed 16 MiB segment is expected to hold while it is prepared: two 1 MiB read chunks
 * and its compressed body (~2 MiB for real WAL at zstd 1). A body that turns out larger (random
 * bytes) is counted at its real size once compressed; at most `preparing` files can overshoot so.
 */
const COMPRESSED_ESTIMATE = 4 * 1024 * 1024;
const EMPTY = Buffer.alloc(0);

export async function prepareAndPush(
  storage: Storage | Promise<Storage>,
  path: string,
  name: string,
  config: Config,
  deadline: Deadline,
  budget: ByteBudget,
  policy: RetryPolicy,
): Promise<PushedFile> {
  // A preparation slot first, then the memory: only files being prepared wait for memory, which the
  // uploads in flight give back without needing a slot (no cycle). Callers start their own file
  // first, so it is first in both queues.
  await preparing.acquire(1);
  let slot = true;
  let held = 0;
  let file: PreparedWal | undefined;
  try {
    const reserve = await memoryReservation(path, config.compression);
    await budget.acquire(reserve);
    held = reserve;
    file = await prepareLocalWal(path, name, config.compression, config.compressionLevel, join(config.spool, 'tmp'));
    preparing.release(1);
    slot = false;
    const inMemory = Buffer.isBuffer(file.body) ? file.body.length : STREAMED_MEMORY;
    if (inMemory > held) budget.take(inMemory - held);
    else budget.release(held - inMemory);
    held = inMemory;
    // (the storage driver may still be loading: reading and compressing overlap with it)
    const { outcome, storedSize } = await pushWalFile(await storage, file, config, deadline, policy);
    // A batch keeps every PushedFile until its last upload ends: without the body, already stored.
    return { file: { ...file, body: EMPTY }, outcome, storedSize };
  } finally {
    if (slot) preparing.release(1);
    budget.release(held);
    await file?.dispose();
    // The upload is over, so nothing reads the body again: a PUT is answered after all of its body
    // was sent, or early (refused: nothing stored), or was aborted (its socket destroyed, libuv sends
    // nothing more). Bytes a socket could still send after an early answer go into a request the
    // store has already refused; a stored object got all its bytes first, checked by Content-MD5.
    if (file && Buffer.isBuffer(file.body)) freeNow([file.body]);
  }
}

/** What a file is expected to hold in memory while it is prepared: its ByteBudget reservation. */
async function memoryReservation(path: string, codec: Codec): Promise<number> {
  const size = await stat(path).then((s) => s.size, () => 0);
  // Uncompressed, a file held in memory is its own body; a larger one is streamed (STREAMED_MEMORY).
  if (codec === 'none' || size > IN_MEMORY_MAX) return memoryFor(size);
  return Math.min(size, COMPRESSED_ESTIMATE);
}
