import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ExitCode, badWalNameError, corruptObjectError, describe, isWalvaultError } from '../common/errors.js';
import { writeJsonAtomic } from '../fs/atomic.js';
import { log } from '../common/log.js';
import type { Deadline, RetryPolicy } from '../common/retry.js';
import { bookkeepingBudget, readVerifiedSmall, writeBookkeeping } from './small-objects.js';
import { markKey, readNewestMark } from './high-water-marks.js';
import { repoCacheDir } from './cache-dir.js';
import type { Storage } from '../storage/types.js';
import { hex8 } from '../wal/names.js';

// "Not found" is only trustworthy above what the archive is known to hold. Per timeline, wal-push
// records the range [first, last] of segments archived contiguously (PostgreSQL archives in order and
// never skips a file, so a successful push of N means everything from `first` to N is archived).
// wal-fetch treats a miss inside that range as a gap (error), not as the end of WAL (gap-check.ts).
export interface HighWater {
  timeline: number;
  first: string;
  last: string;
  updatedAt: string;
}

/** The single, overwritten mark of walvault before write-once marks (read, never written now). */
export function highWaterKey(timeline: number): string {
  return `state/timeline-${hex8(timeline)}.json`;
}

interface LocalState extends HighWater {
  remoteLast?: string;
  writtenAt?: number;
}

/** A state object is a few hundred bytes: anything declaring more is not one. */
const MAX_STATE_BYTES = 4096;
const FIELDS = ['first', 'last', 'timeline', 'updatedAt'];
const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;

/**
 * The mark of `timeline` from the text of its state object, every field checked: a mark that cannot
 * be trusted is an error (CorruptObject), never "no mark", which would turn a gap into the end of WAL.
 */
export function parseHighWater(text: string, timeline: number, where: string): HighWater {
  const corrupt = (why: string) => corruptObjectError(`${where} is not a valid high-water mark: ${why}`);
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw corrupt('not JSON');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw corrupt('not a JSON object');
  const o = v as Record<string, unknown>;
  const keys = Object.keys(o).sort();
  if (keys.join() !== FIELDS.join()) throw corrupt(`fields ${JSON.stringify(keys)}, expected ${JSON.stringify(FIELDS)}`);
  if (o.timeline !== timeline) throw corrupt(`timeline ${JSON.stringify(o.timeline)}, expected ${timeline}`);
  const tli = hex8(timeline);
  for (const f of ['first', 'last'] as const) {
    const name = o[f];
    if (typeof name !== 'string' || !/^[0-9A-F]{24}$/.test(name) || !name.startsWith(tli)) {
      throw corrupt(`${f} ${JSON.stringify(name)} is not a segment name of timeline ${tli}`);
    }
  }
  if ((o.first as string) > (o.last as string)) throw corrupt(`first ${o.first as string} is after last ${o.last as string}`);
  if (typeof o.updatedAt !== 'string' || !ISO_TIME.test(o.updatedAt) || Number.isNaN(Date.parse(o.updatedAt))) {
    throw corrupt(`updatedAt ${JSON.stringify(o.updatedAt)} is not an ISO 8601 time`);
  }
  return { timeline, first: o.first as string, last: o.last as string, updatedAt: o.updatedAt };
}

function validTimeline(timeline: number): boolean {
  return Number.isSafeInteger(timeline) && timeline >= 1 && timeline <= 0xffffffff;
}

/**
 * The mark of `timeline`, verified (metadata SHA-256/size/codec) and validated; null if there is none.
 * The newest valid write-once mark (high-water-marks.ts) and the single overwritten object that
 * walvault wrote before them (`state/timeline-<TLI>.json`, still read): whichever says more. A
 * damaged old object is an error unless a valid write-once mark exists: the walvault that wrote
 * that one could not replace the old object either, and vouched for its own range instead.
 */
export async function readHighWater(
  storage: Storage,
  timeline: number,
  ctx: { policy: RetryPolicy; deadline: Deadline; onDamaged?: (e: unknown) => void },
): Promise<HighWater | null> {
  if (!validTimeline(timeline)) throw badWalNameError(`timeline ${timeline} is out of range (1 to FFFFFFFF)`);
  const key = highWaterKey(timeline);
  const [legacy, newest] = await Promise.allSettled([
    readVerifiedSmall(storage, key, { ...ctx, what: `read ${key}`, maxSize: MAX_STATE_BYTES }).then((body) =>
      body === null ? null : parseHighWater(body.toString('utf8'), timeline, `${storage.url}/${key}`),
    ),
    readNewestMark(storage, timeline, { ...ctx, maxSize: MAX_STATE_BYTES }, (text, where) => parseHighWater(text, timeline, where)),
  ]);
  if (newest.status === 'rejected') throw newest.reason;
  const mark = newest.value?.mark ?? null;
  if (legacy.status === 'rejected') {
    const e = legacy.reason as unknown;
    if (!mark || !isWalvaultError(e) || e.exitCode !== ExitCode.integrity) throw e;
    if (ctx.onDamaged) ctx.onDamaged(e);
    else log.warn(`ignoring the damaged ${key} (walvault no longer writes it; remove it): ${describe(e)}; using ${newest.value!.key}`);
    return mark;
  }
  const old = legacy.value;
  if (!old) return mark;
  if (!mark) return old;
  return old.last > mark.last ? old : mark;
}

/** The spool's copy is only a cache: one that does not validate is ignored (the store is asked). */
async function readLocalState(file: string, timeline: number): Promise<LocalState | null> {
  try {
    const { remoteLast, writtenAt, ...mark } = JSON.parse(await readFile(file, 'utf8')) as LocalState;
    const checked: LocalState = parseHighWater(JSON.stringify(mark), timeline, file);
    if (remoteLast !== undefined) {
      if (typeof remoteLast !== 'string' || !/^[0-9A-F]{24}$/.test(remoteLast) || remoteLast > checked.last) return null;
      checked.remoteLast = remoteLast;
    }
    if (writtenAt !== undefined) {
      if (!Number.isFinite(writtenAt)) return null;
      checked.writtenAt = writtenAt;
    }
    return checked;
  } catch {
    return null;
  }
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
  const quick = bookkeepingBudget(ctx);
  try {
    let state = await readLocalState(file, timeline);
    if (!state) {
      const remote = await readHighWater(storage, timeline, quick).catch((e: unknown) => {
        // A damaged mark would disable gap detection for good: supersede it with one this push can
        // vouch for (its own segment) rather than keep failing on it.
        if (isWalvaultError(e) && e.exitCode === ExitCode.integrity) {
          log.warn(`superseding the unusable high-water mark of timeline ${timeline}: ${describe(e)}`);
          return null;
        }
        throw e;
      });
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
      await writeBookkeeping(storage, markKey(timeline, mark.last), body, quick, { anyContent: true });
      state = { ...state, ...mark, remoteLast: mark.last, writtenAt: Date.now() };
    }
    await mkdir(join(file, '..'), { recursive: true, mode: 0o700 });
    await writeJsonAtomic(file, state);
  } catch (e) {
    log.warn(`could not update the archive high-water mark for timeline ${timeline}: ${describe(e)}`);
  } finally {
    quick.deadline.dispose();
  }
}
