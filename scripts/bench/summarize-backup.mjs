// Turns a scripts/bench/backup.sh results directory (raw.tsv + env.txt) into the markdown table.
//   node scripts/bench/summarize-backup.mjs /tmp/walvault-bench-backup-results-<run>
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const dir = process.argv[2];
const rows = readFileSync(join(dir, 'raw.tsv'), 'utf8')
  .split('\n')
  .filter(Boolean)
  .map((l) => {
    const [label, kind, kv] = l.split('\t');
    const v = Object.fromEntries(kv.split(' ').filter(Boolean).map((p) => p.split('=')));
    return { label, kind, v, ok: v.ok === '1', wall: Number(v.wall_s), rss: Number(v.rss_kib) / 1024, cpu: Number(v.cpu_s), stored: Number(v.stored) };
  });
const by = Object.fromEntries(rows.map((r) => [r.label, r]));
const MiB = 1048576;
const fmt = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
const base = by['baseline'];
const biggest = Math.max(...rows.map((r) => Number(r.v.size)).filter(Number.isFinite));

const out = ['## Base backups: walvault vs pgBackRest, one database, radosgw behind nginx TLS', ''];
out.push(...readFileSync(join(dir, 'env.txt'), 'utf8').trim().split('\n').map((l) => `- ${l}`), '');
out.push('| run | wall (s) | × pg_basebackup | MiB/s of the database | CPU-s | peak RSS (MiB) | stored (MiB) | stored / files |');
out.push('|---|---|---|---|---|---|---|---|');
for (const r of rows) {
  if (r.v.ok === 'NA') {
    out.push(`| ${r.label} | not available in this build | | | | | | |`);
    continue;
  }
  const size = Number(r.v.size);
  out.push(
    `| ${r.label}${r.ok ? '' : ' (FAILED)'} | ${fmt(r.wall)} | ${fmt(r.wall / base.wall)} | ${r.kind === 'incr' ? '' : fmt(biggest / MiB / r.wall, 0)} | ${fmt(r.cpu)} | ${fmt(r.rss, 0)} | ${r.kind === 'restore' ? '' : fmt(r.stored / MiB, 1)} | ${Number.isFinite(size) && size > 0 ? fmt(r.stored / size, 3) : ''} |`,
  );
}
out.push('');

// Targets (issue 10): each line says met or not, with the numbers it compares.
const t = [];
const met = (ok) => (ok ? 'met' : 'NOT met');
const jobsOf = (prefix) => rows.filter((r) => r.label.startsWith(prefix) && r.ok).map((r) => [Number(r.v.jobs), r]);
for (const [j, w] of jobsOf('wv-files-j')) {
  // walvault compresses with zstd: the same codec first, then pgBackRest's fastest (lz4 stores ~2.4x more).
  const z = by[`pgbr-zst-p${j}`];
  const p = ['zst', 'lz4'].map((c) => by[`pgbr-${c}-p${j}`]).filter((r) => r?.ok).sort((a, b) => a.wall - b.wall)[0];
  if (z?.ok) t.push(`- full, ${j} job(s), same codec: walvault ${fmt(w.wall)} s vs pgBackRest ${z.label} ${fmt(z.wall)} s (${fmt(z.wall / w.wall)}×) → ${met(w.wall <= z.wall)}`);
  if (p && p !== z) t.push(`- full, ${j} job(s), any codec: walvault ${fmt(w.wall)} s vs fastest pgBackRest ${p.label} ${fmt(p.wall)} s (${fmt(p.wall / w.wall)}×) → ${met(w.wall <= p.wall)}`);
}
const incr = by['wv-incr'];
if (incr?.ok) {
  const full = by[`wv-files-j${incr.v.jobs}`];
  t.push(`- incremental bytes ≤ 10 % of the full: ${fmt(incr.stored / MiB, 1)} of ${fmt(full.stored / MiB, 1)} MiB = ${fmt((100 * incr.stored) / full.stored, 1)} % → ${met(incr.stored <= 0.1 * full.stored)}`);
  t.push(`- incremental time ≤ 50 % of the full: ${fmt(incr.wall)} of ${fmt(full.wall)} s = ${fmt((100 * incr.wall) / full.wall, 0)} % → ${met(incr.wall <= 0.5 * full.wall)}`);
} else t.push('- incremental: walvault backup-push --incremental not available in this build → not measured');
const pincr = by['pgbr-zst-incr'];
if (pincr?.ok) {
  const pfull = by[`pgbr-zst-p${pincr.v.jobs}`];
  t.push(`- (pgBackRest incremental: ${fmt(pincr.stored / MiB, 1)} MiB = ${fmt((100 * pincr.stored) / pfull.stored, 1)} % of its full, ${fmt(pincr.wall)} s = ${fmt((100 * pincr.wall) / pfull.wall, 0)} % of its time)`);
}
for (const [j, w] of jobsOf('wv-restore-j')) {
  const p = [by[`pgbr-restore-p${j}`], by[`pgbr-restore-p${j}-plain`]].filter((r) => r?.ok).sort((a, b) => a.wall - b.wall)[0];
  if (p) t.push(`- restore, ${j} job(s): walvault ${fmt(w.wall)} s vs fastest pgBackRest ${p.label} ${fmt(p.wall)} s (${fmt(p.wall / w.wall)}×) → ${met(w.wall <= p.wall)}`);
}
const wvRss = rows.filter((r) => r.label.startsWith('wv-') && r.ok);
const peak = wvRss.sort((a, b) => b.rss - a.rss)[0];
if (peak) t.push(`- walvault peak RSS ≤ 256 MiB: highest ${fmt(peak.rss, 0)} MiB (${peak.label}) → ${met(peak.rss <= 256)}`);
out.push('### Targets', '', ...t);

// What encryption costs: each wv-enc row (the same command on the encrypted repository, run right
// after the wv row) against its wv row.
const pairs = rows.filter((r) => r.label.startsWith('wv-enc-') && r.ok && by[r.label.replace(/^wv-enc-/, 'wv-')]?.ok);
if (pairs.length) {
  out.push('', '### The cost of encryption (wv-enc / wv, each pair run back to back)', '');
  out.push('| run | wall (s) wv / wv-enc | MiB/s wv / wv-enc | wv-enc / wv time | CPU-s wv / wv-enc | wv-enc / wv CPU | peak RSS (MiB) wv / wv-enc | stored (MiB) wv / wv-enc |');
  out.push('|---|---|---|---|---|---|---|---|');
  for (const e of pairs) {
    const p = by[e.label.replace(/^wv-enc-/, 'wv-')];
    const rate = e.kind === 'incr' ? '' : `${fmt(biggest / MiB / p.wall, 0)} / ${fmt(biggest / MiB / e.wall, 0)}`;
    const stored = e.kind === 'restore' ? '' : `${fmt(p.stored / MiB, 1)} / ${fmt(e.stored / MiB, 1)}`;
    out.push(`| ${p.label.replace(/^wv-/, '')} | ${fmt(p.wall)} / ${fmt(e.wall)} | ${rate} | ${fmt(e.wall / p.wall, 3)}x | ${fmt(p.cpu)} / ${fmt(e.cpu)} | ${fmt(e.cpu / p.cpu, 3)}x | ${fmt(p.rss, 0)} / ${fmt(e.rss, 0)} | ${stored} |`);
  }
}
console.log(out.join('\n'));
