import { describe, ExitCode, isWalvaultError, missingBucketError, rewordError, unavailableError, walGapError } from '../common/errors.js';
import { log } from '../common/log.js';
import { withRetry, type Deadline, type RetryPolicy } from '../common/retry.js';
import { MANIFEST_KEY, readRemoteManifest } from './manifest.js';
import { readVerifiedSmall } from './small-objects.js';
import type { Storage } from '../storage/types.js';
import { readHighWater, type HighWater } from './high-water.js';
import { formatLsn, hex8, parseWalName, segmentNumber, timelineOfName, walObjectKey, type WalName } from '../wal/names.js';
import { parseTimelineHistory } from '../wal/timeline-history.js';

// wal-fetch may exit 1 ("not in the archive") only when nothing the archive holds says the file
// should be there. Run on the not-found path only (never when the file is found), with independent
// signals, any one of which makes the miss a gap (WalGap) instead of the end of WAL:
//   - the timeline's high-water mark (high-water.ts: the newest write-once one, or the old object) covers the segment;
//   - one bounded listing of the timeline's keys after the missing name finds a later file of it;
//   - a later timeline's history says it branched from this timeline after the segment;
//   - for a missing <TLI>.history: the timeline's state object or its segments exist.
// Evidence that cannot be read or trusted is an error too, never "not found". Before any of it, the
// repository itself must be there: an unmounted share (an empty directory) or an empty bucket of the
// same name answers every key with "not found", which must never look like the end of WAL.

type Ctx = { policy: RetryPolicy; deadline: Deadline };

/** Keys read from the one listing: enough to pass a timeline's .partial and .backup files. */
export const MAX_LISTED_KEYS = 1000;
/** Later timelines whose history files are read (PostgreSQL itself stops at the first missing one). */
export const MAX_LATER_TIMELINES = 64;
const MAX_HISTORY_BYTES = 1024 * 1024;

/** Throws WalGap (or the error that prevents deciding) when the missing `wal` is not the end of WAL. */
export async function checkMissIsNotAGap(storage: Storage, wal: WalName, ctx: Ctx): Promise<void> {
  const segSize = repositorySegmentSize(storage, wal.name, ctx);
  if (wal.kind === 'segment') await checkNotAGap(storage, wal.name, segSize, ctx);
  else if (wal.kind === 'history') await checkHistoryNotAGap(storage, wal.timeline, segSize, ctx);
  // Every other name (.partial, .backup) still needs the repository's manifest: without it (an
  // unmounted share, a wrong bucket, a store error) "not found" is not an answer.
  else await segSize;
}

function settledValue<T>(r: PromiseSettledResult<T>): T {
  if (r.status === 'rejected') throw r.reason;
  return r.value;
}

/**
 * The signals are read at once (they are independent; read one after the other they made every
 * "not found" at the end of a recovery cost four round trips) and judged in a fixed order, so that
 * the same archive always gives the same answer and error.
 */
async function checkNotAGap(storage: Storage, segment: string, segSizeP: Promise<number>, ctx: Ctx): Promise<void> {
  const timeline = timelineOfName(segment);
  const gap = (why: string) => walGapError(`${segment} is missing from ${storage.url}, but ${why}: a gap in the archive, not the end of WAL`);
  const [segSize, mark, later, branch] = await Promise.allSettled([
    segSizeP,
    markOf(storage, timeline, segment, ctx),
    laterFileOf(storage, timeline, walObjectKey(parseWalName(segment)), segment, ctx),
    segSizeP.then((size) => laterBranch(storage, timeline, segment, size, ctx)),
  ]);
  const value = settledValue;
  value(segSize);
  const m = value(mark);
  if (m && segment >= m.first && segment <= m.last) {
    throw gap(`timeline ${timeline} was archived from ${m.first} through ${m.last}`);
  }
  const l = value(later);
  if (l) throw gap(`${l} of the same timeline is archived`);
  const b = value(branch);
  if (b) throw gap(b);
}

/** A missing <TLI>.history is normal (PostgreSQL probes for the next timeline) unless TLI was archived. */
async function checkHistoryNotAGap(storage: Storage, timeline: number, segSizeP: Promise<number>, ctx: Ctx): Promise<void> {
  if (timeline <= 1) {
    await segSizeP;
    return; // timeline 1 never has a history file
  }
  const name = `${hex8(timeline)}.history`;
  const gap = (why: string) => walGapError(`${name} is missing from ${storage.url}, but ${why}: a gap in the archive, not the end of WAL`);
  const [segSize, mark, later] = await Promise.allSettled([segSizeP, markOf(storage, timeline, name, ctx), laterFileOf(storage, timeline, `wal/${name}`, '', ctx)]);
  settledValue(segSize);
  const m = settledValue(mark);
  if (m) throw gap(`timeline ${timeline} was archived (high-water mark: ${m.first} through ${m.last})`);
  const l = settledValue(later);
  if (l) throw gap(`${l} of timeline ${timeline} is archived`);
}

async function markOf(storage: Storage, timeline: number, missing: string, ctx: Ctx): Promise<HighWater | null> {
  try {
    return await readHighWater(storage, timeline, ctx);
  } catch (e) {
    // Cannot tell a gap from the end of WAL: that is an error too, never "not found".
    if (isWalvaultError(e) && e.exitCode === ExitCode.integrity) {
      throw rewordError(e, `${missing} not found, and the high-water mark cannot be trusted: ${e.message}`, { cause: e, retryable: false });
    }
    const message = `${missing} not found, and the high-water mark cannot be read: ${describe(e)}`;
    throw isWalvaultError(e) ? rewordError(e, message, { cause: e, retryable: false }) : unavailableError(message, { cause: e, retryable: false });
  }
}

/**
 * The first file of `timeline` archived after `afterKey` whose segment sorts after `segment`
 * (segments, .partial and .backup files: PostgreSQL archives in order, so any of them proves the
 * missing one was archived before it). One listing, read for at most MAX_LISTED_KEYS keys.
 */
async function laterFileOf(storage: Storage, timeline: number, afterKey: string, segment: string, ctx: Ctx): Promise<string | null> {
  return withRetry(`list wal/${hex8(timeline)}* after ${afterKey}`, ctx.policy, ctx.deadline, async (signal) => {
    let seen = 0;
    for await (const o of storage.list(`wal/${hex8(timeline)}`, { signal, startAfter: afterKey })) {
      // (a store that ignored StartAfter would list from the start: keys up to the missing one prove nothing)
      const proof = o.key > afterKey ? proves(o.key, timeline, segment) : null;
      if (proof) return proof;
      if (++seen >= MAX_LISTED_KEYS) {
        log.warn(`gap check: no later file of timeline ${timeline} among the first ${seen} keys after ${afterKey}; not listing further`);
        return null;
      }
    }
    return null;
  });
}

function proves(key: string, timeline: number, segment: string): string | null {
  let wal: WalName;
  try {
    wal = parseWalName(key.slice(key.lastIndexOf('/') + 1));
  } catch {
    return null; // not a WAL file (a stray key): says nothing
  }
  if (wal.kind === 'history' || wal.timeline !== timeline || walObjectKey(wal) !== key) return null;
  return wal.segment! > segment ? wal.name : null;
}

/**
 * A later timeline that PostgreSQL can find (history files T+1, T+2... up to the first missing one)
 * and that left `timeline` after `segment`: then `timeline` held `segment`. Returns the reason.
 */
async function laterBranch(storage: Storage, timeline: number, segment: string, segSize: number, ctx: Ctx): Promise<string | null> {
  const lastTli = Math.min(timeline + MAX_LATER_TIMELINES, 0xffffffff);
  for (let tli = timeline + 1; tli <= lastTli; tli++) {
    const key = `wal/${hex8(tli)}.history`;
    const body = await readVerifiedSmall(storage, key, { ...ctx, what: `read ${key}`, maxSize: MAX_HISTORY_BYTES });
    if (body === null) return null;
    const branch = parseTimelineHistory(body.toString('utf8'), tli, `${storage.url}/${key}`).find((b) => b.parent === timeline);
    if (!branch) continue;
    // The parent holds every segment wholly before the switch point; the one containing it is read
    // from the child timeline.
    if (segmentNumber(segment, segSize) < branch.switchpoint / BigInt(segSize)) {
      return `timeline ${tli} branched from timeline ${timeline} at ${formatLsn(branch.switchpoint)}, after it (${key})`;
    }
  }
  if (lastTli > timeline) log.warn(`gap check: stopped reading history files at timeline ${lastTli}`);
  return null;
}

/**
 * The repository's segment size from its verified walvault.json, created by the first segment pushed.
 * A repository without one holds no WAL at all: when asked for a file, that is a repository missing
 * from here (share not mounted, wrong endpoint or bucket, repository deleted), not the end of WAL.
 */
async function repositorySegmentSize(storage: Storage, missing: string, ctx: Ctx): Promise<number> {
  const m = await readRemoteManifest(storage, ctx.policy, ctx.deadline);
  if (m) return m.walSegmentSize; // validated by parseManifest
  throw missingBucketError(
    `${missing} not found, and repository ${storage.url} holds no ${MANIFEST_KEY} (no WAL was ever archived there): ` +
      'the share may not be mounted, the endpoint or bucket may be wrong, or the repository was deleted or never archived to; ' +
      'refusing to report the end of WAL',
  );
}
