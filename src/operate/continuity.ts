import { describe, ExitCode, isWalvaultError } from '../common/errors.js';
import { withRetry, type Deadline, type RetryPolicy } from '../common/retry.js';
import { readHighWater, type HighWater } from '../archive/high-water.js';
import { markPrefix, parseMarkKey } from '../archive/high-water-marks.js';
import type { BackupInfo } from '../backup/backup-info.js';
import { readObjectText } from '../backup/catalog.js';
import { parseHistory, requiredSegments, timelineAt, timelinePath, whyNotRecoverable, type HistoryEntry, type TimelineStep } from '../backup/coverage.js';
import type { Storage } from '../storage/types.js';
import { parseLsn, segmentName, segmentNumber, segmentOfEndLsn, timelineOfName } from '../wal/names.js';
import type { Inventory, WalEntry } from './inventory.js';

// Which archived WAL a repository must hold, timeline by timeline, and what of it is missing: the
// common ground of verify (gaps are problems) and info (the recovery window stops at a gap).

/** Consecutive missing segments of one timeline, first and last inclusive. */
export interface Gap {
  first: string;
  last: string;
  count: number;
}

export interface TimelineContinuity {
  tli: number;
  /** Where this timeline branched off its parent (from its history file). */
  parent?: { tli: number; switchLsn: string };
  /** The segments that must be there (none when nothing is expected of this timeline). */
  expected?: { first: string; last: string; count: number };
  gaps: Gap[];
  /** Archived segments of this timeline (all of them, also those before the expected range). */
  segments: number;
  newest?: WalEntry;
}

export const DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024;

/** The repository's WAL segment size: walvault.json's, else a backup's, else PostgreSQL's default. */
export function segmentSizeOf(inv: Pick<Inventory, 'manifest' | 'backups'>): number {
  return inv.manifest?.walSegmentSize ?? inv.backups[0]?.walSegmentSize ?? DEFAULT_SEGMENT_SIZE;
}

/**
 * Every timeline's history (its ancestors with their switch points), read from wal/<TLI>.history.
 * One that cannot be read or parsed is a problem (named in `problems`), and its timeline is treated
 * as having none.
 */
export async function readHistories(
  storage: Storage,
  inv: Inventory,
  ctx: { policy: RetryPolicy; deadline: Deadline },
  problems: string[],
): Promise<Map<number, HistoryEntry[]>> {
  const out = new Map<number, HistoryEntry[]>();
  for (const [tli, entry] of [...inv.histories].sort((a, b) => a[0] - b[0])) {
    const where = `${storage.url}/${entry.key}`;
    try {
      const text = await withRetry(`read ${entry.key}`, ctx.policy, ctx.deadline, (signal) => readObjectText(storage, entry.key, signal));
      if (text === null) problems.push(`history file ${entry.key} was listed but is gone`);
      else out.set(tli, parseHistory(text, tli, where));
    } catch (e) {
      if (!isWalvaultError(e) || !['CorruptObject', 'IntegrityError'].includes(e.code)) throw e;
      problems.push(`history file ${entry.key} is damaged: ${e.message}`);
    }
  }
  return out;
}

/** Names of every archived complete segment, all timelines. */
export function segmentNames(inv: Inventory): Map<string, WalEntry> {
  const out = new Map<string, WalEntry>();
  for (const t of inv.timelines.values()) for (const s of t.segments) out.set(s.name, s);
  return out;
}

const MARK_KEY = /^state\/timeline-([0-9A-F]{8})\.json$/;

/**
 * Every timeline's high-water mark (the old state/timeline-<TLI>.json and the write-once marks under
 * state/timeline-<TLI>/), read and verified like wal-fetch reads it: one that cannot be trusted
 * makes every wal-fetch miss on its timeline an error, so it is a problem (named in `problems`), and
 * its timeline is treated as having none.
 */
export async function readMarks(
  storage: Storage,
  inv: Inventory,
  ctx: { policy: RetryPolicy; deadline: Deadline },
  problems: string[],
): Promise<Map<number, HighWater>> {
  const out = new Map<number, HighWater>();
  const timelines = new Map<number, string>();
  for (const o of inv.state) {
    const m = MARK_KEY.exec(o.key);
    const tli = m ? parseInt(m[1]!, 16) : (parseMarkKey(o.key)?.timeline ?? 0);
    if (tli >= 1 && !timelines.has(tli)) timelines.set(tli, m ? o.key : markPrefix(tli));
  }
  for (const [tli, where] of [...timelines].sort((a, b) => a[0] - b[0])) {
    try {
      // A damaged mark that a valid one stands in for is still a problem: delete may leave it the only one.
      const onDamaged = (e: unknown) => problems.push(`high-water mark of timeline ${tli} is damaged (another one is used): ${describe(e)}`);
      const mark = await readHighWater(storage, tli, { ...ctx, onDamaged });
      if (mark) out.set(tli, mark);
    } catch (e) {
      if (!isWalvaultError(e) || e.exitCode !== ExitCode.integrity) throw e;
      problems.push(`high-water mark ${where} is damaged (wal-fetch fails on every missing segment of timeline ${tli}): ${e.message}`);
    }
  }
  return out;
}

/**
 * Per timeline, the segments that must be there and the gaps among them. A timeline is expected
 * from the oldest backup's start segment (by number; or its own first segment when there is no
 * backup), never before the segment where it branched off its parent, up to its newest archived
 * segment or its high-water mark's last, whichever is later (a lost tail is a gap wal-fetch reports).
 * A timeline with children: when a backup can be recovered onto it, also up to the segment before
 * its last child's switch point (recovery onto each child reads it up to there; recovery onto the
 * timeline itself reads past the switch points, as after a point-in-time recovery into the past);
 * when none can, only up to the segment before the first child's switch point (the segment holding
 * the switch point is read from the child; what the parent archived after it nothing can use).
 */
export function walContinuity(
  inv: Inventory,
  histories: Map<number, HistoryEntry[]>,
  segSize: number,
  marks: Map<number, HighWater> = new Map(),
): TimelineContinuity[] {
  const anchor = inv.backups.length
    ? inv.backups.map((b) => segmentNumber(b.startSegment, segSize)).reduce((a, b) => (b < a ? b : a))
    : undefined;
  const childSwitches = new Map<number, bigint[]>();
  for (const [tli, h] of histories) {
    const parent = h[h.length - 1];
    if (!parent || parent.tli >= tli) continue;
    const list = childSwitches.get(parent.tli) ?? [];
    list.push(parseLsn(parent.switchLsn) / BigInt(segSize));
    childSwitches.set(parent.tli, list);
  }
  const tlis = [...new Set([...inv.timelines.keys(), ...histories.keys(), ...marks.keys()])].sort((a, b) => a - b);
  return tlis.map((tli) => {
    const segs = inv.timelines.get(tli)?.segments ?? [];
    const history = histories.get(tli) ?? [];
    const parentEntry = history.at(-1);
    const out: TimelineContinuity = { tli, gaps: [], segments: segs.length };
    if (parentEntry) out.parent = { tli: parentEntry.tli, switchLsn: parentEntry.switchLsn };
    if (segs.length) out.newest = segs[segs.length - 1];
    const begin = parentEntry ? parseLsn(parentEntry.switchLsn) / BigInt(segSize) : 0n;
    const numbers = segs.map((s) => segmentNumber(s.name, segSize));
    const mark = marks.get(tli);
    const markFirst = mark ? segmentNumber(mark.first, segSize) : undefined;
    const markLast = mark ? segmentNumber(mark.last, segSize) : undefined;
    const own = numbers[0] ?? markFirst;
    // A later timeline without its history file: where it began is unknown, so from its own first segment.
    let from = anchor === undefined || (tli > 1 && !histories.has(tli) && own !== undefined && own > anchor) ? own : anchor;
    let to = max(numbers[numbers.length - 1], markLast);
    const switches = childSwitches.get(tli);
    if (switches) {
      const usable = inv.backups.some((b) => whyNotRecoverable(b, tli, history, segSize) === undefined);
      to = usable ? max(to, max(...switches)! - 1n) : min(...switches)! - 1n;
    }
    if (from === undefined || to === undefined) return out;
    if (from < begin) from = begin;
    if (from > to) return out;
    out.expected = { first: segmentName(tli, from, segSize), last: segmentName(tli, to, segSize), count: Number(to - from + 1n) };
    let next = from;
    for (const n of [...numbers.filter((x) => x <= to), to + 1n]) {
      if (n < next) continue;
      if (n > next) out.gaps.push({ first: segmentName(tli, next, segSize), last: segmentName(tli, n - 1n, segSize), count: Number(n - next) });
      next = n + 1n;
    }
    return out;
  });
}

/**
 * Whether WAL dropped from segment `name` on (a maxReadyBytes gap marker) lies before everything
 * recovery reads: before the expected range of its timeline, or, when nothing of that timeline is
 * expected, before every backup's start. Such a drop no longer matters (delete removes its marker).
 */
export function dropIsHarmless(name: string, continuity: readonly TimelineContinuity[], backups: readonly BackupInfo[], segSize: number): boolean {
  const segno = segmentNumber(name, segSize);
  const expected = continuity.find((t) => t.tli === timelineOfName(name))?.expected;
  if (expected) return segno < segmentNumber(expected.first, segSize);
  return backups.length > 0 && backups.every((b) => segno < segmentNumber(b.startSegment, segSize));
}

function max(...xs: Array<bigint | undefined>): bigint | undefined {
  let m: bigint | undefined;
  for (const x of xs) if (x !== undefined && (m === undefined || x > m)) m = x;
  return m;
}

function min(...xs: bigint[]): bigint | undefined {
  let m: bigint | undefined;
  for (const x of xs) if (m === undefined || x < m) m = x;
  return m;
}

/**
 * The segments a backup needs to become consistent (start segment to the one holding its stop LSN,
 * across a timeline switch in between when its stop timeline's history says so), or null when the
 * history needed to tell is missing.
 */
export function backupWal(b: BackupInfo, histories: Map<number, HistoryEntry[]>): string[] | null {
  const segSize = b.walSegmentSize;
  const stopTli = b.stopTimeline ?? b.timeline;
  const from = segmentNumber(b.startSegment, segSize);
  const to = segmentNumber(segmentOfEndLsn(b.stopLsn, stopTli, segSize), segSize);
  let path: TimelineStep[] = [{ tli: b.timeline, beginSegno: 0n }];
  if (stopTli !== b.timeline) {
    const h = histories.get(stopTli);
    if (!h) return null;
    try {
      path = timelinePath(b, stopTli, h, segSize);
    } catch {
      return null;
    }
  }
  return requiredSegments(path, from, to, segSize);
}

/** Whether segment `segno` on the recovery `path` is archived. */
export function presentOnPath(names: Map<string, WalEntry>, path: TimelineStep[], segno: bigint, segSize: number): WalEntry | undefined {
  return names.get(segmentName(timelineAt(path, segno), segno, segSize));
}

export const describeRange = (g: { first: string; last: string; count: number }): string => (g.count === 1 ? g.first : `${g.first}..${g.last} (${g.count} segments)`);
