import { dirname, resolve } from 'node:path';
import type { Config } from '../common/config.js';
import { elapsed, formatBytes } from '../common/log.js';
import { nextSegment, parseWalName } from '../wal/names.js';
import { askWorker } from './client.js';
import { serveFromSpool } from './serve.js';
import { afterSegmentServed, bootContext, noteHistoryRequest, prefetchContextFromCache, type PrefetchContext, type PrefetchJob, type PrefetchState } from './spool-dir.js';
import { configFingerprint, startWorker, workerRunning } from '../worker/control.js';
import { hasTempFiles, logLine } from '../fs/sync-io.js';
import { repoUrlOf } from '../storage/open.js';
import { ackTargetFrom } from './fetch-ack.js';
import { recoveryStart } from './data-dir.js';
import { writeState } from '../worker/protocol.js';
import { segmentOfLsn } from '../wal/names.js';

// The no-SDK path of wal-fetch: the file PostgreSQL asks for was prefetched by the worker an earlier
// wal-fetch started, or that worker (which has the storage client loaded already) fetches it now.
// When no worker runs, this call starts one and asks it, rather than loading the storage driver
// itself: the first call of a restore (often a timeline history file that does not exist) then pays
// for the SDK once, in the process that keeps it for the rest of the restore.
// A file is handed over only verified: unchanged since the worker verified it (its identity), or
// re-hashed to the SHA-256 recorded from the object's metadata. "Not in the repository" is answered
// here only when the worker asked the repository for this very request (and, for a segment, found no
// gap); anything else falls back to the normal fetch.

/** Exit code when the spool or the worker answered; null when the normal fetch must run. */
export async function tryFastFetch(config: Config, name: string, path: string, started = process.hrtime.bigint()): Promise<number | null> {
  if (config.prefetch <= 0) return null;
  let wal;
  try {
    wal = parseWalName(name);
  } catch {
    return null; // the normal path reports the bad name
  }
  if (wal.kind !== 'segment' && wal.kind !== 'history') return null;
  let ctx = (await prefetchContextFromCache(config)) ?? bootContext(config);
  if (!ctx) return null;
  const target = resolve(path);
  // A walvault killed mid-fetch leaves only a temp file: remove it before PostgreSQL looks around.
  if (hasTempFiles(dirname(target))) await (await import('../fs/atomic.js')).cleanupStaleTemps(dirname(target));
  const segment = wal.kind === 'segment';
  if (!segment) await noteHistoryRequest(ctx, wal.timeline);
  let ack: ReturnType<typeof ackTargetFrom> | null = null; // looked up once, when a worker may start
  const job = (c: PrefetchContext): PrefetchJob => {
    if (ack === null) ack = ackTargetFrom(config);
    return { config, ...c, ...(ack ? { ack } : {}) };
  };

  const rehash = config.fastPathHash;
  let served = await serveFromSpool(ctx.dir, name, target, { rehash });
  if (!served.served && !served.reason) {
    const fingerprint = configFingerprint(config);
    if (!workerRunning(ctx.dir)) await startWorker('prefetch', await withStartHint(ctx, job(ctx)));
    const answer = await askWorker(ctx, name, segment, wal.timeline, {
      fingerprint,
      // at most half the command's deadline: the rest is for asking the repository directly
      waitMs: Math.min(config.attemptTimeout, config.deadline / 2) * 1000,
    });
    if (answer === 'absent') {
      logLine(config, 'wal-fetch', 'info', `${name} is not in ${repoUrlOf(config.repo)} (not found, asked by the prefetch worker, ${elapsed(started)}); exiting 1`);
      return 1;
    }
    if (answer === 'file') served = await serveFromSpool(ctx.dir, name, target, { rehash });
  }
  if (!served.served) {
    if (served.reason) logLine(config, 'wal-fetch', 'warn', `prefetched ${name} not used (${served.reason}); fetching it from the repository`);
    return null;
  }
  const how = served.by === 'identity' ? 'verified SHA-256 by the prefetch worker, unchanged since' : 'verified SHA-256';
  logLine(config, 'wal-fetch', 'info', `fetched ${name} from the prefetch spool (${formatBytes(served.size)}, ${how}, ${elapsed(started)})`);
  if (segment) {
    // Keyed from the data directory, the segment size is known once the worker cached the manifest.
    if (!ctx.segSize) ctx = await prefetchContextFromCache(config);
    if (ctx?.segSize) await afterSegmentServed(ctx, name, nextSegment(name, ctx.segSize), job(ctx));
  }
  return 0;
}

/**
 * A worker started for a restore's first request (usually a timeline history file that does not
 * exist) also starts prefetching where replay will begin (src/prefetch/data-dir.ts), so that the
 * first segments download while PostgreSQL is still probing for timelines. The state written here
 * is only where prefetching continues; PostgreSQL's first segment request replaces it.
 */
async function withStartHint(ctx: PrefetchContext, job: PrefetchJob): Promise<PrefetchJob> {
  const start = recoveryStart(process.cwd());
  if (!start) return job;
  const next = start.segment ?? (ctx.segSize && start.lsn ? segmentOfLsn(start.lsn, start.timeline, ctx.segSize) : undefined);
  await writeState<PrefetchState>(ctx.dir, { timeline: start.timeline, ...(next ? { next } : {}), at: Date.now() }).catch(() => undefined);
  const first = { ...job, firstRequest: true };
  return next || !start.lsn ? first : { ...first, start: { timeline: start.timeline, lsn: start.lsn } };
}
