import type { BackupInfo } from '../backup/backup-info.js';
import { historyPath, whyNotRecoverable, type HistoryEntry, type TimelineStep } from '../backup/coverage.js';
import { segmentName, segmentNumber, segmentOfEndLsn } from '../wal/names.js';
import { presentOnPath, type Gap, type TimelineContinuity } from './continuity.js';
import type { Inventory, WalEntry } from './inventory.js';

// The recovery window of a timeline: from the end of the oldest backup whose WAL runs unbroken from
// its start to the newest WAL that can be reached, to that newest WAL. A gap cuts it: what lies
// after a gap can only be reached from a backup that started after the gap. The gaps are verify's
// (walContinuity), taken along the timelines recovery follows, so info never shows a window cut by a
// gap it does not list.

export interface RecoveryWindow {
  tli: number;
  /** Earliest restorable point: the end of that backup. */
  start: { backup: string; time: string; lsn: string } | null;
  /** Latest: the newest archived segment of the unbroken run, and when it was stored. */
  end: { segment: string; time: string } | null;
  /** Backups that recovery onto this timeline can start from (oldest first). */
  backups: BackupInfo[];
  /** The recovery path (oldest ancestor first). */
  path: TimelineStep[];
  /** The gaps recovery onto this timeline meets, from the oldest usable backup's start (also on ancestors). */
  gaps: Gap[];
}

export function recoveryWindow(
  inv: Inventory,
  history: readonly HistoryEntry[],
  continuity: readonly TimelineContinuity[],
  names: Map<string, WalEntry>,
  segSize: number,
  tli: number,
): RecoveryWindow {
  const usable = inv.backups.filter((b) => whyNotRecoverable(b, tli, history, segSize) === undefined);
  const path = historyPath(tli, history, segSize);
  const out: RecoveryWindow = { tli, start: null, end: null, backups: usable, path, gaps: [] };
  const segs = inv.timelines.get(tli)?.segments ?? [];
  if (!segs.length || !usable.length) return out;
  const newest = segmentNumber(segs[segs.length - 1]!.name, segSize);
  const lowest = usable.map((b) => segmentNumber(b.startSegment, segSize)).reduce((a, b) => (b < a ? b : a));
  out.gaps = gapsOnPath(continuity, path, lowest, newest, segSize);
  const runEnd = (from: bigint): bigint => {
    for (const g of out.gaps) {
      if (segmentNumber(g.last, segSize) < from) continue;
      const first = segmentNumber(g.first, segSize);
      return (first > from ? first : from) - 1n;
    }
    return newest;
  };
  let best: { b: BackupInfo; end: bigint } | undefined;
  for (const b of usable) {
    const end = runEnd(segmentNumber(b.startSegment, segSize));
    const stop = segmentNumber(segmentOfEndLsn(b.stopLsn, 1, segSize), segSize);
    if (end < stop) continue;
    if (!best || end > best.end) best = { b, end };
  }
  const last = best && presentOnPath(names, path, best.end, segSize);
  if (!best || !last) return out;
  out.start = { backup: best.b.id, time: best.b.stopTime, lsn: best.b.stopLsn };
  out.end = { segment: last.name, time: last.lastModified.toISOString() };
  return out;
}

/** The gaps of each timeline on `path`, cut to the stretch recovery reads of it, within from..to. */
function gapsOnPath(continuity: readonly TimelineContinuity[], path: TimelineStep[], from: bigint, to: bigint, segSize: number): Gap[] {
  const out: Gap[] = [];
  path.forEach((step, i) => {
    const lo = step.beginSegno > from ? step.beginSegno : from;
    const next = path[i + 1];
    const hi = next && next.beginSegno - 1n < to ? next.beginSegno - 1n : to;
    for (const g of continuity.find((c) => c.tli === step.tli)?.gaps ?? []) {
      const a = segmentNumber(g.first, segSize);
      const b = segmentNumber(g.last, segSize);
      const first = a > lo ? a : lo;
      const last = b < hi ? b : hi;
      if (first > last) continue;
      out.push({ first: segmentName(step.tli, first, segSize), last: segmentName(step.tli, last, segSize), count: Number(last - first + 1n) });
    }
  });
  return out;
}
