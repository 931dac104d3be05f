import { retryPolicy, type Config } from '../common/config.js';
import { corruptObjectError, describe as describeError, type WalvaultError } from '../common/errors.js';
import { escapeControl } from '../common/control-chars.js';
import { log } from '../common/log.js';
import { Deadline, withRetry } from '../common/retry.js';
import { BACKUPS_PREFIX } from '../backup/catalog.js';
import type { BackupInfo } from '../backup/backup-info.js';
import type { DeleteFailure, Storage } from '../storage/types.js';
import { hex8 } from '../wal/names.js';
import { readHistories } from './continuity.js';
import { takeInventory, type Inventory } from './inventory.js';
import { findLocks } from './delete-locks.js';
import { planRetention, type DoomedBackup, type RetentionPlan, type RetentionRules } from './retention.js';

// Carries out a retention plan in an order that leaves a consistent repository at every step, so an
// interrupted run (SIGKILL, store down) leaves nothing a restore would trip over, and the next run
// finishes it: each backup's backup.json goes first (it leaves backup-list and backup-fetch), then its
// data; an incremental goes before the backup it is built on; then left-over incomplete uploads; then
// WAL oldest first (what remains is always a suffix); gap markers, then superseded high-water marks, last. A refused key stops the run
// before anything that could depend on it.

export interface DeleteOutcome {
  plan: RetentionPlan;
  confirmed: boolean;
  deleted: { backups: string[]; incomplete: string[]; walFiles: number; gapMarkers: number; marks: number; objects: number; bytes: number };
  abortedUploads: number;
  failures: Array<{ key: string; error: WalvaultError }>;
}

export async function runDelete(storage: Storage, config: Config, rules: RetentionRules, confirm: boolean): Promise<DeleteOutcome> {
  const policy = retryPolicy(config);
  const deadline = new Deadline(config.deadline * 1000);
  let plan: RetentionPlan;
  try {
    const inv = await takeInventory(storage, { policy, deadline });
    // Which backups a timeline can be recovered from is in its history file: with one unreadable or
    // missing (walvault never deletes them), a backup that timeline still needs could look
    // unneeded, so nothing is decided. Unless the repository only ever held one timeline (a
    // cluster already on timeline N when it was set up archived N.history elsewhere): a backup
    // recovered onto its own timeline needs no history.
    const problems: string[] = [];
    const histories = await readHistories(storage, inv, { policy, deadline }, problems);
    for (const t of inv.timelines.values()) {
      if (t.tli > 1 && !inv.histories.has(t.tli)) problems.push(`timeline ${t.tli} has archived WAL but no history file wal/${hex8(t.tli)}.history`);
    }
    if (problems.length && timelinesHeld(inv).size <= 1) {
      log.warn(escapeControl(`${problems.join('; ')}: the repository holds one timeline only, so retention does not need it (walvault verify names it)`));
    } else if (problems.length) {
      throw corruptObjectError(`${problems.join('; ')}: delete cannot tell which backups that timeline needs and deletes nothing; restore or repair it (walvault verify names it)`);
    }
    plan = planRetention(inv, rules, {}, histories);
    const lockOn = await withRetry('ask whether the bucket has S3 Object Lock', policy, deadline, (signal) => storage.objectLockEnabled({ signal }));
    if (lockOn) {
      log.info('the bucket has S3 Object Lock enabled: checking every object the plan would delete');
      plan = planRetention(inv, rules, await findLocks(storage, plan, policy, config), histories);
    }
  } finally {
    deadline.dispose();
  }
  const out: DeleteOutcome = {
    plan,
    confirmed: confirm,
    deleted: { backups: [], incomplete: [], walFiles: 0, gapMarkers: 0, marks: 0, objects: 0, bytes: 0 },
    abortedUploads: 0,
    failures: [],
  };
  if (!confirm) return out;

  const remove = async (keys: string[], what: string, bytes: number): Promise<boolean> => {
    const failures = await removeKeys(storage, config, keys, what);
    out.failures.push(...failures);
    out.deleted.objects += keys.length - failures.length;
    if (failures.length === 0) out.deleted.bytes += bytes;
    return failures.length === 0;
  };

  for (const d of chainSafeOrder(plan.deleteBackups)) {
    const [sentinel, ...data] = d.keys;
    if (!(await remove([sentinel!], `remove backup.json of ${d.backup.id}`, 0))) return out;
    if (!(await remove(data, `remove the objects of ${d.backup.id}`, d.bytes))) return out;
    out.deleted.backups.push(d.backup.id);
    log.info(`deleted backup ${d.backup.id} (${d.keys.length} objects): ${d.reason}`);
  }
  for (const i of plan.incomplete) {
    if (!(await remove(i.dir.objects.map((o) => o.key), `remove the incomplete backup ${i.dir.id}`, i.bytes))) return out;
    out.deleted.incomplete.push(i.dir.id);
    log.info(`deleted the incomplete backup ${i.dir.id} (no backup.json, last written ${i.dir.newest.toISOString()})`);
  }
  out.abortedUploads = await abortStale(storage, config, rules, plan.staleBefore);
  // Oldest first across timelines: an interruption leaves the newer part of every timeline.
  const wal = plan.wal.flatMap((w) => w.files).sort((a, b) => {
    const x = a.name.slice(8, 24) + a.name.slice(0, 8);
    const y = b.name.slice(8, 24) + b.name.slice(0, 8);
    return x < y ? -1 : x > y ? 1 : a.name < b.name ? -1 : 1;
  });
  for (let i = 0; i < wal.length; i += 1000) {
    const batch = wal.slice(i, i + 1000);
    const ok = await remove(batch.map((f) => f.key), `remove WAL ${batch[0]!.name}..${batch[batch.length - 1]!.name}`, batch.reduce((a, f) => a + f.storedSize, 0));
    if (!ok) return out;
    out.deleted.walFiles += batch.length;
  }
  if (plan.gapMarkers.length > 0) {
    const gaps = plan.gapMarkers;
    if (!(await remove(gaps.map((g) => g.key), 'remove gap markers', gaps.reduce((a, g) => a + g.storedSize, 0)))) return out;
    out.deleted.gapMarkers = gaps.length;
  }
  // Superseded high-water marks: readers take the newest of each timeline, which stays.
  for (let i = 0; i < plan.marks.length; i += 1000) {
    const batch = plan.marks.slice(i, i + 1000);
    if (!(await remove(batch.map((m) => m.key), 'remove superseded high-water marks', batch.reduce((a, m) => a + m.storedSize, 0)))) return out;
    out.deleted.marks += batch.length;
  }
  return out;
}

/** Chains oldest first; within a chain newest first, so no listed incremental ever misses its reference. */
export function chainSafeOrder(doomed: DoomedBackup[]): DoomedBackup[] {
  const byId = new Map(doomed.map((d) => [d.backup.id, d]));
  const root = (b: BackupInfo): string => {
    let r = b;
    while (r.reference && byId.has(r.reference)) r = byId.get(r.reference)!.backup;
    return r.id;
  };
  const chains = new Map<string, DoomedBackup[]>();
  for (const d of doomed) {
    const r = root(d.backup);
    chains.set(r, [...(chains.get(r) ?? []), d]);
  }
  return [...chains.values()].flatMap((members) => members.reverse());
}

/**
 * Deletes `keys` (one retried call per batch, each with its own deadline: a large repository may
 * take longer than one). Keys refused with a transient answer get one more round; what is still
 * refused is returned and logged, one line per key.
 */
async function removeKeys(storage: Storage, config: Config, keys: string[], what: string): Promise<DeleteFailure[]> {
  if (keys.length === 0) return [];
  let todo = keys;
  let failures: DeleteFailure[] = [];
  for (let round = 0; round < 2 && todo.length > 0; round++) {
    const deadline = new Deadline(config.deadline * 1000);
    try {
      // A failure of the call as a whole (store down, credentials) ends the run with that error.
      failures = await withRetry(what, retryPolicy(config), deadline, (signal) => storage.deleteEach(todo, { signal }));
    } finally {
      deadline.dispose();
    }
    if (!failures.some((f) => f.error.retryable)) break;
    todo = failures.map((f) => f.key);
  }
  for (const f of failures) log.error(escapeControl(`${what}: ${storage.url}/${f.key} was not deleted: ${describeError(f.error)}`));
  return failures;
}

/** Multipart uploads initiated before `olderThan` (the plan's staleBefore: both clocks agree they are old). */
async function abortStale(storage: Storage, config: Config, rules: RetentionRules, olderThan: Date): Promise<number> {
  const deadline = new Deadline(config.deadline * 1000);
  try {
    const n = await withRetry('abort stale backup uploads', retryPolicy(config), deadline, (signal) =>
      storage.abortStaleUploads(BACKUPS_PREFIX, olderThan, { signal }),
    );
    if (n > 0) log.info(`aborted ${n} incomplete multipart upload${n === 1 ? '' : 's'} under ${BACKUPS_PREFIX} older than ${rules.staleUploadAge}s`);
    return n;
  } finally {
    deadline.dispose();
  }
}

/** The timelines the repository holds WAL (segments, .partial, .backup) or a backup on. */
function timelinesHeld(inv: Inventory): Set<number> {
  const held = new Set<number>();
  for (const t of inv.timelines.values()) if (t.segments.length + t.partials.length + t.backupLabels.length > 0) held.add(t.tli);
  for (const b of inv.backups) held.add(b.timeline).add(b.stopTimeline);
  return held;
}
