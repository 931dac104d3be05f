import type { BackupInfo } from '../backup/backup-info.js';
import { historyPath, timelinePath, type HistoryEntry } from '../backup/coverage.js';
import { segmentNumber, segmentOfEndLsn } from '../wal/names.js';
import { presentOnPath } from './continuity.js';
import type { Inventory, WalEntry } from './inventory.js';

// The recovery window of a timeline: from the end of the oldest backup whose WAL runs unbroken from
// its start to the newest WAL that can be reached, to that newest WAL. A gap cuts it: what lies
// after a gap can only be reached from a backup that started after the gap.

export interface RecoveryWindow {
  tli: number;
  /** Earliest restorable point: the end of that backup. */
  start: { backup: string; time: string; lsn: string } | null;
  /** Latest: the newest archived segment of the unbroken run, and when it was stored. */
  end: { segment: string; time: string } | null;
  /** Backups that recovery onto this timeline can start from (oldest first). */
  backups: BackupInfo[];
}

export function recoveryWindow(inv: Inventory, history: readonly HistoryEntry[], names: Map<string, WalEntry>, segSize: number, tli: number): RecoveryWindow {
  const usable = inv.backups.filter((b) => {
    try {
      timelinePath(b, tli, [...history], segSize);
      return true;
    } catch {
      return false;
    }
  });
  const out: RecoveryWindow = { tli, start: null, end: null, backups: usable };
  const segs = inv.timelines.get(tli)?.segments ?? [];
  if (!segs.length || !usable.length) return out;
  const newest = segmentNumber(segs[segs.length - 1]!.name, segSize);
  const path = historyPath(tli, history, segSize);
  const lowest = usable.map((b) => segmentNumber(b.startSegment, segSize)).reduce((a, b) => (b < a ? b : a));
  const missing: bigint[] = [];
  for (let s = lowest; s <= newest; s++) if (!presentOnPath(names, path, s, segSize)) missing.push(s);
  const runEnd = (from: bigint): bigint => {
    for (const m of missing) if (m >= from) return m - 1n;
    return newest;
  };
  let best: { b: BackupInfo; end: bigint } | undefined;
  for (const b of usable) {
    const end = runEnd(segmentNumber(b.startSegment, segSize));
    const stop = segmentNumber(segmentOfEndLsn(b.stopLsn, 1, segSize), segSize);
    if (end < stop) continue;
    if (!best || end > best.end) best = { b, end };
  }
  if (!best) return out;
  const last = presentOnPath(names, path, best.end, segSize)!;
  out.start = { backup: best.b.id, time: best.b.stopTime, lsn: best.b.stopLsn };
  out.end = { segment: last.name, time: last.lastModified.toISOString() };
  return out;
}
