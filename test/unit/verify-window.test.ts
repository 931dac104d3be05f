// WAL continuity per timeline (what verify calls gaps) and the recovery window (what info shows),
// on inventories built by hand: gaps by name, a timeline's start at its switch point, a parent's
// segments after the switch not expected, the window cut by a gap.
import { describe, expect, it } from 'vitest';
import type { BackupInfo } from '../../src/backup/backup-info.js';
import type { HistoryEntry } from '../../src/backup/coverage.js';
import { backupWal, dropIsHarmless, segmentNames, walContinuity } from '../../src/operate/continuity.js';
import type { Inventory, TimelineWal } from '../../src/operate/inventory.js';
import { recoveryWindow } from '../../src/operate/window.js';

const SEG = 16 * 1024 * 1024;
const hex = (n: number) => n.toString(16).toUpperCase().padStart(8, '0');
const seg = (n: number, tli = 1) => `${hex(tli)}00000000${hex(n)}`;
const lsnOf = (n: number, off = 0x28) => `0/${((n * SEG + off) >>> 0).toString(16).toUpperCase()}`;

function inventory(tl: Record<number, number[]>, backups: BackupInfo[] = []): Inventory {
  const timelines = new Map<number, TimelineWal>();
  for (const [tli, nums] of Object.entries(tl)) {
    const t = Number(tli);
    timelines.set(t, {
      tli: t,
      segments: nums.map((n) => ({ key: `wal/${seg(n, t).slice(0, 16)}/${seg(n, t)}`, name: seg(n, t), kind: 'segment' as const, storedSize: 1, lastModified: new Date(Date.UTC(2026, 0, 1, 0, n)) })),
      partials: [],
      backupLabels: [],
    });
  }
  return {
    url: 'file:///r', manifest: null, backups, rejected: new Map(), backupDirs: new Map(), timelines, histories: new Map(),
    gapMarkers: [], state: [], other: [], listedAt: new Date(),
  };
}

function backup(id: string, start: number, stop: number, tli = 1): BackupInfo {
  return {
    format: 2, id, timeline: tli, stopTimeline: tli, startSegment: seg(start, tli), stopSegment: seg(stop, tli), walSegmentSize: SEG,
    startLsn: lsnOf(start), checkpointLsn: lsnOf(start, 0x60), stopLsn: lsnOf(stop, 0x100), startTime: `2026-01-01T00:${String(start).padStart(2, '0')}:00Z`,
    stopTime: `2026-01-01T00:${String(stop).padStart(2, '0')}:30Z`,
  } as BackupInfo;
}

describe('walContinuity (verify: which WAL must be there, which is missing)', () => {
  it('names each gap from the oldest backup\'s start to the newest segment, as ranges', () => {
    const inv = inventory({ 1: [1, 2, 3, 4, 6, 7, 10, 11] }, [backup('b1', 3, 4)]);
    const [t] = walContinuity(inv, new Map(), SEG);
    expect(t!.expected).toEqual({ first: seg(3), last: seg(11), count: 9 });
    expect(t!.gaps).toEqual([
      { first: seg(5), last: seg(5), count: 1 },
      { first: seg(8), last: seg(9), count: 2 },
    ]);
  });

  it('finds a missing first segment (the oldest backup\'s start)', () => {
    const inv = inventory({ 1: [4, 5] }, [backup('b1', 3, 4)]);
    expect(walContinuity(inv, new Map(), SEG)[0]!.gaps).toEqual([{ first: seg(3), last: seg(3), count: 1 }]);
  });

  it('starts a timeline at its switch point; its parent is expected up to the segment before it', () => {
    // Timeline 2 branched off 1 inside segment 6 (a failover: 6 of timeline 1 is only a .partial):
    // 1 is expected up to 5, 2 begins at 6, which it holds itself.
    const inv = inventory({ 1: [2, 3, 4, 5], 2: [6, 7, 9] }, [backup('b1', 2, 3)]);
    const histories = new Map<number, HistoryEntry[]>([[2, [{ tli: 1, switchLsn: lsnOf(6, 0x2000) }]]]);
    const [t1, t2] = walContinuity(inv, histories, SEG);
    expect(t1!.expected).toEqual({ first: seg(2), last: seg(5), count: 4 });
    expect(t1!.gaps).toEqual([]);
    expect(t2!.parent).toEqual({ tli: 1, switchLsn: lsnOf(6, 0x2000) });
    expect(t2!.expected).toEqual({ first: seg(6, 2), last: seg(9, 2), count: 4 });
    expect(t2!.gaps).toEqual([{ first: seg(8, 2), last: seg(8, 2), count: 1 }]);
    // The old primary's archiving lagged: what recovery onto 2 reads of 1 is missing, a gap.
    const lagged = inventory({ 1: [2, 3], 2: [6, 7] }, [backup('b1', 2, 3)]);
    expect(walContinuity(lagged, histories, SEG)[0]!.gaps).toEqual([{ first: seg(4), last: seg(5), count: 2 }]);
  });

  it('after a point-in-time recovery into the past: a parent that backups can still be recovered onto is expected through its newest segment', () => {
    // Timeline 1 ran to segment 12; timeline 2 branched off it inside segment 6. b2 (on 1, after the
    // switch point) and b1 can be recovered onto timeline 1 up to 12: its gap at 9 is one they hit.
    const inv = inventory({ 1: [2, 3, 4, 5, 6, 7, 8, 10, 11, 12], 2: [6, 7] }, [backup('b1', 2, 3), backup('b2', 8, 8)]);
    const histories = new Map<number, HistoryEntry[]>([[2, [{ tli: 1, switchLsn: lsnOf(6, 0x2000) }]]]);
    const [t1, t2] = walContinuity(inv, histories, SEG);
    expect(t1!.expected).toEqual({ first: seg(2), last: seg(12), count: 11 });
    expect(t1!.gaps).toEqual([{ first: seg(9), last: seg(9), count: 1 }]);
    expect(t2!.gaps).toEqual([]);
  });

  it('a parent is expected up to its last child\'s switch point (recovery onto that child reads it there)', () => {
    // Timelines 2 and 3 both branched off 1 (at 4 and at 7): recovery onto 3 reads 1 up to 6.
    const inv = inventory({ 1: [2, 3, 4, 6], 2: [4], 3: [7] }, [backup('b1', 2, 3)]);
    const histories = new Map<number, HistoryEntry[]>([
      [2, [{ tli: 1, switchLsn: lsnOf(4, 0x2000) }]],
      [3, [{ tli: 1, switchLsn: lsnOf(7, 0x2000) }]],
    ]);
    const t1 = walContinuity(inv, histories, SEG)[0]!;
    expect(t1.expected).toEqual({ first: seg(2), last: seg(6), count: 5 });
    expect(t1.gaps).toEqual([{ first: seg(5), last: seg(5), count: 1 }]);
  });

  it('a parent no backup can be recovered onto: what it archived after the first switch point is not expected', () => {
    // Only a backup on timeline 2 (after the switch): timeline 1's segments are of no use to it.
    const inv = inventory({ 1: [2, 3, 5, 8], 2: [6, 7, 8] }, [backup('b2', 7, 7, 2)]);
    const histories = new Map<number, HistoryEntry[]>([[2, [{ tli: 1, switchLsn: lsnOf(6, 0x2000) }]]]);
    const [t1, t2] = walContinuity(inv, histories, SEG);
    expect(t1!.expected).toBeUndefined();
    expect(t1!.gaps).toEqual([]);
    expect(t2!.expected).toEqual({ first: seg(7, 2), last: seg(8, 2), count: 2 });
  });

  it('a later timeline without its history file: from its own first segment', () => {
    const inv = inventory({ 1: [2, 3], 2: [7, 9] }, [backup('b1', 2, 3)]);
    const t2 = walContinuity(inv, new Map(), SEG)[1]!;
    expect(t2.expected).toEqual({ first: seg(7, 2), last: seg(9, 2), count: 3 });
    expect(t2.gaps).toEqual([{ first: seg(8, 2), last: seg(8, 2), count: 1 }]);
  });

  it('without backups, from the timeline\'s own first segment', () => {
    const inv = inventory({ 1: [5, 7] });
    expect(walContinuity(inv, new Map(), SEG)[0]!.gaps).toEqual([{ first: seg(6), last: seg(6), count: 1 }]);
  });

  it('a lost tail: the high-water mark says archived beyond the newest listed segment (the tail is a gap)', () => {
    const inv = inventory({ 1: [2, 3, 4] }, [backup('b1', 2, 3)]);
    const marks = new Map([[1, { timeline: 1, first: seg(1), last: seg(6), updatedAt: '2026-01-01T00:00:00Z' }]]);
    const [t] = walContinuity(inv, new Map(), SEG, marks);
    expect(t!.expected).toEqual({ first: seg(2), last: seg(6), count: 5 });
    expect(t!.gaps).toEqual([{ first: seg(5), last: seg(6), count: 2 }]);
    // A mark behind the newest segment (rate-limited) changes nothing.
    const behind = new Map([[1, { timeline: 1, first: seg(1), last: seg(3), updatedAt: '2026-01-01T00:00:00Z' }]]);
    expect(walContinuity(inv, new Map(), SEG, behind)[0]!.gaps).toEqual([]);
  });

  it('a timeline whose every segment is gone but whose mark remains: all of it is a gap', () => {
    const inv = inventory({ 1: [2, 3] }, [backup('b1', 2, 3)]);
    inv.timelines.delete(1);
    const marks = new Map([[1, { timeline: 1, first: seg(1), last: seg(4), updatedAt: '2026-01-01T00:00:00Z' }]]);
    expect(walContinuity(inv, new Map(), SEG, marks)[0]!.gaps).toEqual([{ first: seg(2), last: seg(4), count: 3 }]);
  });

  it('a backup needs its start to stop segments', () => {
    expect(backupWal(backup('b', 3, 5), new Map())).toEqual([seg(3), seg(4), seg(5)]);
  });
});

describe('dropIsHarmless (a maxReadyBytes gap marker verify calls a note, not a problem)', () => {
  it('before the expected range of its timeline, or, with nothing expected there, before every backup', () => {
    const inv = inventory({ 1: [4, 5] }, [backup('b1', 4, 5)]);
    const c = walContinuity(inv, new Map(), SEG);
    expect(dropIsHarmless(seg(3), c, inv.backups, SEG)).toBe(true);
    expect(dropIsHarmless(seg(4), c, inv.backups, SEG)).toBe(false);
    // Timeline 2 has no archived WAL at all, so nothing expected: before every backup is harmless.
    expect(dropIsHarmless(seg(3, 2), c, inv.backups, SEG)).toBe(true);
    expect(dropIsHarmless(seg(6, 2), c, inv.backups, SEG)).toBe(false);
    expect(dropIsHarmless(seg(3, 2), c, [], SEG)).toBe(false);
  });
});

describe('recoveryWindow (info: what can be restored)', () => {
  const win = (inv: Inventory, tli = 1, h: HistoryEntry[] = []) =>
    recoveryWindow(inv, h, walContinuity(inv, new Map(h.length ? [[tli, h]] : []), SEG), segmentNames(inv), SEG, tli);

  it('runs from the end of the oldest backup to the newest segment when nothing is missing', () => {
    const inv = inventory({ 1: [2, 3, 4, 5, 6] }, [backup('b1', 2, 3), backup('b2', 5, 5)]);
    const w = win(inv);
    expect(w.start).toEqual({ backup: 'b1', time: '2026-01-01T00:03:30Z', lsn: lsnOf(3, 0x100) });
    expect(w.end).toEqual({ segment: seg(6), time: '2026-01-01T00:06:00.000Z' });
  });

  it('a gap moves the start to the first backup after it', () => {
    const inv = inventory({ 1: [2, 3, 5, 6, 7, 8] }, [backup('b1', 2, 3), backup('b2', 5, 6)]);
    const w = win(inv);
    expect(w.start!.backup).toBe('b2');
    expect(w.end!.segment).toBe(seg(8));
  });

  it('a gap after the newest backup ends the window before it', () => {
    const inv = inventory({ 1: [2, 3, 4, 6, 7] }, [backup('b1', 2, 3)]);
    const w = win(inv);
    expect(w.start!.backup).toBe('b1');
    expect(w.end!.segment).toBe(seg(4));
  });

  it('follows the history into a child timeline from a backup on the parent', () => {
    const inv = inventory({ 1: [2, 3, 4, 5], 2: [6, 7] }, [backup('b1', 2, 3)]);
    const h: HistoryEntry[] = [{ tli: 1, switchLsn: lsnOf(6, 0x2000) }];
    const w = win(inv, 2, h);
    expect(w.start!.backup).toBe('b1');
    expect(w.end!.segment).toBe(seg(7, 2));
  });

  it('a gap on the parent cuts the child\'s window and is among the child\'s gaps (the gaps verify reports)', () => {
    const inv = inventory({ 1: [2, 3, 5], 2: [6, 7, 8] }, [backup('b1', 2, 3)]);
    const h: HistoryEntry[] = [{ tli: 1, switchLsn: lsnOf(6, 0x2000) }];
    const w = win(inv, 2, h);
    expect(w.gaps).toEqual([{ first: seg(4), last: seg(4), count: 1 }]);
    expect(w.start!.backup).toBe('b1');
    expect(w.end!.segment).toBe(seg(3));
    const verify = walContinuity(inv, new Map([[2, h]]), SEG);
    expect(verify[0]!.gaps).toEqual(w.gaps);
  });

  it('none without a backup whose WAL is whole to its stop', () => {
    const inv = inventory({ 1: [2, 4, 5] }, [backup('b1', 2, 3)]);
    expect(win(inv).start).toBeNull();
  });
});
