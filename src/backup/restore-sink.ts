import type { Writable } from 'node:stream';
import type { Owner } from '../common/file-trust.js';
import { createExtractor } from './extract.js';
import { needsWorker, startWorker, type WorkerResult } from './restore-worker.js';

/**
 * Where the tar stream goes: an extractor in this process, or the stdin of a worker running as
 * `owner`. `run` waits for both the feeding pipeline and the extraction; when both fail, the
 * worker's own error is the cause unless the feed failed first for its own reasons.
 */
export function openSink(pgdata: string, owner: Owner | undefined): { stream: Writable; run: (feed: Promise<void>) => Promise<WorkerResult> } {
  if (!needsWorker(owner)) {
    const ex = createExtractor(pgdata);
    return { stream: ex, run: async (feed) => (await feed, { entries: ex.entries(), ...ex.synced() }) };
  }
  const worker = startWorker('extract', pgdata, owner);
  return {
    stream: worker.stdin!,
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
