import { corruptObjectError, describe, ExitCode, isWalvaultError } from '../common/errors.js';
import { log } from '../common/log.js';
import { withRetry, type Deadline, type RetryPolicy } from '../common/retry.js';
import type { Storage } from '../storage/types.js';
import { hex8 } from '../wal/names.js';
import { getVerifiedSmall } from './small-objects.js';

// Write-once high-water marks. A mark is never overwritten (a versioned, locked bucket would keep
// every version, each locked): each advance is a new object
//   state/timeline-<TLI>/<complement>-<last segment>.json
// where <complement> is FFFFFFFFFFFFFFFF minus the last segment's log and segment number (its 16 hex
// digits after the timeline), so a LIST, which returns keys in lexical order, returns the newest
// mark first: one small page finds it. `delete` removes the superseded ones.

/** The first this many keys of a timeline's marks are read; the first valid one wins. */
export const MARK_PAGE = 8;
const MAX = 0xffffffffffffffffn;

export const markPrefix = (timeline: number): string => `state/timeline-${hex8(timeline)}/`;

/** The key of the mark whose `last` segment is `last` (a segment name of `timeline`). */
export function markKey(timeline: number, last: string): string {
  const n = BigInt('0x' + last.slice(8, 24));
  return `${markPrefix(timeline)}${(MAX - n).toString(16).toUpperCase().padStart(16, '0')}-${last}.json`;
}

const MARK_KEY = /^state\/timeline-([0-9A-F]{8})\/([0-9A-F]{16})-([0-9A-F]{24})\.json$/;

/** The timeline and last segment a write-once mark's key names, or null for any other key. */
export function parseMarkKey(key: string): { timeline: number; last: string } | null {
  const m = MARK_KEY.exec(key);
  if (!m) return null;
  const [, tli, comp, last] = m as unknown as [string, string, string, string];
  if (!last.startsWith(tli) || key !== markKey(parseInt(tli, 16), last) || comp.length !== 16) return null;
  return { timeline: parseInt(tli, 16), last };
}

/**
 * Among listed keys, the superseded write-once marks: per timeline every mark but the newest `keep`
 * (the first by key). Keys that are not marks are ignored. Oldest first. By default the newest
 * MARK_PAGE stay, the ones readers look at: were the newest damaged (or sealed with a key since
 * removed), readers take the next valid one, which must still be there.
 */
export function supersededMarks<T extends { key: string }>(objects: readonly T[], keep = MARK_PAGE): T[] {
  const byTimeline = new Map<number, T[]>();
  for (const o of objects) {
    const m = parseMarkKey(o.key);
    if (m) byTimeline.set(m.timeline, [...(byTimeline.get(m.timeline) ?? []), o]);
  }
  const out: T[] = [];
  for (const marks of byTimeline.values()) {
    marks.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    out.push(...marks.slice(keep).reverse());
  }
  return out;
}

/**
 * The newest valid write-once mark of `timeline`, parsed by `parse` (which throws on an invalid
 * body), with its key; null when there is none. Only the first MARK_PAGE keys are read: a damaged
 * mark is skipped (said once) for the next one; when none of them is valid, the first one's error.
 */
export async function readNewestMark<M extends { last: string }>(
  storage: Storage,
  timeline: number,
  ctx: { policy: RetryPolicy; deadline: Deadline; maxSize: number; onDamaged?: (e: unknown) => void },
  parse: (text: string, where: string) => M,
): Promise<{ key: string; mark: M } | null> {
  const prefix = markPrefix(timeline);
  const keys = await withRetry(`list ${prefix}`, ctx.policy, ctx.deadline, async (signal) => {
    const out: string[] = [];
    for await (const o of storage.list(prefix, { signal, maxKeys: MARK_PAGE })) {
      if (parseMarkKey(o.key)?.timeline === timeline) out.push(o.key);
      if (out.length >= MARK_PAGE) break;
    }
    return out;
  });
  let firstError: unknown;
  for (const key of keys) {
    const where = `${storage.url}/${key}`;
    try {
      const body = await withRetry(`read ${key}`, ctx.policy, ctx.deadline, (signal) => getVerifiedSmall(storage, key, ctx.maxSize, signal));
      if (body === null) continue; // removed since the listing (delete of a superseded mark)
      const mark = parse(body.toString('utf8'), where);
      if (mark.last !== parseMarkKey(key)!.last) throw corruptObjectError(`${where} is not a valid high-water mark: its last segment ${mark.last} is not the one its name says`);
      return { key, mark };
    } catch (e) {
      // Only a mark that cannot be trusted is skipped; a store failure is the answer.
      if (!isWalvaultError(e) || e.exitCode !== ExitCode.integrity) throw e;
      firstError ??= e;
      if (ctx.onDamaged) ctx.onDamaged(e);
      else log.warn(`skipping an unusable high-water mark: ${describe(e)}`);
    }
  }
  if (firstError) throw firstError;
  return null;
}
