import { dirname, resolve } from 'node:path';
import type { Config } from '../common/config.js';
import { elapsed, formatBytes } from '../common/log.js';
import { nextSegment, parseWalName } from '../wal/names.js';
import { askWorker } from './client.js';
import { serveFromSpool } from './serve.js';
import { afterSegmentServed, noteHistoryRequest, prefetchContextFromCache } from './spool-dir.js';
import { configFingerprint } from '../worker/control.js';
import { hasTempFiles, logLine } from '../fs/sync-io.js';
import { repoUrlOf } from '../storage/open.js';

// The no-SDK path of wal-fetch: the file PostgreSQL asks for was prefetched by the worker an earlier
// wal-fetch started, or that worker (which has the storage client loaded already) fetches it now.
// A file is handed over only after it re-hashes to the SHA-256 recorded from the object's metadata.
// "Not in the repository" is answered here only when the worker asked the repository for this very
// request (and, for a segment, found no gap); anything else falls back to the normal fetch.

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
  const ctx = await prefetchContextFromCache(config);
  if (!ctx) return null;
  const target = resolve(path);
  // A walvault killed mid-fetch leaves only a temp file: remove it before PostgreSQL looks around.
  if (hasTempFiles(dirname(target))) await (await import('../fs/atomic.js')).cleanupStaleTemps(dirname(target));
  const segment = wal.kind === 'segment';
  if (!segment) await noteHistoryRequest(ctx, wal.timeline);

  let served = await serveFromSpool(ctx.dir, name, target);
  if (!served.served && !served.reason) {
    const answer = await askWorker(ctx, name, segment, wal.timeline, {
      fingerprint: configFingerprint(config),
      // at most half the command's deadline: the rest is for asking the repository directly
      waitMs: Math.min(config.attemptTimeout, config.deadline / 2) * 1000,
    });
    if (answer === 'absent') {
      logLine(config, 'wal-fetch', 'info', `${name} is not in ${repoUrlOf(config.repo)} (not found, asked by the prefetch worker); exiting 1`);
      return 1;
    }
    if (answer === 'file') served = await serveFromSpool(ctx.dir, name, target);
  }
  if (!served.served) {
    if (served.reason) logLine(config, 'wal-fetch', 'warn', `prefetched ${name} not used (${served.reason}); fetching it from the repository`);
    return null;
  }
  logLine(config, 'wal-fetch', 'info', `fetched ${name} from the prefetch spool (${formatBytes(served.size)}, verified SHA-256, ${elapsed(started)})`);
  if (segment) await afterSegmentServed(config, ctx, name, nextSegment(name, ctx.segSize));
  return 0;
}
