import { formatBytes } from '../common/log.js';
import type { DrillReport } from './restore-drill.js';
import { formatSeconds } from './pitr-plan.js';

// restore-test's human output: what was restored, where recovery ended, the checks, and the time of
// each phase (the RTO). --json prints the DrillReport itself.

export function renderDrill(r: DrillReport): string {
  const lines = [r.ok ? 'restore-test: OK' : `restore-test: FAILED (${r.reason ?? 'error'})`];
  const row = (k: string, v: string) => lines.push(`${k.padEnd(12)} ${v}`);
  if (r.backup) row('backup', `${r.backup.id} (${r.backup.type}, format ${r.backup.format}; ended ${r.backup.stopTime} at ${r.backup.stopLsn})`);
  row('target', r.target);
  if (r.wal) {
    const tl = r.wal.timelines.length > 1 ? `timelines ${r.wal.timelines.join(' -> ')}` : `timeline ${r.wal.timelines[0]}`;
    row('WAL', `${r.wal.firstSegment} .. ${r.wal.lastSegment} (${r.wal.segments} segments, ${tl})`);
  }
  if (r.download) row('download', `${formatBytes(r.download.bytes)} in ${r.download.objects} objects, ${r.download.files} files (${formatBytes(r.download.bytesPerSecond)}/s)`);
  if (r.recovery) {
    row('recovered', `to ${r.recovery.replayLsn ?? '?'} (last transaction ${r.recovery.replayTime ?? 'none replayed'}), promoted to timeline ${r.recovery.timeline}`);
  }
  if (r.amcheck) row('pg_amcheck', r.amcheck.ran ? `ok (${r.amcheck.program} ${r.amcheck.args?.join(' ')})` : r.amcheck.note ?? 'skipped');
  if (r.sql) {
    row('sql', `${r.sql.file}: ok${r.sql.columns.length ? `, ${r.sql.rows.length} row${r.sql.rows.length === 1 ? '' : 's'}` : ''}`);
    if (r.sql.columns.length) for (const l of table(r.sql.columns, r.sql.rows.slice(0, 20))) lines.push(`${''.padEnd(14)}${l}`);
    if (r.sql.rows.length > 20) lines.push(`${''.padEnd(14)}... (${r.sql.rows.length - 20} more rows)`);
  }
  const p = r.phases;
  const part = (what: string, s: number | null) => (s === null ? null : `${what} ${formatSeconds(s)}`);
  const parts = [part('restore', p.restore), part('replay', p.replay), part('checks', p.checks)].filter(Boolean);
  row('RTO', `${parts.length ? `${parts.join(' + ')} = ` : ''}total ${formatSeconds(p.total)}`);
  for (const problem of r.problems) row('problem', problem.split('\n').join(`\n${''.padEnd(13)}`));
  if (r.kept && r.directory) row('kept', `${r.directory} (--keep-failed)`);
  return lines.join('\n') + '\n';
}

function table(columns: string[], rows: string[][]): string[] {
  const w = columns.map((c, i) => Math.max(c.length, ...rows.map((r) => (r[i] ?? '').length)));
  const fmt = (cells: string[]) => cells.map((c, i) => c.padEnd(w[i]!)).join(' | ').trimEnd();
  return [fmt(columns), w.map((n) => '-'.repeat(n)).join('-+-'), ...rows.map(fmt)];
}
