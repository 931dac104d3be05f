import type { BackupInfo } from '../backup/backup-info.js';
import { whyNotRecoverable, type HistoryEntry } from '../backup/coverage.js';
import type { Inventory } from './inventory.js';

// The timelines retention looks at: after a PITR, a backup taken on the abandoned branch after the
// fork cannot be recovered onto the new timeline (PostgreSQL refuses a timeline that branched off
// before the backup's end), so it protects nothing there.

/** Each timeline's ancestors, parsed from wal/<TLI>.history; a timeline without one has none. */
export type Histories = ReadonlyMap<number, HistoryEntry[]>;

type Repo = Pick<Inventory, 'backups' | 'timelines'>;

/** Which timeline is the newest and which backups each timeline can be recovered from. */
export interface TimelineView {
  newest: number;
  /** Why `b` cannot be recovered onto timeline `tli` (coverage.ts timelinePath), or undefined when it can. */
  unusable(b: BackupInfo, tli: number): string | undefined;
}

export function timelineView(repo: Repo, histories: Histories, segSize: number): TimelineView {
  const newest = liveTimeline(repo, histories);
  const memo = new Map<string, string | undefined>();
  return {
    newest,
    unusable(b, tli) {
      const k = `${b.id} ${tli}`;
      if (memo.has(k)) return memo.get(k);
      const why = whyNotRecoverable(b, tli, histories.get(tli) ?? [], segSize);
      memo.set(k, why);
      return why;
    },
  };
}

/**
 * The timeline the cluster archives to now: the one whose WAL was stored last. Not simply the highest
 * number: a promotion that was abandoned (a DR drill that archived into this repository) leaves a
 * higher timeline nobody writes to, and counting fulls for it would keep fewer for the live one.
 * Without WAL: the highest timeline with a history file, else the newest backup's.
 */
function liveTimeline(repo: Repo, histories: Histories): number {
  let live: { tli: number; at: number } | undefined;
  for (const t of repo.timelines.values()) {
    for (const f of [...t.segments, ...t.partials]) {
      const at = f.lastModified.getTime();
      if (!live || at > live.at || (at === live.at && t.tli > live.tli)) live = { tli: t.tli, at };
    }
  }
  if (live) return live.tli;
  const last = repo.backups[repo.backups.length - 1];
  return histories.size ? Math.max(...histories.keys()) : (last?.stopTimeline ?? last?.timeline ?? 1);
}

/** Timelines with WAL archived at or after `from` (points on them fall in the window), and always the newest. */
export function timelinesLiveSince(repo: Repo, from: number, newest: number): number[] {
  const out = new Set([newest]);
  for (const t of repo.timelines.values()) {
    if ([...t.segments, ...t.partials].some((f) => f.lastModified.getTime() >= from)) out.add(t.tli);
  }
  return [...out].sort((a, b) => a - b);
}
