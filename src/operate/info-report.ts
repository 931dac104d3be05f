import { formatBytes } from '../common/log.js';
import { describeRange } from './continuity.js';
import type { InfoReport } from './info.js';

// info's human-readable report (stdout without --json); the picture is picture.ts.

const when = (iso: string) => iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z');

function age(seconds: number): string {
  if (seconds < 120) return `${seconds} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172_800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86_400).toFixed(1)} days`;
}

export function infoText(r: InfoReport): string {
  const now = Date.parse(r.now);
  const lines = [`repository ${r.repository}`];
  for (const t of r.timelines) {
    const parent = t.parent ? ` (branched off timeline ${t.parent.tli} at ${t.parent.switchLsn})` : '';
    lines.push(`timeline ${t.timeline}${parent}: ${t.segments} segment(s) archived${t.newest ? `, newest ${t.newest.segment} (${when(t.newest.time)})` : ''}`);
    if (t.window) {
      lines.push(`  recovery window: ${when(t.window.start.time)} (LSN ${t.window.start.lsn}, end of ${t.window.start.backup})`);
      lines.push(`                .. ${when(t.window.end.time)} (segment ${t.window.end.segment}, ${age(Math.floor((now - Date.parse(t.window.end.time)) / 1000))} ago)`);
    } else lines.push('  recovery window: none (no backup with unbroken WAL from its start)');
    for (const g of t.gaps) lines.push(`  gap: ${describeRange(g)} missing`);
  }
  for (const m of r.gapMarkers) lines.push(`dropped by maxReadyBytes: WAL from ${m.segment} (${when(m.time)}): no recovery across it`);
  lines.push(r.backups.length ? 'backups:' : 'backups: none');
  for (const b of r.backups) {
    lines.push(`  ${b.id}  ${b.type.padEnd(11)}  tli ${b.timeline}  ${formatBytes(b.sizeBytes)} (stored ${formatBytes(b.storedBytes)})  ended ${when(b.stopTime)}, ${age(b.ageSeconds)} ago`);
  }
  if (r.archiver && 'error' in r.archiver) lines.push(`archiver: unknown (${r.archiver.error})`);
  else if (r.archiver) {
    const a = r.archiver;
    lines.push(
      `archiver: last archived ${a.lastArchivedWal ?? 'nothing'}${a.lastArchivedTime ? ` at ${when(a.lastArchivedTime)}` : ''}; current ${a.currentWal}` +
        `${a.lagSegments !== null ? `, ${a.lagSegments} segment(s) waiting` : ''}; ${a.failedCount} failure(s)` +
        `${a.lastFailedWal ? `, last ${a.lastFailedWal} at ${when(a.lastFailedTime ?? '')}` : ''}`,
    );
  }
  lines.push(r.verify ? `last verify${r.verify.deep ? ' --deep' : ''}: ${when(r.verify.time)}, ${r.verify.ok ? 'ok' : `${r.verify.problems} problem(s)`}` : 'last verify: never (on this host)');
  return lines.join('\n') + '\n';
}
