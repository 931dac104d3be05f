import type { Config } from '../common/config.js';
import { Deadline, withRetry, type RetryPolicy } from '../common/retry.js';
import type { Storage } from '../storage/types.js';
import { segmentNumber } from '../wal/names.js';
import type { LockedObjects, RetentionPlan } from './retention.js';

// On a bucket with S3 Object Lock, a delete of a locked object fails (or only hides it behind a
// delete marker). Rather than fail half-way, every object the plan would delete is asked first: a
// backup with a locked object is kept whole, an incomplete directory left alone, and WAL kept from
// the first locked segment on (so the WAL that remains is still one unbroken suffix).

const PARALLEL = 8;

/** The lock reason of each key that has one (HEADs, a few at a time, each retried). */
async function locksOf(storage: Storage, keys: string[], policy: RetryPolicy, config: Config): Promise<Map<string, string>> {
  const found = new Map<string, string>();
  const deadline = new Deadline(config.deadline * 1000);
  try {
    let next = 0;
    const worker = async () => {
      while (next < keys.length) {
        const key = keys[next++]!;
        const why = await withRetry(`check the Object Lock of ${key}`, policy, deadline, (signal) => storage.objectLock(key, { signal }));
        if (why) found.set(key, why);
      }
    };
    await Promise.all(Array.from({ length: Math.min(PARALLEL, keys.length) }, worker));
  } finally {
    deadline.dispose();
  }
  return found;
}

export async function findLocks(storage: Storage, plan: RetentionPlan, policy: RetryPolicy, config: Config): Promise<LockedObjects> {
  const backups = new Map<string, string>();
  for (const d of plan.deleteBackups) {
    const locked = await locksOf(storage, d.keys, policy, config);
    const first = [...locked][0];
    if (first) backups.set(d.backup.id, `${first[0]}: ${first[1]}${locked.size > 1 ? ` (and ${locked.size - 1} more objects)` : ''}`);
  }
  const incomplete = new Map<string, string>();
  for (const i of plan.incomplete) {
    const locked = await locksOf(storage, i.dir.objects.map((o) => o.key), policy, config);
    const first = [...locked][0];
    if (first) incomplete.set(i.dir.id, `${first[0]}: ${first[1]}`);
  }
  // Oldest first, in chunks: the first chunk with a locked file decides, nothing above it is asked.
  const wal = plan.wal.flatMap((w) => w.files).map((f) => ({ key: f.key, segno: segmentNumber(f.name.slice(0, 24), plan.segmentSize) }));
  wal.sort((a, b) => (a.segno < b.segno ? -1 : a.segno > b.segno ? 1 : 0));
  let walFloor: bigint | undefined;
  for (let i = 0; i < wal.length && walFloor === undefined; i += PARALLEL * 4) {
    const chunk = wal.slice(i, i + PARALLEL * 4);
    const locked = await locksOf(storage, chunk.map((c) => c.key), policy, config);
    for (const c of chunk) if (locked.has(c.key) && (walFloor === undefined || c.segno < walFloor)) walFloor = c.segno;
  }
  return { backups, incomplete, ...(walFloor !== undefined ? { walFloor } : {}), marks: await lockedMarks(storage, plan, policy, config) };
}

/**
 * Superseded high-water marks that must stay: per timeline oldest first, in chunks; retention runs
 * from each write, so from the first locked one on every newer mark is kept without being asked.
 */
async function lockedMarks(storage: Storage, plan: RetentionPlan, policy: RetryPolicy, config: Config): Promise<Map<string, string>> {
  const kept = new Map<string, string>();
  const byTimeline = new Map<string, string[]>();
  for (const m of plan.marks) {
    const dir = m.key.slice(0, m.key.lastIndexOf('/'));
    byTimeline.set(dir, [...(byTimeline.get(dir) ?? []), m.key]);
  }
  for (const keys of byTimeline.values()) {
    for (let i = 0; i < keys.length; i += PARALLEL * 4) {
      const chunk = keys.slice(i, i + PARALLEL * 4);
      const locked = await locksOf(storage, chunk, policy, config);
      const first = chunk.findIndex((k) => locked.has(k));
      if (first < 0) continue;
      const reason = `${chunk[first]}: ${locked.get(chunk[first]!)}`;
      for (const k of keys.slice(i + first)) kept.set(k, reason);
      break;
    }
  }
  return kept;
}
