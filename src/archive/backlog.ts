import { readdir, readFile, stat, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { describe } from '../common/errors.js';
import { ensureDir, writeJsonAtomic } from '../fs/atomic.js';
import { formatBytes, log } from '../common/log.js';
import type { Deadline, RetryPolicy } from '../common/retry.js';
import { repoCacheDir } from './cache-dir.js';
import type { Storage } from '../storage/types.js';
import { bookkeepingBudget, writeBookkeeping } from './small-objects.js';

// Opt-in disk-full protection (maxReadyBytes). If archiving cannot keep up, pg_wal grows until the
// filesystem fills and PostgreSQL PANICs. Past the limit, wal-push reports the oldest files as archived
// without storing them, so PostgreSQL can recycle them and stay up, at the price of a hole in the
// archive: point-in-time recovery across it becomes impossible. Every dropped file is logged loudly
// and recorded as a marker object (state/gaps/<name>.json) so that verify/backup-fetch can tell.

/** Total size of the WAL files PostgreSQL still has to archive (pg_wal/archive_status/*.ready). */
export async function readyBacklogBytes(walDir: string): Promise<{ files: number; bytes: number }> {
  const statusDir = join(walDir, 'archive_status');
  let names: string[];
  try {
    names = await readdir(statusDir);
  } catch {
    return { files: 0, bytes: 0 };
  }
  let bytes = 0;
  let files = 0;
  for (const n of names) {
    if (!n.endsWith('.ready')) continue;
    const s = await stat(join(walDir, n.slice(0, -'.ready'.length))).catch(() => null);
    if (s) {
      bytes += s.size;
      files++;
    }
  }
  return { files, bytes };
}

export function gapMarkerKey(name: string): string {
  return `state/gaps/${name}.json`;
}

function pendingDir(spool: string, repoKey: string): string {
  return join(repoCacheDir(spool, repoKey), 'pending-gaps');
}

/**
 * Decides whether `walPath` must be dropped. Returns true (after logging and recording the gap) when
 * the backlog exceeds `limit`; the caller then exits 0 without uploading.
 */
export async function dropIfOverLimit(
  walPath: string,
  name: string,
  limit: number,
  ctx: { spool: string; repoKey: string },
): Promise<boolean> {
  const backlog = await readyBacklogBytes(dirname(walPath));
  if (backlog.bytes <= limit) return false;
  const marker = {
    name,
    droppedAt: new Date().toISOString(),
    backlogBytes: backlog.bytes,
    backlogFiles: backlog.files,
    maxReadyBytes: limit,
    reason: 'archive backlog exceeded maxReadyBytes; WAL file reported archived without being stored',
  };
  log.error(
    `DROPPING ${name} WITHOUT ARCHIVING IT: ${backlog.files} files (${formatBytes(backlog.bytes)}) wait for archiving, ` +
      `over maxReadyBytes ${formatBytes(limit)}. Point-in-time recovery across ${name} is now impossible; take a new base backup.`,
  );
  const dir = pendingDir(ctx.spool, ctx.repoKey);
  await ensureDir(dir);
  await writeJsonAtomic(join(dir, `${name}.json`), marker);
  return true;
}

/** Uploads gap markers recorded while the store was unreachable (called after a successful push). */
export async function flushGapMarkers(
  storage: Storage,
  ctx: { spool: string; policy: RetryPolicy; deadline: Deadline },
): Promise<void> {
  const dir = pendingDir(ctx.spool, storage.cacheKey);
  const names = (await readdir(dir).catch(() => [] as string[])).filter((n) => n.endsWith('.json'));
  if (names.length === 0) return;
  const budget = bookkeepingBudget(ctx);
  try {
    await flushEach(storage, dir, names, budget);
  } finally {
    budget.deadline.dispose();
  }
}

async function flushEach(storage: Storage, dir: string, names: string[], budget: { policy: RetryPolicy; deadline: Deadline }): Promise<void> {
  for (const file of names) {
    try {
      const body = await readFile(join(dir, file));
      const key = gapMarkerKey(file.slice(0, -'.json'.length));
      // The key names the first dropped segment: a marker already there (another spool recorded the
      // same drop) says what this one says, whatever its bytes.
      await writeBookkeeping(storage, key, body, budget, { anyContent: true });
      await unlink(join(dir, file));
      log.warn(`recorded archive gap marker ${key}`);
    } catch (e) {
      log.warn(`could not record gap marker for ${file}: ${describe(e)}`);
      return;
    }
  }
}
