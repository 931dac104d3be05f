import { escapeControl, printableJson } from '../common/control-chars.js';
import { formatBytes } from '../common/log.js';
import { MARK_PAGE } from '../archive/high-water-marks.js';
import type { DeleteOutcome } from './delete-run.js';
import type { RetentionPlan } from './retention.js';

// What `walvault delete` prints: one line per backup (kept or going, and why), WAL per timeline as
// first..last with counts and bytes, then what is only reported. --json gives the same as one document.
// Keys, reasons and answers come from the repository and the store: every text line is printed with
// its control characters escaped, so a foreign key cannot move the cursor or forge a line of a cron
// mail (JSON escapes them itself).

const MAX_FOREIGN_LINES = 20;
const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;
const when = (iso: string) => iso.replace(/\.\d+Z$/, 'Z');

function totals(plan: RetentionPlan) {
  const backupObjects = plan.deleteBackups.reduce((a, d) => a + d.keys.length, 0);
  const incompleteObjects = plan.incomplete.reduce((a, i) => a + i.dir.objects.length, 0);
  const walFiles = plan.wal.reduce((a, w) => a + w.files.length, 0);
  const bytes =
    plan.deleteBackups.reduce((a, d) => a + d.bytes, 0) +
    plan.incomplete.reduce((a, i) => a + i.bytes, 0) +
    plan.wal.reduce((a, w) => a + w.bytes, 0) +
    plan.gapMarkers.reduce((a, g) => a + g.storedSize, 0) +
    plan.marks.reduce((a, m) => a + m.storedSize, 0);
  return {
    backups: plan.deleteBackups.length,
    incomplete: plan.incomplete.length,
    walFiles,
    gapMarkers: plan.gapMarkers.length,
    marks: plan.marks.length,
    objects: backupObjects + incompleteObjects + walFiles + plan.gapMarkers.length + plan.marks.length,
    bytes,
  };
}

function describeRules(plan: RetentionPlan): string {
  const r = plan.rules;
  const parts: string[] = [];
  if (r.retainFull !== undefined) parts.push(`the ${plural(r.retainFull, 'newest full backup')} the newest timeline can be recovered from, with their incrementals`);
  if (r.retainDays !== undefined) parts.push(`backups that ended within ${plural(r.retainDays, 'day')} plus, for each timeline with WAL in them, the newest older one it can be recovered from`);
  return `keep ${parts.join(', and ')}; always the newest backup and every backup a kept incremental is built on`;
}

export function renderText(o: DeleteOutcome, url: string): string {
  const p = o.plan;
  const t = totals(p);
  const lines: string[] = [];
  lines.push(o.confirmed ? `walvault delete ${url}` : `walvault delete ${url}: dry run, nothing is deleted (add --confirm to delete)`);
  lines.push(`rules: ${describeRules(p)}`);
  if (p.noCompleteBackup) lines.push('no complete backup in the repository: nothing is deleted but stale incomplete uploads');
  const rows: Array<[string, string]> = [];
  for (const k of p.keep) rows.push([k.backup.startTime, `keep    ${k.backup.id}  ${(k.backup.type ?? 'full').padEnd(11)}  ended ${when(k.backup.stopTime)}  ${k.reasons.join('; ')}`]);
  for (const d of p.deleteBackups) {
    rows.push([d.backup.startTime, `delete  ${d.backup.id}  ${(d.backup.type ?? 'full').padEnd(11)}  ended ${when(d.backup.stopTime)}  ${formatBytes(d.bytes)}, ${plural(d.keys.length, 'object')}: ${d.reason}`]);
  }
  rows.sort((a, b) => (a[0] < b[0] ? -1 : 1));
  lines.push(...rows.map((r) => r[1]));
  if (p.walCutoff) lines.push(`WAL kept from segment ${p.walCutoff.segment} on (${p.walCutoff.why}), on every timeline; history files always`);
  for (const w of p.wal) {
    const extra = [w.partials ? plural(w.partials, 'partial') : '', w.backupLabels ? plural(w.backupLabels, 'backup label') : ''].filter(Boolean);
    lines.push(`delete  WAL timeline ${w.tli}: ${w.first}..${w.last} (${plural(w.segments, 'segment')}${extra.length ? `, ${extra.join(', ')}` : ''}) ${formatBytes(w.bytes)}`);
  }
  if (p.gapMarkers.length) lines.push(`delete  ${plural(p.gapMarkers.length, 'gap marker')} below the kept WAL: ${p.gapMarkers[0]!.name}..${p.gapMarkers[p.gapMarkers.length - 1]!.name}`);
  if (p.marks.length) lines.push(`delete  ${plural(p.marks.length, 'superseded high-water mark')} (the newest ${MARK_PAGE} of each timeline stay, what readers read)`);
  for (const i of p.incomplete) {
    lines.push(`delete  incomplete backup ${i.dir.id}: no backup.json, last written ${when(i.dir.newest.toISOString())}, ${plural(i.dir.objects.length, 'object')}, ${formatBytes(i.bytes)}`);
  }
  for (const d of p.incompleteRecent) {
    lines.push(`skip    incomplete backup ${d.id}: no backup.json, last written ${when(d.newest.toISOString())}, within backupStaleUploadAge (${p.rules.staleUploadAge}s): a backup-push may still be writing it`);
  }
  for (const l of p.locked) lines.push(`locked  ${l.id}: kept whole, S3 Object Lock on ${l.reason}`);
  if (p.lockedMarks) lines.push(`locked  ${plural(p.lockedMarks.count, 'superseded high-water mark')}: kept, S3 Object Lock on ${p.lockedMarks.reason} (and every newer one of its timeline)`);
  for (const r of p.rejected) lines.push(`damaged ${r.id}: not deleted (remove it by hand once you have looked at it): ${r.reason}`);
  for (const f of p.foreign.slice(0, MAX_FOREIGN_LINES)) lines.push(`foreign ${f.key}: not a key walvault writes, not deleted`);
  if (p.foreign.length > MAX_FOREIGN_LINES) lines.push(`foreign ... and ${p.foreign.length - MAX_FOREIGN_LINES} more keys walvault does not write, not deleted`);
  const summary = `${plural(t.backups, 'backup')}, ${plural(t.walFiles, 'WAL file')}, ${plural(t.gapMarkers, 'gap marker')}, ${plural(t.marks, 'superseded mark')}, ${plural(t.incomplete, 'incomplete backup')}: ${plural(t.objects, 'object')}, ${formatBytes(t.bytes)}`;
  if (!o.confirmed) lines.push(`would delete ${summary}`);
  else {
    const d = o.deleted;
    lines.push(`deleted ${plural(d.backups.length, 'backup')}, ${plural(d.walFiles, 'WAL file')}, ${plural(d.gapMarkers, 'gap marker')}, ${plural(d.marks, 'superseded mark')}, ${plural(d.incomplete.length, 'incomplete backup')}: ${plural(d.objects, 'object')}, ${formatBytes(d.bytes)}; aborted ${plural(o.abortedUploads, 'stale multipart upload')}`);
    if (o.failures.length) lines.push(`NOT finished: ${plural(o.failures.length, 'key')} could not be deleted (listed above); run walvault delete --confirm again once that is fixed`);
  }
  return lines.map(escapeControl).join('\n') + '\n';
}

/**
 * The --json document. JSON.stringify escapes C0 controls but not DEL, C1 or U+2028/2029: those
 * are written as \u escapes too, so no control character of a key reaches the output.
 */
export function renderJson(o: DeleteOutcome, url: string): string {
  return printableJson(toJson(o, url));
}

export function toJson(o: DeleteOutcome, url: string): Record<string, unknown> {
  const p = o.plan;
  const brief = (b: { id: string; type?: string; reference?: string; stopTime: string; timeline: number; startSegment: string }) => ({
    id: b.id,
    type: b.type ?? 'full',
    ...(b.reference ? { reference: b.reference } : {}),
    stopTime: b.stopTime,
    timeline: b.timeline,
    startSegment: b.startSegment,
  });
  return {
    repository: url,
    dryRun: !o.confirmed,
    rules: { ...(p.rules.retainFull !== undefined ? { retainFull: p.rules.retainFull } : {}), ...(p.rules.retainDays !== undefined ? { retainDays: p.rules.retainDays } : {}), now: p.rules.now.toISOString(), staleUploadAge: p.rules.staleUploadAge },
    noCompleteBackup: p.noCompleteBackup,
    keep: p.keep.map((k) => ({ ...brief(k.backup), reasons: k.reasons })),
    delete: {
      backups: p.deleteBackups.map((d) => ({ ...brief(d.backup), objects: d.keys.length, bytes: d.bytes, reason: d.reason })),
      walCutoff: p.walCutoff,
      wal: p.wal.map((w) => ({ timeline: w.tli, first: w.first, last: w.last, segments: w.segments, partials: w.partials, backupLabels: w.backupLabels, bytes: w.bytes })),
      gapMarkers: p.gapMarkers.map((g) => g.name),
      marks: p.marks.map((m) => m.key),
      incomplete: p.incomplete.map((i) => ({ id: i.dir.id, objects: i.dir.objects.length, bytes: i.bytes, lastModified: i.dir.newest.toISOString() })),
    },
    totals: totals(p),
    incompleteRecent: p.incompleteRecent.map((d) => ({ id: d.id, lastModified: d.newest.toISOString() })),
    locked: p.locked,
    lockedMarks: p.lockedMarks,
    damaged: p.rejected,
    foreign: p.foreign.map((f) => ({ key: f.key, bytes: f.storedSize, lastModified: f.lastModified.toISOString() })),
    ...(o.confirmed
      ? {
          result: {
            ...o.deleted,
            abortedUploads: o.abortedUploads,
            complete: o.failures.length === 0,
            failures: o.failures.map((f) => ({ key: f.key, error: f.error.code, reason: f.error.message })),
          },
        }
      : {}),
  };
}
