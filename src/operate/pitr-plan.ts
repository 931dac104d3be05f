import { printableJson } from '../common/control-chars.js';
import { retryPolicy, type Config } from '../common/config.js';
import { formatBytes } from '../common/log.js';
import { Deadline } from '../common/retry.js';
import { openRepository } from '../archive/repository.js';
import { parseFetchRequest } from '../backup/fetch.js';
import { planFetch, type FetchPlan } from '../backup/fetch-plan.js';
import { readThroughput, type RestoreThroughput } from '../backup/restore-throughput.js';
import { describeTarget, type RecoveryTarget, type TargetFlags } from '../backup/target.js';

// backup-fetch --dry-run: the PITR plan, read like the real run reads it (the same backup choice,
// WAL check and file list) but without writing anything, not even looking at <pgdata>. Exit 0 when
// the restore would go ahead, else the error the real run would stop with (BackupError, 14).

export interface PlanDocument {
  backup: { id: string; format: 1 | 2; type: string; stopTime: string; stopLsn: string; why: string };
  /** The backup, then the backups it takes objects from (incremental), newest first. */
  chain: Array<{ id: string; type: string }>;
  target: string;
  wal: { timelines: number[]; firstSegment: string; lastSegment: string; segments: number; complete: boolean; missing: string[] };
  download: { bytes: number; objects: number; files: number };
  estimate: { seconds: number; bytesPerSecond: number; measuredAt: string; by: string } | null;
  complete: boolean;
  problems: string[];
}

export function planDocument(plan: FetchPlan, target: RecoveryTarget, rate: RestoreThroughput | undefined): PlanDocument {
  const b = plan.backup;
  const typeOf = (x: typeof b) => x.type ?? 'full';
  const problems = plan.wal.problem ? [plan.wal.problem.message] : [];
  return {
    backup: { id: b.id, format: b.format, type: typeOf(b), stopTime: b.stopTime, stopLsn: b.stopLsn, why: plan.why },
    chain: plan.chain.map((x) => ({ id: x.id, type: typeOf(x) })),
    target: describeTarget(target),
    wal: {
      timelines: plan.wal.path.map((p) => p.tli),
      firstSegment: plan.wal.firstSegment,
      lastSegment: plan.wal.lastSegment,
      segments: plan.wal.segments,
      complete: plan.wal.missing.length === 0,
      missing: plan.wal.missing,
    },
    download: { bytes: plan.downloadBytes, objects: plan.objects, files: plan.fileCount },
    estimate: rate
      ? { seconds: Math.round((plan.downloadBytes / rate.bytesPerSecond) * 10) / 10, bytesPerSecond: rate.bytesPerSecond, measuredAt: rate.measuredAt, by: rate.command }
      : null,
    complete: problems.length === 0,
    problems,
  };
}

export function renderPlan(d: PlanDocument): string {
  const lines = [`backup     ${d.backup.id} (${d.backup.type}, format ${d.backup.format}; ${d.backup.why}; ended ${d.backup.stopTime} at ${d.backup.stopLsn})`];
  if (d.chain.length > 1) lines.push(`chain      ${d.chain.map((c) => `${c.id} (${c.type})`).join(' <- ')}`);
  lines.push(`target     ${d.target}`);
  const tl = d.wal.timelines.length > 1 ? `timelines ${d.wal.timelines.join(' -> ')}` : `timeline ${d.wal.timelines[0]}`;
  const shown = d.wal.missing.slice(0, 5).join(', ') + (d.wal.missing.length > 5 ? `, ... (${d.wal.missing.length} in all)` : '');
  lines.push(
    `WAL        ${d.wal.firstSegment} .. ${d.wal.lastSegment} (${d.wal.segments} segments, ${tl}): ` +
      (d.wal.complete ? 'all archived' : `MISSING ${shown}`),
  );
  lines.push(`download   ${formatBytes(d.download.bytes)} (${d.download.bytes} bytes) in ${d.download.objects} objects, ${d.download.files} files`);
  lines.push(
    d.estimate
      ? `estimate   ${formatSeconds(d.estimate.seconds)} at ${formatBytes(d.estimate.bytesPerSecond)}/s (measured by ${d.estimate.by} at ${d.estimate.measuredAt})`
      : 'estimate   unknown (no restore measured yet: backup-fetch or restore-test records the speed)',
  );
  lines.push(d.complete ? 'plan       complete: the restore can go ahead' : `plan       INCOMPLETE: ${d.problems.join('; ')}`);
  return lines.join('\n') + '\n';
}

export function formatSeconds(s: number): string {
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s - m * 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export async function showFetchPlan(config: Config, opts: TargetFlags & { which: string; targetAction?: string; targetTimeline?: string }, json: boolean): Promise<number> {
  const { target, timeline } = parseFetchRequest(opts);
  const storage = await openRepository(config);
  const deadline = new Deadline(config.deadline * 1000);
  let plan: FetchPlan;
  try {
    plan = await planFetch(storage, config, { which: opts.which, target, timeline, dryRun: true }, { policy: retryPolicy(config), deadline });
  } finally {
    deadline.dispose();
    storage.close();
  }
  const doc = planDocument(plan, target, await readThroughput(config));
  process.stdout.write(json ? printableJson(doc) : renderPlan(doc));
  // The same error the real run stops with, on stderr, with its exit code.
  if (plan.wal.problem) throw plan.wal.problem;
  return 0;
}
