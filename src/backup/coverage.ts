import { readHighWater } from '../archive/high-water.js';
import { backupError, isWalvaultError } from '../common/errors.js';
import { withRetry, type Deadline, type RetryPolicy } from '../common/retry.js';
import type { Storage } from '../storage/types.js';
import { formatLsn, hex8, parseLsn, segmentName, segmentNumber, segmentOfEndLsn, segmentsPerLogId, timelineOfName } from '../wal/names.js';
import { parseTimelineHistory } from '../wal/timeline-history.js';
import type { BackupInfo } from './backup-info.js';
import { readObjectText } from './catalog.js';
import type { RecoveryTarget } from './target.js';

// Before restoring anything, backup-fetch proves that the archive holds every WAL segment recovery
// will ask for, from the backup's start segment to the target, on the timelines PostgreSQL will
// follow. A hole found after hours of replay is the expensive way to learn the archive is broken.

/** One timeline of the path recovery follows, from the segment where it begins. */
export interface TimelineStep {
  tli: number;
  beginSegno: bigint;
}

export interface HistoryEntry {
  tli: number;
  /** LSN where this timeline ended and its child began. */
  switchLsn: string;
}

/** The ancestors of `timeline` from its history file, strictly parsed (a malformed file is CorruptObject). */
export function parseHistory(text: string, timeline: number, where: string): HistoryEntry[] {
  return parseTimelineHistory(text, timeline, where).map((b) => ({ tli: b.parent, switchLsn: formatLsn(b.switchpoint) }));
}

/** What of a backup decides which timelines can recover it: where it starts and where it ends. */
export type BackupSpan = Pick<BackupInfo, 'timeline' | 'checkpointLsn' | 'stopLsn' | 'stopTimeline'>;

/**
 * The timelines recovery replays from a backup to `targetTli`, given the target's history: for each
 * LSN PostgreSQL reads the segment of the newest timeline that had begun by then. The backup is only
 * consistent once replayed to its stop LSN, so the target timeline must contain the backup's END:
 * the checkpoint on the start timeline and the stop LSN on the stop timeline (PostgreSQL refuses a
 * timeline that forked before its minimum recovery point). A fork between start and stop is refused.
 */
export function timelinePath(b: BackupSpan, targetTli: number, history: HistoryEntry[], segSize: number): TimelineStep[] {
  const startTli = b.timeline;
  const stopTli = b.stopTimeline ?? b.timeline;
  if (targetTli === startTli && stopTli === startTli) return [{ tli: startTli, beginSegno: 0n }];
  if (targetTli === startTli) {
    throw backupError(`the backup ends on timeline ${stopTli} (it started on ${startTli}); it cannot be recovered onto timeline ${targetTli}`);
  }
  const steps = historyPath(targetTli, history, segSize);
  const i = history.findIndex((h) => h.tli === startTli);
  if (i < 0) {
    throw backupError(`timeline ${targetTli} does not descend from the backup's timeline ${startTli} (its history: ${describeHistory(history)})`);
  }
  if (parseLsn(b.checkpointLsn) >= parseLsn(history[i]!.switchLsn)) {
    throw backupError(
      `timeline ${targetTli} branched off timeline ${startTli} at ${history[i]!.switchLsn}, before the backup's checkpoint (${b.checkpointLsn}); ` +
        'that backup cannot be recovered onto it',
    );
  }
  if (stopTli !== targetTli) {
    const j = history.findIndex((h) => h.tli === stopTli);
    if (j < i) {
      throw backupError(
        `timeline ${targetTli} does not pass through timeline ${stopTli}, on which the backup ended (its history: ${describeHistory(history)})`,
      );
    }
    // The stop LSN is the end of the backup's last record: a fork exactly there keeps all of it.
    if (parseLsn(b.stopLsn) > parseLsn(history[j]!.switchLsn)) {
      throw backupError(
        `timeline ${targetTli} branched off timeline ${stopTli} at ${history[j]!.switchLsn}, before the backup ended (stop LSN ${b.stopLsn}); ` +
          'recovery onto it would never make the backup consistent; choose another backup or timeline',
      );
    }
  }
  return steps.slice(i);
}

/** Every timeline recovery onto `tli` reads, oldest ancestor first, each from the segment where it begins. */
export function historyPath(tli: number, history: readonly HistoryEntry[], segSize: number): TimelineStep[] {
  const steps: TimelineStep[] = [];
  let begin = 0n;
  for (const h of history) {
    steps.push({ tli: h.tli, beginSegno: begin });
    begin = parseLsn(h.switchLsn) / BigInt(segSize);
  }
  steps.push({ tli, beginSegno: begin });
  return steps;
}

/** Why `b` cannot be recovered onto timeline `tli` (timelinePath's refusal), or undefined when it can. */
export function whyNotRecoverable(b: BackupSpan, tli: number, history: readonly HistoryEntry[], segSize: number): string | undefined {
  try {
    timelinePath(b, tli, [...history], segSize);
    return undefined;
  } catch (e) {
    if (!isWalvaultError(e)) throw e;
    return e.message;
  }
}

function describeHistory(h: HistoryEntry[]): string {
  return h.length ? h.map((e) => `${e.tli} until ${e.switchLsn}`).join(', ') : 'empty';
}

/** The timeline that holds segment `segno` on the recovery `path` (the last step begun by then). */
export function timelineAt(path: TimelineStep[], segno: bigint): number {
  let tli = path[0]!.tli;
  for (const s of path) if (s.beginSegno <= segno) tli = s.tli;
  return tli;
}

/** The segment names recovery needs for segments `from`..`to` (inclusive). */
export function requiredSegments(path: TimelineStep[], from: bigint, to: bigint, segSize: number): string[] {
  const out: string[] = [];
  for (let s = from; s <= to; s++) out.push(segmentName(timelineAt(path, s), s, segSize));
  return out;
}

export interface CoveragePlan {
  targetTli: number;
  path: TimelineStep[];
  firstSegment: string;
  lastSegment: string;
  segments: number;
}

/** Archived segment names (24 hex, no .partial) of one timeline and log id, i.e. one shard. */
export async function listShard(storage: Storage, tli: number, log: bigint, policy: RetryPolicy, deadline: Deadline): Promise<Set<string>> {
  const prefix = `wal/${hex8(tli)}${hex8(log)}/`;
  return withRetry(`list ${prefix}`, policy, deadline, async (signal) => {
    const names = new Set<string>();
    for await (const o of storage.list(prefix, { signal })) {
      const name = o.key.slice(prefix.length);
      if (/^[0-9A-F]{24}$/.test(name)) names.add(name);
    }
    return names;
  });
}

/** PostgreSQL's own rule for recovery_target_timeline = 'latest': the highest N with N.history, probing upward. */
async function newestTimeline(storage: Storage, from: number, policy: RetryPolicy, deadline: Deadline): Promise<number> {
  let newest = from;
  for (let probe = from + 1; ; probe++) {
    const key = `wal/${hex8(probe)}.history`;
    const info = await withRetry(`head ${key}`, policy, deadline, (signal) => storage.head(key, { signal }));
    if (!info) return newest;
    newest = probe;
  }
}

/**
 * Works out the timeline path and the segment range recovery needs, and checks that the archive has
 * all of it. Throws a BackupError naming the first missing segment. `targetTimeline` is the
 * --target-timeline value (undefined = PostgreSQL's default, latest).
 */
export async function checkWalCoverage(
  storage: Storage,
  backup: BackupInfo,
  target: RecoveryTarget,
  targetTimeline: string | undefined,
  ctx: { policy: RetryPolicy; deadline: Deadline },
): Promise<CoveragePlan> {
  const found = await walCoverage(storage, backup, target, targetTimeline, ctx);
  if (found.problem) throw found.problem;
  return found;
}

/** What recovery needs and what of it is missing: `problem` is the error checkWalCoverage throws (backup-fetch --dry-run shows it). */
export interface WalCoverage extends CoveragePlan {
  missing: string[];
  problem?: Error;
}

export async function walCoverage(
  storage: Storage,
  backup: BackupInfo,
  target: RecoveryTarget,
  targetTimeline: string | undefined,
  ctx: { policy: RetryPolicy; deadline: Deadline },
): Promise<WalCoverage> {
  const segSize = backup.walSegmentSize;
  const startTli = backup.timeline;
  let targetTli: number;
  const goal = (targetTimeline ?? 'latest').toLowerCase();
  if (goal === 'current') targetTli = startTli;
  else if (goal === 'latest') targetTli = await newestTimeline(storage, startTli, ctx.policy, ctx.deadline);
  else targetTli = Number(goal);

  let history: HistoryEntry[] = [];
  if (targetTli !== startTli) {
    const key = `wal/${hex8(targetTli)}.history`;
    const text = await withRetry(`read ${key}`, ctx.policy, ctx.deadline, (signal) => readObjectText(storage, key, signal));
    if (text === null) throw backupError(`recovery target timeline ${targetTli} has no history file ${storage.url}/${key}`);
    history = parseHistory(text, targetTli, `${storage.url}/${key}`);
  }
  const path = timelinePath(backup, targetTli, history, segSize);

  const startSegno = segmentNumber(backup.startSegment, segSize);
  const stopSegno = segmentNumber(segmentOfEndLsn(backup.stopLsn, 1, segSize), segSize);
  const per = segmentsPerLogId(segSize);
  const shards = new Map<string, Set<string>>();
  const shard = async (tli: number, log: bigint) => {
    const k = `${tli}/${log}`;
    let s = shards.get(k);
    if (!s) {
      s = await listShard(storage, tli, log, ctx.policy, ctx.deadline);
      shards.set(k, s);
    }
    return s;
  };

  let endSegno: bigint;
  if (target.kind === 'lsn') {
    endSegno = parseLsn(target.lsn) / BigInt(segSize);
  } else if (target.kind === 'immediate') {
    endSegno = stopSegno;
  } else {
    // Time, xid, name or none: recovery reads until the target or the end of the archive, so every
    // segment up to the newest archived one on the target timeline must be there.
    const last = path[path.length - 1]!;
    let log = (last.beginSegno > startSegno ? last.beginSegno : startSegno) / per;
    let newest: bigint | undefined;
    for (;;) {
      const names = await shard(targetTli, log);
      if (names.size === 0) break;
      for (const n of names) {
        const s = segmentNumber(n, segSize);
        if (newest === undefined || s > newest) newest = s;
      }
      log++;
    }
    endSegno = newest ?? stopSegno;
    // wal-push's high-water mark says how far the timeline was archived: a segment missing below it
    // (the newest ones deleted or lost) is a gap wal-fetch stops recovery at, not the end of the WAL.
    const mark = await readHighWater(storage, targetTli, ctx);
    if (mark) {
      const marked = segmentNumber(mark.last, segSize);
      if (marked > endSegno) endSegno = marked;
    }
  }
  if (endSegno < stopSegno) endSegno = stopSegno;

  const needed = requiredSegments(path, startSegno, endSegno, segSize);
  const missing: string[] = [];
  for (const name of needed) {
    const tli = timelineOfName(name);
    const log = BigInt('0x' + name.slice(8, 16));
    if (!(await shard(tli, log)).has(name)) missing.push(name);
  }
  const plan = { targetTli, path, firstSegment: needed[0]!, lastSegment: needed[needed.length - 1]!, segments: needed.length, missing };
  if (missing.length > 0) {
    const first = missing[0]!;
    const what = segmentNumber(first, segSize) <= stopSegno ? 'to make the backup consistent' : 'to reach the target';
    const problem = backupError(
      `the archive ${storage.url} lacks WAL segment ${first}${missing.length > 1 ? ` (and ${missing.length - 1} more)` : ''}, needed ${what}: ` +
        `backup ${backup.id} needs ${needed[0]} through ${needed[needed.length - 1]}; nothing was restored`,
    );
    return { ...plan, problem };
  }
  return plan;
}
