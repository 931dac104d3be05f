import { describe, expect, it } from 'vitest';
import type { BackupInfo } from '../../src/backup/backup-info.js';
import { makeBackupId } from '../../src/backup/catalog.js';
import type { BackupDir, Inventory, TimelineWal, WalEntry } from '../../src/operate/inventory.js';
import { planRetention, type RetentionRules } from '../../src/operate/retention.js';
import { chainSafeOrder, type DeleteOutcome } from '../../src/operate/delete-run.js';
import { renderJson, renderText } from '../../src/operate/delete-report.js';
import { controlChar } from '../../src/common/control-chars.js';
import type { ListedObject } from '../../src/storage/types.js';

const MiB = 1024 * 1024;
const SEG = 16 * MiB;
const NOW = new Date('2026-11-30T12:00:00Z');
const hex8 = (n: number) => n.toString(16).toUpperCase().padStart(8, '0');
const seg = (n: number, tli = 1) => `${hex8(tli)}00000000${hex8(n)}`;
const daysAgo = (d: number) => new Date(NOW.getTime() - d * 86_400_000);
const obj = (key: string, at = daysAgo(100), size = 100): ListedObject => ({ key, storedSize: size, lastModified: at });
/** An LSN `offset` bytes into segment `n`. */
const lsn = (n: number, offset = 0) => `0/${(n * SEG + offset).toString(16).toUpperCase()}`;

interface B {
  start: number;
  age: number;
  tli?: number;
  ref?: BackupInfo;
}

function backup({ start, age, tli = 1, ref }: B): BackupInfo {
  const startTime = daysAgo(age);
  return {
    id: makeBackupId(seg(start, tli), startTime),
    format: 2,
    method: 'files',
    type: ref ? 'incremental' : 'full',
    ...(ref ? { reference: ref.id } : {}),
    startTime: startTime.toISOString(),
    stopTime: new Date(startTime.getTime() + 60_000).toISOString(),
    timeline: tli,
    stopTimeline: tli,
    startLsn: lsn(start, 0x28),
    checkpointLsn: lsn(start, 0x60),
    stopLsn: lsn(start + 1, 0x100),
    startSegment: seg(start, tli),
    stopSegment: seg(start + 1, tli),
    walSegmentSize: SEG,
  } as BackupInfo;
}

function wal(name: string, kind: WalEntry['kind'], age = 1): WalEntry {
  const key = kind === 'backup' ? `wal/${name}` : `wal/${name.slice(0, 16)}/${name}`;
  return { ...obj(key, daysAgo(age), 1000), name, kind };
}

/**
 * An inventory: the backups (each with backup.json and one data object), WAL on timelines (first and
 * last segment, and how many days ago it was archived: 1 unless given), extras.
 */
function repo(backups: BackupInfo[], timelines: Record<number, [number, number, number?]>, extra: Partial<Inventory> = {}): Inventory {
  const backupDirs = new Map<string, BackupDir>();
  for (const b of backups) {
    const at = new Date(b.stopTime);
    backupDirs.set(b.id, { id: b.id, hasSentinel: true, newest: at, objects: [obj(`backups/${b.id}/files.json`, at, 10), obj(`backups/${b.id}/backup.json`, at, 5)] });
  }
  const tls = new Map<number, TimelineWal>();
  for (const [tli, [from, to, age]] of Object.entries(timelines)) {
    const t = Number(tli);
    const segments: WalEntry[] = [];
    for (let n = from; n <= to; n++) segments.push(wal(seg(n, t), 'segment', age));
    tls.set(t, { tli: t, segments, partials: [], backupLabels: [] });
  }
  return {
    url: 'file:///repo',
    manifest: null,
    backups,
    rejected: new Map(),
    backupDirs,
    timelines: tls,
    histories: new Map(),
    gapMarkers: [],
    state: [],
    other: [],
    listedAt: NOW,
    ...extra,
  };
}

const rules = (r: Partial<RetentionRules>): RetentionRules => ({ now: NOW, staleUploadAge: 86_400, ...r });
const ids = (list: { backup: BackupInfo }[]) => list.map((x) => x.backup.id);

describe('retention plan', () => {
  const b1 = backup({ start: 2, age: 30 });
  const b2 = backup({ start: 10, age: 20 });
  const b3 = backup({ start: 20, age: 10 });

  it('delete: --retain-full 2 removes the oldest backup and only the WAL before the second', () => {
    const plan = planRetention(repo([b1, b2, b3], { 1: [2, 25] }), rules({ retainFull: 2 }));
    expect(ids(plan.deleteBackups)).toEqual([b1.id]);
    expect(ids(plan.keep)).toEqual([b2.id, b3.id]);
    // backup.json first: the backup leaves listings before its data goes.
    expect(plan.deleteBackups[0]!.keys[0]).toBe(`backups/${b1.id}/backup.json`);
    expect(plan.deleteBackups[0]!.keys).toContain(`backups/${b1.id}/files.json`);
    expect(plan.deleteBackups[0]!.reason).toBe('older than the 2 newest full backups');
    expect(plan.walCutoff).toEqual({ segment: b2.startSegment, why: `start of the oldest kept backup ${b2.id}` });
    expect(plan.wal).toHaveLength(1);
    expect(plan.wal[0]).toMatchObject({ tli: 1, first: seg(2), last: seg(9), segments: 8, partials: 0, bytes: 8000 });
  });

  it('keeps an incremental chain whole: retain-full 1 with full + incrementals newest keeps them all', () => {
    const i1 = backup({ start: 22, age: 9, ref: b3 });
    const i2 = backup({ start: 24, age: 8, ref: i1 });
    const plan = planRetention(repo([b1, b2, b3, i1, i2], { 1: [2, 30] }), rules({ retainFull: 1 }));
    expect(ids(plan.keep)).toEqual([b3.id, i1.id, i2.id]);
    expect(ids(plan.deleteBackups)).toEqual([b1.id, b2.id]);
    expect(plan.walCutoff?.segment).toBe(b3.startSegment);
  });

  it('deletes an incremental whose chain root goes, and keeps the references of a kept incremental', () => {
    const i1 = backup({ start: 12, age: 19, ref: b2 });
    const plan = planRetention(repo([b1, b2, i1, b3], { 1: [2, 25] }), rules({ retainFull: 1 }));
    expect(ids(plan.deleteBackups)).toEqual([b1.id, b2.id, i1.id]);
    expect(plan.deleteBackups[2]!.reason).toBe(`incremental built on ${b2.id}, which goes`);
    // The newest backup is an incremental: it keeps its reference even though retainFull 1 would not.
    const i2 = backup({ start: 22, age: 5, ref: b2 });
    const p2 = planRetention(repo([b1, b2, b3, i2], { 1: [2, 25] }), rules({ retainFull: 1 }));
    expect(ids(p2.keep)).toEqual([b2.id, b3.id, i2.id]);
    expect(p2.keep[0]!.reasons).toEqual([`referenced by kept ${i2.id}`]);
    // A branch off a full that stays only for another incremental's sake: not needed, goes.
    const branch = backup({ start: 12, age: 19, ref: b2 });
    const p3 = planRetention(repo([b1, b2, branch, b3, i2], { 1: [2, 25] }), rules({ retainFull: 1 }));
    expect(ids(p3.deleteBackups)).toEqual([b1.id, branch.id]);
    expect(p3.deleteBackups[1]!.reason).toBe(`incremental built on ${b2.id}, which stays, but no kept backup needs it`);
  });

  it('--retain-days keeps the window plus the newest backup that ended before it', () => {
    const plan = planRetention(repo([b1, b2, b3], { 1: [2, 25] }), rules({ retainDays: 15 }));
    expect(ids(plan.keep)).toEqual([b2.id, b3.id]);
    expect(plan.keep[0]!.reasons[0]).toMatch(/newest backup that ended before the 15 days window/);
    expect(ids(plan.deleteBackups)).toEqual([b1.id]);
    const wide = planRetention(repo([b1, b2, b3], { 1: [2, 25] }), rules({ retainDays: 25 }));
    expect(ids(wide.keep)).toEqual([b1.id, b2.id, b3.id]);
  });

  it('with both rules keeps the union', () => {
    const plan = planRetention(repo([b1, b2, b3], { 1: [2, 25] }), rules({ retainFull: 1, retainDays: 15 }));
    expect(ids(plan.keep)).toEqual([b2.id, b3.id]);
    const p2 = planRetention(repo([b1, b2, b3], { 1: [2, 25] }), rules({ retainFull: 3, retainDays: 1 }));
    expect(ids(p2.keep)).toEqual([b1.id, b2.id, b3.id]);
  });

  it('never deletes the newest backup, even when every backup is older than the window', () => {
    const plan = planRetention(repo([b1, b2, b3], { 1: [2, 25] }), rules({ retainDays: 1 }));
    expect(ids(plan.keep)).toEqual([b3.id]);
    expect(plan.keep[0]!.reasons).toContain('newest backup');
    // WAL after the newest backup's start stays.
    expect(plan.wal[0]!.last).toBe(seg(19));
  });

  it('keeps WAL from the lowest start segment of all kept backups, on every timeline', () => {
    // After a PITR to a point before b3, timeline 2 branches in segment 15; its backup starts at 16,
    // below b3 (20) on timeline 1. b3 (past the fork) stays only because it is locked.
    const t2 = backup({ start: 16, age: 5, tli: 2 });
    const histories = new Map([[2, [{ tli: 1, switchLsn: lsn(15, 0x800000) }]]]);
    const inv = repo([b1, b2, b3, t2], { 1: [2, 25], 2: [15, 30] });
    const plan = planRetention(inv, rules({ retainFull: 1 }), { backups: new Map([[b3.id, 'legal hold']]) }, histories);
    expect(ids(plan.keep)).toEqual([b3.id, t2.id]);
    expect(plan.walCutoff?.segment).toBe(t2.startSegment);
    // Timeline 1 keeps 16..25 (b3 starts at 20, but the cutoff is the lowest start of all kept);
    // timeline 2's first segment 15 is below every kept backup's start and goes.
    expect(plan.wal.map((w) => [w.tli, w.first, w.last, w.segments])).toEqual([
      [1, seg(2), seg(15), 14],
      [2, seg(15, 2), seg(15, 2), 1],
    ]);
    // Unlocked, b3 cannot be recovered onto timeline 2 and is not one of its 2 newest fulls: b2 is.
    const p2 = planRetention(inv, rules({ retainFull: 2 }), {}, histories);
    expect(ids(p2.keep)).toEqual([b2.id, t2.id]);
    expect(ids(p2.deleteBackups)).toEqual([b1.id, b3.id]);
  });

  describe('retention across a PITR: timeline 2 branches off timeline 1 in segment 0x14, after A and before B', () => {
    // A on timeline 1 (start 0x0A, day -10), B on timeline 1 (0x1E, day -8, on the branch abandoned
    // at day -5), C on timeline 2 (0x28, day -3). Timeline 1 archived 0x02..0x25 until day -5,
    // timeline 2 0x14..0x30 since. Only A can be recovered onto timeline 2.
    const A = backup({ start: 0x0a, age: 10 });
    const B = backup({ start: 0x1e, age: 8 });
    const C = backup({ start: 0x28, age: 3, tli: 2 });
    const histories = new Map([[2, [{ tli: 1, switchLsn: lsn(0x14, 0x800000) }]]]);
    const pitr = (t1Age = 5) => repo([A, B, C], { 1: [0x02, 0x25, t1Age], 2: [0x14, 0x30, 1] });

    it('retention: --retain-days 7 keeps A, the start of the window on timeline 2 (B cannot be recovered onto it), and B for timeline 1', () => {
      const plan = planRetention(pitr(), rules({ retainDays: 7 }), {}, histories);
      expect(ids(plan.keep)).toEqual([A.id, B.id, C.id]);
      expect(plan.keep[0]!.reasons).toEqual(['newest backup that ended before the 7 days window, for timeline 2 (its start is the window\'s)']);
      expect(plan.keep[1]!.reasons).toEqual(['newest backup that ended before the 7 days window, for timeline 1 (its start is the window\'s)']);
      expect(plan.deleteBackups).toEqual([]);
      // Timeline 2's 0x14..0x1D (below B, needed from A onto timeline 2) stay: WAL goes only below A.
      expect(plan.walCutoff?.segment).toBe(A.startSegment);
      expect(plan.wal.map((w) => [w.tli, w.first, w.last])).toEqual([[1, seg(0x02), seg(0x09)]]);
    });

    it('retention: --retain-days 7 with timeline 1 silent for 8 days keeps A for timeline 2 and lets B go', () => {
      const plan = planRetention(pitr(8), rules({ retainDays: 7 }), {}, histories);
      expect(ids(plan.keep)).toEqual([A.id, C.id]);
      expect(ids(plan.deleteBackups)).toEqual([B.id]);
      expect(plan.walCutoff?.segment).toBe(A.startSegment);
    });

    it('retention: --retain-full 2 counts only fulls that can be recovered onto timeline 2: A and C stay, B goes', () => {
      const plan = planRetention(pitr(), rules({ retainFull: 2 }), {}, histories);
      expect(ids(plan.keep)).toEqual([A.id, C.id]);
      expect(plan.keep[0]!.reasons).toEqual(['one of the 2 newest full backups that can be recovered onto timeline 2, the newest']);
      expect(ids(plan.deleteBackups)).toEqual([B.id]);
      expect(plan.deleteBackups[0]!.reason).toMatch(/^not counted among the newest full backups: timeline 2 branched off timeline 1 at 0\/14800000, before the backup's checkpoint/);
      expect(plan.walCutoff?.segment).toBe(A.startSegment);
      expect(plan.wal.map((w) => [w.tli, w.first, w.last])).toEqual([[1, seg(0x02), seg(0x09)]]);
    });

    it('retention: --retain-full 3, more than timeline 2 can be recovered from, keeps B too (never fewer fulls than N)', () => {
      const plan = planRetention(pitr(), rules({ retainFull: 3 }), {}, histories);
      expect(ids(plan.keep)).toEqual([A.id, B.id, C.id]);
      expect(plan.keep[1]!.reasons).toEqual(['one of the 3 newest full backups (fewer can be recovered onto timeline 2, the newest)']);
    });

    it('retention: a later timeline without its history file can only be recovered from its own backups', () => {
      const plan = planRetention(pitr(), rules({ retainFull: 1, retainDays: 7 }));
      expect(ids(plan.keep)).toEqual([B.id, C.id]);
      expect(plan.keep[0]!.reasons).toEqual(['newest backup that ended before the 7 days window, for timeline 1 (its start is the window\'s)']);
    });
  });

  it('retention: --retain-full counts fulls for the timeline archived to now, not an abandoned higher one (a DR drill promoted into this repository)', () => {
    // Production stays on timeline 1 (F1, F2, F3; WAL archived yesterday); a drill promoted a copy
    // at 0x15 (after F1) onto timeline 2, archived 0x15..0x18 nine days ago and was dropped.
    const F1 = backup({ start: 0x0a, age: 10 });
    const F2 = backup({ start: 0x20, age: 6 });
    const F3 = backup({ start: 0x30, age: 2 });
    const histories = new Map([[2, [{ tli: 1, switchLsn: lsn(0x15) }]]]);
    const inv = repo([F1, F2, F3], { 1: [0x02, 0x40, 1], 2: [0x15, 0x18, 9] });
    const plan = planRetention(inv, rules({ retainFull: 2 }), {}, histories);
    expect(ids(plan.keep)).toEqual([F2.id, F3.id]);
    expect(ids(plan.deleteBackups)).toEqual([F1.id]);
    expect(plan.walCutoff?.segment).toBe(F2.startSegment);
  });

  it('deletes old .partial and .backup files and gap markers below the cutoff, never history files', () => {
    const inv = repo([b1, b2, b3], { 1: [2, 25] });
    const t1 = inv.timelines.get(1)!;
    t1.partials.push(wal(`${seg(5)}.partial`, 'partial'), wal(`${seg(21)}.partial`, 'partial'));
    t1.backupLabels.push(wal(`${seg(2)}.00000028.backup`, 'backup'), wal(`${seg(10)}.00000028.backup`, 'backup'));
    inv.histories.set(2, { ...obj('wal/00000002.history'), name: '00000002.history', kind: 'history' });
    inv.gapMarkers.push({ ...obj(`state/gaps/${seg(4)}.json`), name: seg(4) }, { ...obj(`state/gaps/${seg(11)}.json`), name: seg(11) });
    const plan = planRetention(inv, rules({ retainFull: 2 }));
    const names = plan.wal[0]!.files.map((f) => f.name);
    expect(plan.wal[0]).toMatchObject({ segments: 8, partials: 1, backupLabels: 1 });
    expect(names).toContain(`${seg(5)}.partial`);
    expect(names).toContain(`${seg(2)}.00000028.backup`);
    expect(names).not.toContain(`${seg(10)}.00000028.backup`);
    expect(names.some((n) => n.endsWith('.history'))).toBe(false);
    expect(plan.gapMarkers.map((g) => g.name)).toEqual([seg(4)]);
  });

  it('removes incomplete backup directories only once stale; reports damaged backups and foreign keys, never deletes them', () => {
    const inv = repo([b1, b2, b3], { 1: [2, 25] });
    const stale = { id: makeBackupId(seg(30), daysAgo(3)), hasSentinel: false, newest: daysAgo(2), objects: [obj('backups/x/a', daysAgo(2), 7)] };
    const fresh = { id: makeBackupId(seg(31), daysAgo(0)), hasSentinel: false, newest: new Date(NOW.getTime() - 60_000), objects: [obj('backups/y/a', NOW, 7)] };
    const bad = { id: makeBackupId(seg(1), daysAgo(40)), hasSentinel: true, newest: daysAgo(40), objects: [obj('backups/z/backup.json')] };
    for (const d of [stale, fresh, bad]) inv.backupDirs.set(d.id, d);
    inv.rejected.set(bad.id, new Error('not JSON'));
    inv.other.push(obj('notes.txt'));
    const plan = planRetention(inv, rules({ retainFull: 2 }));
    expect(plan.incomplete.map((i) => i.dir.id)).toEqual([stale.id]);
    expect(plan.incomplete[0]!.bytes).toBe(7);
    expect(plan.incompleteRecent.map((d) => d.id)).toEqual([fresh.id]);
    expect(plan.rejected).toEqual([{ id: bad.id, reason: 'not JSON' }]);
    expect(plan.foreign.map((o) => o.key)).toEqual(['notes.txt']);
    const planned = [...plan.deleteBackups.flatMap((d) => d.keys), ...plan.incomplete.flatMap((i) => i.dir.objects.map((o) => o.key))];
    expect(planned).not.toContain('notes.txt');
    expect(planned).not.toContain('backups/z/backup.json');
  });

  it('delete: an incomplete upload is stale only when old by the host clock and by the store clock (its newest lastModified)', () => {
    const age = 3600;
    const h = (n: number) => new Date(NOW.getTime() - n * 3_600_000);
    const dir = (n: number, at: Date) => ({ id: makeBackupId(seg(40 + n), at), hasSentinel: false, newest: at, objects: [obj(`backups/d${n}/a`, at, 7)] });
    // The store's clock is 3 h behind the host's: WAL pushed just now is listed as written 3 h ago.
    const behind = repo([], {});
    behind.timelines.set(1, { tli: 1, segments: [{ ...obj(`wal/0000000100000000/${seg(50)}`, h(3), 1000), name: seg(50), kind: 'segment' }], partials: [], backupLabels: [] });
    const running = dir(1, h(3.5)); // last written 30 min ago by the store's clock
    const killed = dir(2, h(5)); // 2 h ago by the store's clock
    behind.backupDirs.set(running.id, running);
    behind.backupDirs.set(killed.id, killed);
    const plan = planRetention(behind, rules({ retainFull: 1, staleUploadAge: age }));
    expect(plan.incomplete.map((i) => i.dir.id)).toEqual([killed.id]);
    expect(plan.incompleteRecent.map((d) => d.id)).toEqual([running.id]);
    expect(plan.staleBefore).toEqual(h(4));
    // The host's clock behind the store's: the listing time decides.
    const ahead = repo([], {});
    const recent = dir(3, h(0.5));
    ahead.backupDirs.set(recent.id, recent);
    ahead.other.push(obj('notes.txt', new Date(NOW.getTime() + 3 * 3_600_000)));
    const p2 = planRetention(ahead, rules({ retainFull: 1, staleUploadAge: age }));
    expect(p2.incompleteRecent.map((d) => d.id)).toEqual([recent.id]);
    expect(p2.staleBefore).toEqual(h(1));
  });

  it('without a complete backup removes nothing but stale incomplete uploads', () => {
    const inv = repo([], { 1: [2, 25] });
    // Written 3 days ago, 2 days before the newest WAL: stale by the host's clock and by the store's.
    const stale = { id: makeBackupId(seg(30), daysAgo(3)), hasSentinel: false, newest: daysAgo(3), objects: [obj('backups/x/a', daysAgo(3), 7)] };
    inv.backupDirs.set(stale.id, stale);
    inv.gapMarkers.push({ ...obj(`state/gaps/${seg(4)}.json`), name: seg(4) });
    const plan = planRetention(inv, rules({ retainFull: 1 }));
    expect(plan.noCompleteBackup).toBe(true);
    expect(plan.deleteBackups).toEqual([]);
    expect(plan.wal).toEqual([]);
    expect(plan.gapMarkers).toEqual([]);
    expect(plan.incomplete.map((i) => i.dir.id)).toEqual([stale.id]);
  });

  it('keeps a backup with a locked object whole (and its WAL), and WAL from the first locked segment', () => {
    const plan = planRetention(repo([b1, b2, b3], { 1: [2, 25] }), rules({ retainFull: 1 }), { backups: new Map([[b1.id, 'COMPLIANCE until 2027-01-01T00:00:00.000Z']]) });
    expect(ids(plan.keep)).toEqual([b1.id, b3.id]);
    expect(ids(plan.deleteBackups)).toEqual([b2.id]);
    expect(plan.locked).toEqual([{ id: b1.id, reason: 'COMPLIANCE until 2027-01-01T00:00:00.000Z' }]);
    expect(plan.wal).toEqual([]);
    const floor = planRetention(repo([b1, b2, b3], { 1: [2, 25] }), rules({ retainFull: 1 }), { walFloor: 6n });
    expect(floor.wal[0]).toMatchObject({ first: seg(2), last: seg(5), segments: 4 });
    expect(floor.walCutoff).toEqual({ segment: seg(6), why: 'the first WAL segment under Object Lock' });
  });

  it('delete: superseded high-water marks go (the newest 8 of each timeline stay, what readers read), locked ones are kept and summed up', () => {
    const mark = (tli: number, n: number) => `state/timeline-${hex8(tli)}/${(0xffffffffffffffffn - BigInt(n)).toString(16).toUpperCase()}-${seg(n, tli)}.json`;
    const inv = repo([b1, b2, b3], { 1: [2, 25] });
    inv.state.push(...[3, 9, 20, 21, 22, 23, 24, 25, 26, 27, 28].map((n) => obj(mark(1, n))), obj(mark(2, 4)), obj('state/timeline-00000001.json'));
    const plan = planRetention(inv, rules({ retainFull: 1 }));
    expect(plan.marks.map((m) => m.key)).toEqual([mark(1, 3), mark(1, 9), mark(1, 20)]);
    expect(plan.lockedMarks).toBeNull();
    const text = renderText({ plan, confirmed: false, deleted: { backups: [], incomplete: [], walFiles: 0, gapMarkers: 0, marks: 0, objects: 0, bytes: 0 }, abortedUploads: 0, failures: [] }, 'file:///r');
    expect(text).toContain('delete  3 superseded high-water marks (the newest 8 of each timeline stay, what readers read)');
    const why = `${mark(1, 9)}: GOVERNANCE until 2027-01-01T00:00:00.000Z`;
    const locked = planRetention(inv, rules({ retainFull: 1 }), { marks: new Map([[mark(1, 9), why], [mark(1, 20), why]]) });
    expect(locked.marks.map((m) => m.key)).toEqual([mark(1, 3)]);
    expect(locked.lockedMarks).toEqual({ count: 2, key: mark(1, 9), reason: why });
    const lockedText = renderText({ plan: locked, confirmed: false, deleted: { backups: [], incomplete: [], walFiles: 0, gapMarkers: 0, marks: 0, objects: 0, bytes: 0 }, abortedUploads: 0, failures: [] }, 'file:///r');
    expect(lockedText).toContain(`locked  2 superseded high-water marks: kept, S3 Object Lock on ${why} (and every newer one of its timeline)`);
  });

  it('needs a rule: it never plans to delete everything', () => {
    expect(() => planRetention(repo([b1], {}), rules({}))).toThrow(/retainFull or retainDays/);
  });
});

describe('delete order', () => {
  it('delete: chains go oldest first, and within a chain an incremental before the backup it is built on', () => {
    const f1 = backup({ start: 2, age: 30 });
    const i1 = backup({ start: 4, age: 29, ref: f1 });
    const i2 = backup({ start: 6, age: 28, ref: i1 });
    const f2 = backup({ start: 10, age: 20 });
    const f3 = backup({ start: 20, age: 10 });
    const plan = planRetention(repo([f1, i1, i2, f2, f3], { 1: [2, 25] }), rules({ retainFull: 1 }));
    expect(chainSafeOrder(plan.deleteBackups).map((d) => d.backup.id)).toEqual([i2.id, i1.id, f1.id, f2.id]);
  });
});

describe('delete report', () => {
  it('delete: keys and reasons from the repository reach the text report with their control characters escaped', () => {
    const b1 = backup({ start: 2, age: 30 });
    const b2 = backup({ start: 10, age: 20 });
    const inv = repo([b1, b2], { 1: [2, 12] });
    const forged = 'notes/\x1b[2J\x1b[1;1Hkeep    everything\r\ndeleted 0 backups\u2028';
    inv.other.push(obj(forged));
    const bad = { id: makeBackupId(seg(1), daysAgo(40)), hasSentinel: true, newest: daysAgo(40), objects: [obj('backups/z/backup.json')] };
    inv.backupDirs.set(bad.id, bad);
    inv.rejected.set(bad.id, new Error('label "\x07\nfake line" is not valid'));
    const plan = planRetention(inv, rules({ retainFull: 1 }));
    const outcome: DeleteOutcome = { plan, confirmed: false, deleted: { backups: [], incomplete: [], walFiles: 0, gapMarkers: 0, marks: 0, objects: 0, bytes: 0 }, abortedUploads: 0, failures: [] };
    const text = renderText(outcome, 'file:///repo');
    const lines = text.split('\n').slice(0, -1);
    for (const l of lines) expect(controlChar(l), l).toBeUndefined();
    expect(lines).toContain('foreign notes/\\x1b[2J\\x1b[1;1Hkeep    everything\\x0d\\x0adeleted 0 backups\\u2028: not a key walvault writes, not deleted');
    expect(lines.filter((l) => l.startsWith('deleted ') || l.startsWith('fake line'))).toEqual([]);
    expect(text).toContain('label "\\x07\\x0afake line" is not valid');
    // The JSON document escapes them (U+2028 too, which JSON.stringify leaves) and holds the key unchanged.
    const json = renderJson(outcome, 'file:///repo').slice(0, -1).replaceAll('\n', ' ');
    expect(controlChar(json)).toBeUndefined();
    expect((JSON.parse(json) as { foreign: Array<{ key: string }> }).foreign[0]!.key).toBe(forged);
  });
});
