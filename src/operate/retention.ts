import type { BackupInfo } from '../backup/backup-info.js';
import { SENTINEL_OBJECT, backupKey } from '../backup/catalog.js';
import type { ListedObject } from '../storage/types.js';
import { segmentName, segmentNumber } from '../wal/names.js';
import type { BackupDir, Inventory, WalEntry } from './inventory.js';
import { timelinesLiveSince, timelineView, type Histories, type TimelineView } from './retention-timelines.js';
import { segmentSizeOf } from './continuity.js';
import { supersededMarks } from '../archive/high-water-marks.js';

// What `walvault delete` removes, decided from one inventory without touching the store. Retention
// is counted in backups: a kept incremental keeps every backup it is built on, a kept full (by
// retainFull) the incrementals built on it. Both rules are timeline-aware: after a PITR, a backup
// taken on the abandoned branch after the fork cannot be recovered onto the new timeline, so it
// neither counts as one of the newest fulls nor serves as the start of the day window there. WAL is
// kept from the lowest start segment of all kept backups, on every timeline (a newer backup on a
// later timeline can start below an older one after a PITR). History files are never deleted
// (recovery_target_timeline=latest probes N+1, N+2... upward and stops at the first missing one).
// Damaged backups and foreign keys are only reported.

export interface RetentionRules {
  retainFull?: number;
  retainDays?: number;
  now: Date;
  /** Seconds: a backup directory without backup.json whose newest object is older is left-over. */
  staleUploadAge: number;
}

/** What the store's Object Lock forbids (found by the run before deleting anything). */
export interface LockedObjects {
  /** Backups with at least one locked object (kept whole), with the reason. */
  backups?: ReadonlyMap<string, string>;
  /** Incomplete backup directories with a locked object (left alone). */
  incomplete?: ReadonlyMap<string, string>;
  /** The lowest locked WAL segment number: it and everything above it stay. */
  walFloor?: bigint;
  /** Superseded high-water marks that stay (locked, or newer than a locked one of their timeline), with the reason. */
  marks?: ReadonlyMap<string, string>;
}

export interface KeptBackup {
  backup: BackupInfo;
  reasons: string[];
}

export interface DoomedBackup {
  backup: BackupInfo;
  reason: string;
  /** backup.json first (the backup leaves listings), then its other objects. */
  keys: string[];
  bytes: number;
}

export interface WalDeletion {
  tli: number;
  first: string;
  last: string;
  segments: number;
  partials: number;
  backupLabels: number;
  bytes: number;
  /** Oldest first. */
  files: WalEntry[];
}

export interface IncompleteDeletion {
  dir: BackupDir;
  bytes: number;
}

export interface RetentionPlan {
  rules: RetentionRules;
  /** Oldest first. */
  keep: KeptBackup[];
  /** Oldest first. */
  deleteBackups: DoomedBackup[];
  /** The repository's WAL segment size (continuity.ts segmentSizeOf). */
  segmentSize: number;
  /** WAL below this segment's number (on any timeline) goes, and why there; null: no WAL goes. */
  walCutoff: { segment: string; why: string } | null;
  wal: WalDeletion[];
  gapMarkers: Array<ListedObject & { name: string }>;
  /** Write-once high-water marks superseded by a newer one of their timeline, oldest first. */
  marks: ListedObject[];
  incomplete: IncompleteDeletion[];
  /** Incomplete directories too recent to be left-overs (a backup-push may be running). */
  incompleteRecent: BackupDir[];
  /** Incomplete uploads (directories, multipart uploads) last written before this are left-overs. */
  staleBefore: Date;
  rejected: Array<{ id: string; reason: string }>;
  foreign: ListedObject[];
  /** Reported, kept whole: locked backups and incomplete directories. */
  locked: Array<{ id: string; reason: string }>;
  /** Superseded marks kept because of Object Lock: how many, and the first one's key and reason. */
  lockedMarks: { count: number; key: string; reason: string } | null;
  noCompleteBackup: boolean;
}

type Repo = Pick<Inventory, 'backups' | 'rejected' | 'backupDirs' | 'timelines' | 'histories' | 'gapMarkers' | 'state' | 'other' | 'manifest' | 'listedAt'>;

const DAY_MS = 86_400_000;
const isIncremental = (b: BackupInfo) => b.type === 'incremental';
const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

/** The newest N fulls with their incrementals, the day window, the newest backup; closed over references. */
function chooseKept(repo: Repo, rules: RetentionRules, locked: ReadonlyMap<string, string>, view: TimelineView): Map<string, string[]> {
  const backups = repo.backups;
  const kept = new Map<string, string[]>();
  const keep = (b: BackupInfo, why: string) => {
    const r = kept.get(b.id);
    if (r) {
      if (!r.includes(why)) r.push(why);
    } else kept.set(b.id, [why]);
  };
  const children = new Map<string, BackupInfo[]>();
  for (const b of backups) {
    if (b.reference) children.set(b.reference, [...(children.get(b.reference) ?? []), b]);
  }
  const newest = backups[backups.length - 1]!;
  keep(newest, 'newest backup');
  if (rules.retainFull !== undefined) {
    // Only fulls the newest timeline can be recovered from count: one on a branch abandoned by a
    // PITR protects nothing of the live timeline.
    const allFulls = backups.filter((b) => !isIncremental(b));
    const usable = allFulls.filter((b) => view.unusable(b, view.newest) === undefined);
    const onto = usable.length < allFulls.length ? ` that can be recovered onto timeline ${view.newest}, the newest` : '';
    // Fewer usable than N (a timeline restored from elsewhere): the newest others fill up to N, so
    // this rule never keeps fewer fulls than it did before it knew about timelines.
    const missing = rules.retainFull - usable.length;
    const fill = missing > 0 ? allFulls.filter((b) => !usable.includes(b)).slice(-missing) : [];
    const chosen = [
      ...usable.slice(-rules.retainFull).map((f) => [f, `one of the ${plural(rules.retainFull!, 'newest full backup')}${onto}`] as const),
      ...fill.map((f) => [f, `one of the ${plural(rules.retainFull!, 'newest full backup')} (fewer can be recovered onto timeline ${view.newest}, the newest)`] as const),
    ];
    for (const [f, why] of chosen) {
      keep(f, why);
      const todo = [...(children.get(f.id) ?? [])];
      for (let c = todo.pop(); c; c = todo.pop()) {
        keep(c, `incremental built on kept ${f.id}`);
        todo.push(...(children.get(c.id) ?? []));
      }
    }
  }
  if (rules.retainDays !== undefined) {
    const from = rules.now.getTime() - rules.retainDays * DAY_MS;
    const before = backups.filter((b) => Date.parse(b.stopTime) < from);
    for (const b of backups) if (Date.parse(b.stopTime) >= from) keep(b, `ended within ${plural(rules.retainDays, 'day')}`);
    // Every timeline with points in the window needs its own starting backup: the newest one that
    // ended before the window AND can be recovered onto that timeline (after a PITR the newest
    // before the window may sit on the abandoned branch, past the fork).
    for (const tli of timelinesLiveSince(repo, from, view.newest)) {
      const base = before.filter((b) => view.unusable(b, tli) === undefined).at(-1);
      if (base) keep(base, `newest backup that ended before the ${plural(rules.retainDays, 'day')} window, for timeline ${tli} (its start is the window's)`);
    }
  }
  for (const b of backups) {
    const why = locked.get(b.id);
    if (why) keep(b, `locked (${why})`);
  }
  // A kept incremental keeps everything it is built on.
  const byId = new Map(backups.map((b) => [b.id, b]));
  for (const id of [...kept.keys()]) {
    for (let b = byId.get(id); b?.reference; b = byId.get(b.reference)) {
      const ref = byId.get(b.reference);
      if (ref) keep(ref, `referenced by kept ${b.id}`);
    }
  }
  return kept;
}

function deleteReason(b: BackupInfo, backups: BackupInfo[], kept: ReadonlyMap<string, string[]>, rules: RetentionRules, view: TimelineView): string {
  const parts: string[] = [];
  if (isIncremental(b)) {
    const byId = new Map(backups.map((x) => [x.id, x]));
    let root = b;
    while (root.reference && byId.has(root.reference)) root = byId.get(root.reference)!;
    if (root.reference) parts.push(`incremental whose reference ${root.reference} is missing`);
    else parts.push(kept.has(root.id) ? `incremental built on ${root.id}, which stays, but no kept backup needs it` : `incremental built on ${root.id}, which goes`);
  } else if (rules.retainFull !== undefined) {
    const why = view.unusable(b, view.newest);
    parts.push(why === undefined ? `older than the ${plural(rules.retainFull, 'newest full backup')}` : `not counted among the newest full backups: ${why}`);
  }
  if (rules.retainDays !== undefined) parts.push(`ended ${b.stopTime}, before the ${plural(rules.retainDays, 'day')} window and not needed for it`);
  if (parts.length === 0) parts.push('not kept by any rule');
  return parts.join('; ');
}

/**
 * Where left-over uploads end: lastModified is the store's clock, the listing time the host's, and
 * either may be off. A directory counts as stale only when its newest object is older than
 * staleUploadAge by both: before the listing time minus the age, and before the newest lastModified
 * anywhere in the listing minus the age (the store's own clock as the second witness: a host clock
 * running ahead cannot make a running backup-push's upload look old while the repository is being
 * written to). In a repository nothing else writes to, a killed upload that is the newest thing in
 * it waits for the next WAL or backup before it goes.
 */
function staleSince(repo: Repo, ageSeconds: number): Date {
  let newest = Number.NEGATIVE_INFINITY;
  const see = (o: { lastModified: Date }) => {
    if (o.lastModified.getTime() > newest) newest = o.lastModified.getTime();
  };
  for (const d of repo.backupDirs.values()) d.objects.forEach(see);
  for (const t of repo.timelines.values()) [t.segments, t.partials, t.backupLabels].forEach((l) => l.forEach(see));
  [repo.histories.values(), repo.gapMarkers, repo.state, repo.other].forEach((l) => [...l].forEach(see));
  const age = ageSeconds * 1000;
  return new Date(Math.min(repo.listedAt.getTime() - age, newest - age));
}

const sum = (objs: readonly ListedObject[]) => objs.reduce((a, o) => a + o.storedSize, 0);

/**
 * The plan. `histories`: every timeline's parsed history file (a timeline missing here has none, as
 * for PostgreSQL: only backups taken on it can be recovered onto it); the caller reads them all.
 */
export function planRetention(repo: Repo, rules: RetentionRules, locks: LockedObjects = {}, histories: Histories = new Map()): RetentionPlan {
  if (rules.retainFull === undefined && rules.retainDays === undefined) throw new Error('planRetention needs retainFull or retainDays');
  const plan: RetentionPlan = {
    rules,
    segmentSize: segmentSizeOf(repo),
    keep: [],
    deleteBackups: [],
    walCutoff: null,
    wal: [],
    gapMarkers: [],
    incomplete: [],
    incompleteRecent: [],
    staleBefore: staleSince(repo, rules.staleUploadAge),
    rejected: [...repo.rejected].map(([id, e]) => ({ id, reason: e.message })),
    foreign: repo.other,
    locked: [],
    marks: [],
    lockedMarks: null,
    noCompleteBackup: repo.backups.length === 0,
  };
  // Readers take a timeline's newest mark: the others go, unless locked (delete-locks.ts).
  const superseded = supersededMarks(repo.state);
  const lockedMarks = superseded.filter((m) => locks.marks?.has(m.key));
  plan.marks = superseded.filter((m) => !locks.marks?.has(m.key));
  if (lockedMarks.length) plan.lockedMarks = { count: lockedMarks.length, key: lockedMarks[0]!.key, reason: locks.marks!.get(lockedMarks[0]!.key)! };
  const staleBefore = plan.staleBefore.getTime();
  for (const dir of repo.backupDirs.values()) {
    if (dir.hasSentinel || repo.rejected.has(dir.id) || repo.backups.some((b) => b.id === dir.id)) continue;
    const lockedWhy = locks.incomplete?.get(dir.id);
    if (lockedWhy) plan.locked.push({ id: dir.id, reason: lockedWhy });
    else if (dir.newest.getTime() < staleBefore) plan.incomplete.push({ dir, bytes: sum(dir.objects) });
    else plan.incompleteRecent.push(dir);
  }
  if (plan.noCompleteBackup) return plan;

  const backups = repo.backups;
  const lockedBackups = locks.backups ?? new Map<string, string>();
  const segSize = plan.segmentSize;
  const view = timelineView(repo, histories, segSize);
  const kept = chooseKept(repo, rules, lockedBackups, view);
  for (const [id, why] of lockedBackups) if (kept.has(id)) plan.locked.push({ id, reason: why });
  for (const b of backups) {
    const reasons = kept.get(b.id);
    if (reasons) {
      plan.keep.push({ backup: b, reasons });
      continue;
    }
    const sentinel = backupKey(b.id, SENTINEL_OBJECT);
    const objects = repo.backupDirs.get(b.id)?.objects ?? [];
    const keys = [sentinel, ...objects.map((o) => o.key).filter((k) => k !== sentinel)];
    plan.deleteBackups.push({ backup: b, reason: deleteReason(b, backups, kept, rules, view), keys, bytes: sum(objects) });
  }

  // One cutoff for every timeline, the lowest start segment of all kept backups, suffices: recovering
  // a kept backup onto any timeline it can be recovered onto reads, from its start segment on,
  // segments of the timelines on that timeline's path, each numbered at or above that start, so
  // none of them is below the cutoff. So every kept backup stays restorable onto every timeline it
  // could be restored onto before, up to the newest archived WAL; and the rules above chose, for
  // each timeline that matters (the newest; for the day window each one with WAL in it), a kept
  // backup that can be recovered onto it. A per-timeline cutoff could free more of timelines no
  // kept backup needs, at the price of reasoning about paths; the global one only ever keeps more.
  let oldest = plan.keep[0]!.backup;
  for (const k of plan.keep) {
    if (segmentNumber(k.backup.startSegment, segSize) < segmentNumber(oldest.startSegment, segSize)) oldest = k.backup;
  }
  let cutoff = segmentNumber(oldest.startSegment, segSize);
  plan.walCutoff = { segment: oldest.startSegment, why: `start of the oldest kept backup ${oldest.id}` };
  if (locks.walFloor !== undefined && locks.walFloor < cutoff) {
    cutoff = locks.walFloor;
    plan.walCutoff = { segment: segmentName(oldest.timeline, cutoff, segSize), why: 'the first WAL segment under Object Lock' };
  }
  const below = (name: string) => segmentNumber(name.slice(0, 24), segSize) < cutoff;
  for (const t of [...repo.timelines.values()].sort((a, b) => a.tli - b.tli)) {
    const files = [...t.segments, ...t.partials, ...t.backupLabels].filter((f) => below(f.name));
    if (files.length === 0) continue;
    files.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    plan.wal.push({
      tli: t.tli,
      first: files[0]!.name.slice(0, 24),
      last: files[files.length - 1]!.name.slice(0, 24),
      segments: files.filter((f) => f.kind === 'segment').length,
      partials: files.filter((f) => f.kind === 'partial').length,
      backupLabels: files.filter((f) => f.kind === 'backup').length,
      bytes: sum(files),
      files,
    });
  }
  plan.gapMarkers = repo.gapMarkers.filter((g) => below(g.name));
  return plan;
}
