import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ask } from '../worker/protocol.js';
import { readPrefetchState, readRecord, type PrefetchContext, type PrefetchState } from './spool-dir.js';

// wal-fetch's side of the prefetch worker: asking it for the file PostgreSQL wants now.

export type PrefetchAnswer = 'file' | 'absent' | 'ask-repository';

/**
 * Asks the running worker for `name` (it prefetches segments from there on) and waits for its
 * answer: the file in the spool, or "absent" (the repository answered 404 to the worker for this
 * very request and, for a segment, the high-water mark says it is not a gap). Anything else (no
 * worker, an error, no answer in time) means: ask the repository yourself.
 */
export async function askWorker(
  ctx: PrefetchContext,
  name: string,
  segment: boolean,
  timeline: number,
  opts: { fingerprint: string; waitMs: number },
): Promise<PrefetchAnswer> {
  const answer = await ask<PrefetchState>(ctx.dir, name, {
    ...opts,
    done: () => readRecord(ctx.dir, name) !== null && existsSync(join(ctx.dir, name)),
    // A segment request also moves where prefetching continues; a history file's leaves it.
    fields: async () => {
      const prev = await readPrefetchState(ctx.dir);
      return { timeline: segment ? timeline : (prev?.timeline ?? timeline), ...(segment ? { next: name } : prev?.next ? { next: prev.next } : {}) };
    },
  });
  if (answer === 'done') return 'file';
  return answer !== 'no-answer' && answer.result === 'absent' ? 'absent' : 'ask-repository';
}
