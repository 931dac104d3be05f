import type { Writable } from 'node:stream';
import type { Owner } from '../common/file-trust.js';
import { createExtractor, removeFiles } from './extract.js';
import { needsWorker, startWorker, type WorkerResult } from './restore-worker.js';

/**
 * Where the tar stream goes: an extractor in this process, or the stdin of a worker running as
 * `owner`. `run` waits for both the feeding pipeline and the extraction; when both fail, the
 * worker's own error is the cause unless the feed failed first for its own reasons. `stop` ends a
 * failed extraction and resolves once it can write nothing more.
 */
export function openSink(
  pgdata: string,
  owner: Owner | undefined,
  keepModes = false,
): { stream: Writable; run: (feed: Promise<void>) => Promise<WorkerResult>; stop: () => Promise<void> } {
  if (!needsWorker(owner)) {
    const ex = createExtractor(pgdata, { keepModes });
    return { stream: ex, run: async (feed) => (await feed, { entries: ex.entries(), ...ex.synced() }), stop: () => (ex.destroy(), ex.settled()) };
  }
  const worker = startWorker('extract', pgdata, owner, keepModes ? 'files' : undefined);
  return {
    stream: worker.stdin!,
    stop: async () => {
      worker.kill();
      await worker.done.catch(() => undefined);
    },
    run: async (feed) => {
      const [f, w] = await Promise.allSettled([feed.catch((e: unknown) => (worker.kill(), Promise.reject(e))), worker.done]);
      if (w.status === 'fulfilled' && f.status === 'fulfilled') return w.value as unknown as WorkerResult;
      const feedErr = f.status === 'rejected' ? (f.reason as NodeJS.ErrnoException) : undefined;
      const brokenPipe = feedErr?.code === 'EPIPE' || feedErr?.code === 'ERR_STREAM_DESTROYED' || feedErr?.code === 'ERR_STREAM_PREMATURE_CLOSE';
      if (w.status === 'rejected' && (!feedErr || brokenPipe)) throw w.reason;
      throw feedErr ?? (w as PromiseRejectedResult).reason;
    },
  };
}

/** Removes files under `pgdata` (extract.ts removeFiles), as `owner` when that is another user. */
export async function removeAsOwner(pgdata: string, owner: Owner | undefined, paths: string[]): Promise<void> {
  if (!needsWorker(owner)) return removeFiles(pgdata, paths);
  const w = startWorker('unlink', pgdata, owner);
  w.stdin!.end(JSON.stringify(paths));
  await w.done;
}
