import { writeFileAtomic } from '../fs/atomic.js';

// node_exporter's textfile collector reads every *.prom file in its directory at each scrape, so the
// file is written whole or not at all: a temp file beside it, then rename (writeFileAtomic).

export interface MetricsInput {
  repository: string;
  now: Date;
  lastSegment?: { time: Date };
  lastBackup?: { time: Date; sizeBytes: number; storedBytes: number };
  windowStart?: Date;
  gaps: number;
  backups: { full: number; incremental: number };
  verify?: { time: Date; ok: boolean };
  archiverFailedCount?: number;
}

const escapeLabel = (v: string): string => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
const seconds = (d: Date): string => String(Math.floor(d.getTime() / 1000));

export function formatMetrics(m: MetricsInput): string {
  const repo = `repository="${escapeLabel(m.repository)}"`;
  const out: string[] = [];
  const metric = (name: string, help: string, samples: Array<[labels: string, value: string]>) => {
    if (!samples.length) return;
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} gauge`);
    for (const [labels, value] of samples) out.push(`${name}{${labels}} ${value}`);
  };
  const age = (d: Date) => String(Math.max(0, Math.floor((m.now.getTime() - d.getTime()) / 1000)));
  const seg = m.lastSegment;
  // No segment label: a label whose value changes with every segment is a new time series each time.
  metric('walvault_last_archived_segment_timestamp_seconds', 'When the newest archived WAL segment was stored.', seg ? [[repo, seconds(seg.time)]] : []);
  metric('walvault_last_archived_age_seconds', 'Seconds since the newest archived WAL segment was stored.', seg ? [[repo, age(seg.time)]] : []);
  const b = m.lastBackup;
  metric('walvault_last_backup_timestamp_seconds', 'When the newest complete backup ended.', b ? [[repo, seconds(b.time)]] : []);
  metric('walvault_last_backup_age_seconds', 'Seconds since the newest complete backup ended.', b ? [[repo, age(b.time)]] : []);
  metric('walvault_last_backup_size_bytes', 'Size of the newest complete backup (files; stored: what the repository holds of it).', b ? [[`${repo},kind="files"`, String(b.sizeBytes)], [`${repo},kind="stored"`, String(b.storedBytes)]] : []);
  metric('walvault_recovery_window_start_timestamp_seconds', 'Earliest restorable point of the newest timeline.', m.windowStart ? [[repo, seconds(m.windowStart)]] : []);
  metric('walvault_wal_gaps', 'Gaps in the archived WAL (missing segment ranges, all timelines).', [[repo, String(m.gaps)]]);
  metric('walvault_backups', 'Complete backups by type.', [
    [`${repo},type="full"`, String(m.backups.full)],
    [`${repo},type="incremental"`, String(m.backups.incremental)],
  ]);
  metric('walvault_verify_last_run_timestamp_seconds', 'When walvault verify last ran on this host.', m.verify ? [[repo, seconds(m.verify.time)]] : []);
  metric('walvault_verify_ok', '1 when the last walvault verify found no problem.', m.verify ? [[repo, m.verify.ok ? '1' : '0']] : []);
  metric('walvault_archiver_failed_count', 'pg_stat_archiver.failed_count of the connected server.', m.archiverFailedCount !== undefined ? [[repo, String(m.archiverFailedCount)]] : []);
  return out.join('\n') + '\n';
}

export async function writeMetricsFile(file: string, text: string): Promise<void> {
  // node_exporter usually runs as another user: world-readable, like the textfile examples.
  await writeFileAtomic(file, Buffer.from(text), { fileMode: 0o644 });
}
