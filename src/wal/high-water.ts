import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ExitCode, WalvaultError, describe, walGapError } from '../common/errors.js';
import { writeFileAtomic } from '../common/fs-atomic.js';
import { sha256Hex } from '../common/hash.js';
import { log } from '../common/log.js';
import { Deadline, withRetry, type RetryPolicy } from '../common/retry.js';
import { readAll } from '../repo/objects.js';
import { repoCacheDir } from '../repo/manifest.js';
import type { Storage } from '../storage/types.js';

// "Not found" is only trustworthy above what the archive is known to hold. Per timeline, wal-push
// records the range [first, last] of segments archived contiguously (PostgreSQL archives in order and
// never skips a file, so a successful push of N means everything from `first` to N is archived).
// wal-fetch treats a miss inside that range as a gap (error), not as the end of WAL.
export interface HighWater {
  timeline: number;
  first: string;
  last: string;
  updatedAt: string;
}

/** Longest a push spends on bookkeeping writes (high-water mark, gap markers) after its WAL is safe. */
export const BOOKKEEPING_BUDGET_MS = 5_000;

export function highWaterKey(timeline: number): string {
  return `state/timeline-${timeline.toString(16).toUpperCase().padStart(8, '0')}.json`;
}

interface LocalState extends HighWater {
  remoteLast?: string;
  writtenAt?: number;
}

function parse(text: string): HighWater | null {
  try {
    const v = JSON.parse(text) as HighWater;
    if (typeof v.first === 'string' && typeof v.last === 'string' && /^[0-9A-F]{24}$/.test(v.last)) return v;
  } catch {
    // fall through
  }
  return null;
}

export async function readHighWater(
  storage: Storage,
  timeline: number,
  ctx: { policy: RetryPolicy; deadline: Deadline },
): Promise<HighWater | null> {
  return withRetry(`read ${highWaterKey(timeline)}`, ctx.policy, ctx.deadline, async (signal) => {
    const got = await storage.get(highWaterKey(timeline), { signal });
    return got ? parse((await readAll(got.body)).toString('utf8')) : null;
  });
}

/**
 * Records that every segment of `timeline` up to `last` is archived. Best effort: the WAL itself is
 * already safe, so a failure here is logged and never fails the push.
 */
export async function advanceHighWater(
  storage: Storage,
  timeline: number,
  last: string,
  ctx: { spool: string; policy: RetryPolicy; deadline: Deadline; intervalMs: number; force?: boolean },
): Promise<void> {
  const file = join(repoCacheDir(ctx.spool, storage.cacheKey), `timeline-${timeline}.json`);
  // A small budget of its own: a store that keeps failing this write must not slow every push down
  // to the full retry deadline when the WAL itself is already safe.
  const budget = new Deadline(Math.max(1, Math.min(BOOKKEEPING_BUDGET_MS, ctx.deadline.remainingMs())));
  const quick = { policy: { ...ctx.policy, retries: Math.min(ctx.policy.retries, 2) }, deadline: budget };
  try {
    let state = await readFile(file, 'utf8').then(
      (t) => JSON.parse(t) as LocalState,
      () => null,
    );
    if (!state) {
      const remote = await readHighWater(storage, timeline, quick);
      state = remote
        ? { ...remote, remoteLast: remote.last, writtenAt: 0 }
        : { timeline, first: last, last, updatedAt: new Date().toISOString(), writtenAt: 0 };
    }
    // A push below `first` says nothing about the segments between it and `first`: ignore it.
    if (last > state.last) state.last = last;
    // Remote writes are rate-limited: a lagging mark is only conservative (fewer gaps detected).
    const due = ctx.force || Date.now() - (state.writtenAt ?? 0) >= ctx.intervalMs;
    if (state.remoteLast !== state.last && due) {
      const mark: HighWater = { timeline, first: state.first, last: state.last, updatedAt: new Date().toISOString() };
      const body = Buffer.from(JSON.stringify(mark) + '\n');
      await withRetry(`write ${highWaterKey(timeline)}`, quick.policy, quick.deadline, (signal) =>
        storage.put(highWaterKey(timeline), body, { sha256: sha256Hex(body), size: String(body.length), codec: 'none' }, { signal }),
      );
      state = { ...state, ...mark, remoteLast: mark.last, writtenAt: Date.now() };
    }
    await mkdir(join(file, '..'), { recursive: true, mode: 0o700 });
    await writeFileAtomic(file, Buffer.from(JSON.stringify(state)));
  } catch (e) {
    log.warn(`could not update the archive high-water mark for timeline ${timeline}: ${describe(e)}`);
  } finally {
    budget.dispose();
  }
}

/** Called by wal-fetch when a segment is not found: inside the archived range it is a gap. */
export async function checkNotAGap(
  storage: Storage,
  segment: string,
  ctx: { policy: RetryPolicy; deadline: Deadline },
): Promise<void> {
  const timeline = parseInt(segment.slice(0, 8), 16);
  let mark: HighWater | null;
  try {
    mark = await readHighWater(storage, timeline, ctx);
  } catch (e) {
    // Cannot tell a gap from the end of WAL: that is an error too, never "not found".
    throw new WalvaultError('StorageUnavailable', ExitCode.storageUnavailable, `${segment} not found, and the high-water mark cannot be read: ${describe(e)}`);
  }
  if (mark && segment >= mark.first && segment <= mark.last) {
    throw walGapError(
      `${segment} is missing from ${storage.url}, but timeline ${timeline} was archived from ${mark.first} through ${mark.last}: ` +
        'a gap in the archive, not the end of WAL',
    );
  }
}
