import { log } from '../common/log.js';
import type { Config } from '../common/config.js';
import type { Deadline, RetryPolicy } from '../common/retry.js';
import type { Storage } from '../storage/types.js';
import type { BackupInfo } from './backup-info.js';
import { listBackups } from './catalog.js';
import { walCoverage, type WalCoverage } from './coverage.js';
import type { RestorePlan } from './file-plan.js';
import { loadRestorePlan } from './restore-files.js';
import { describeTarget, selectBackup, type RecoveryTarget } from './target.js';

// What a restore to a target needs, read before anything is written: the backup (and the earlier
// backups an incremental takes objects from), the WAL range and what of it is missing, and the bytes
// the restore will download. backup-fetch acts on it; backup-fetch --dry-run only shows it.

export interface FetchPlan {
  backup: BackupInfo;
  /** Why this backup was chosen (selectBackup). */
  why: string;
  /** The backup, then its `reference`, transitively (as far as the listing holds them). */
  chain: BackupInfo[];
  wal: WalCoverage;
  /** Format 2: the file list, read and checked. */
  files?: RestorePlan;
  /** Stored (compressed) bytes of every object the restore fetches, and how many objects. */
  downloadBytes: number;
  objects: number;
  fileCount: number;
}

export async function planFetch(
  storage: Storage,
  config: Config,
  req: { which: string; target: RecoveryTarget; timeline: string | undefined; dryRun?: boolean },
  ctx: { policy: RetryPolicy; deadline: Deadline },
): Promise<FetchPlan> {
  const rejected = new Map<string, Error>();
  const backups = await listBackups(storage, ctx.policy, ctx.deadline, rejected);
  const named = rejected.get(req.which);
  if (named) throw named;
  const { backup, why } = selectBackup(backups, req.which, req.target, storage.url);
  log.info(`${req.dryRun ? 'the plan restores' : 'restoring'} backup ${backup.id} (${why}; ended ${backup.stopTime} at ${backup.stopLsn}) to ${describeTarget(req.target)}`);
  const wal = await walCoverage(storage, backup, req.target, req.timeline, ctx);
  if (!wal.problem) {
    log.info(
      `the archive holds all ${wal.segments} WAL segments recovery needs (${wal.firstSegment} - ${wal.lastSegment}` +
        `${wal.path.length > 1 ? `, following timelines ${wal.path.map((p) => p.tli).join(' -> ')}` : ''})`,
    );
  }
  const chain = [backup];
  for (let b = backup; b.reference !== undefined; ) {
    const ref = backups.find((x) => x.id === b.reference);
    if (!ref || chain.includes(ref)) break;
    chain.push(ref);
    b = ref;
  }
  // Format 2: its file list is read and checked (every path, object and size, the backups it uses).
  const files = backup.format === 2 ? await loadRestorePlan(storage, config, backup) : undefined;
  let downloadBytes = backup.storedBytes;
  let objects = 1;
  if (files) {
    const stored = new Map<string, number>();
    for (const o of files.objects) stored.set(o.key, o.object.storedBytes);
    downloadBytes = [...stored.values()].reduce((a, b) => a + b, 0);
    objects = stored.size;
  }
  return { backup, why, chain, wal, ...(files ? { files } : {}), downloadBytes, objects, fileCount: files?.fileCount ?? backup.fileCount };
}

/** The plan's WAL problem (a missing segment) as backup-fetch throws it. */
export function requireWal(plan: FetchPlan): void {
  if (plan.wal.problem) throw plan.wal.problem;
}
