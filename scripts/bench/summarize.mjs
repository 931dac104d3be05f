// Turns a scripts/bench/run.sh results directory (raw.tsv + env.txt) into the markdown table.
//   node scripts/bench/summarize.mjs /tmp/walvault-bench/results-<run>
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const dir = process.argv[2];
const rows = readFileSync(join(dir, 'raw.tsv'), 'utf8')
  .split('\n')
  .filter(Boolean)
  .map((l) => {
    const [cfg, test, rep, kv] = l.split('\t');
    const v = Object.fromEntries(kv.split(' ').map((p) => p.split('=')));
    return { cfg, test, rep: Number(rep), v };
  });

const median = (a) => {
  const s = [...a].sort((x, y) => x - y);
  if (!s.length) return NaN;
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
function stat(cfg, test, key = 'wall_s') {
  const all = rows.filter((r) => r.cfg === cfg && r.test === test);
  const vals = all.filter((r) => r.v.ok === '1').map((r) => Number(r.v[key])).filter(Number.isFinite);
  return { med: median(vals), min: Math.min(...vals), max: Math.max(...vals), n: vals.length, of: all.length };
}
const fmt = (x, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
const span = (s, d = 2) => (s.n ? `${fmt(s.med, d)} [${fmt(s.min, d)}-${fmt(s.max, d)}] (${s.n}/${s.of})` : `failed (0/${s.of})`);

const configs = [...new Set(rows.map((r) => r.cfg))];
const tools = configs.filter((c) => c === 'walvault' || c.startsWith('pgbackrest-'));
const pgbr = tools.filter((c) => c.startsWith('pgbackrest-'));
const best = (test) =>
  pgbr.map((c) => ({ c, s: stat(c, test) })).filter((x) => x.s.n).sort((a, b) => a.s.med - b.s.med)[0];

const out = [];
out.push('## walvault vs pgBackRest: WAL drain and restore through PostgreSQL, radosgw behind nginx TLS', '');
try {
  out.push(...readFileSync(join(dir, 'env.txt'), 'utf8').trim().split('\n').map((l) => `- ${l}`), '');
} catch {
  // no env.txt
}

const segs = (() => {
  const m = /N=(\d+)/.exec(readFileSync(join(dir, 'env.txt'), 'utf8'));
  return m ? Number(m[1]) : 64;
})();
const wv = { drain: stat('walvault', 'drain'), restore: stat('walvault', 'restore') };
const raw = { drain: stat('raw', 'drain'), restore: stat('raw', 'restore') };
const node0 = stat('node-e0', 'startup');
const fast = stat('wal-push-fast', 'startup');
const fastRss = stat('wal-push-fast', 'startup', 'rss_kib');
const laRss = stat('wal-push-lookahead', 'startup', 'rss_kib');
const laWall = stat('wal-push-lookahead', 'startup');

out.push('### Summary (medians)', '');
out.push('| measurement | walvault | best pgBackRest | pgBackRest / walvault (speed-up) | walvault / pgBackRest | raw SDK, c=4 | walvault / raw | target | met |');
out.push('|---|---|---|---|---|---|---|---|---|');
for (const test of ['drain', 'restore']) {
  const b = best(test);
  const w = wv[test];
  const speedup = b ? b.s.med / w.med : NaN;
  const target = test === 'drain' ? 1.5 : 2;
  out.push(
    `| ${test === 'drain' ? `drain ${segs} segments (s)` : `PostgreSQL restore of ${segs} segments (s)`} | ${fmt(w.med)} | ${b ? `${fmt(b.s.med)} (${b.c})` : 'n/a'} | ${fmt(speedup)}x | ${fmt(b ? w.med / b.s.med : NaN)} | ${fmt(raw[test].med)} | ${fmt(w.med / raw[test].med)} | >= ${target}x faster | ${speedup >= target ? 'yes' : 'no'} |`,
  );
}
const ratio = fast.med / node0.med;
out.push(
  `| wal-push fast path vs \`node -e 0\` (ms) | ${fmt(fast.med * 1000, 1)} | | | | \`node -e 0\`: ${fmt(node0.med * 1000, 1)} | ${fmt(ratio)} | <= 1.2x node | ${ratio <= 1.2 ? 'yes' : 'no'} |`,
);
const peak = Math.max(laRss.max, fastRss.max) / 1024;
out.push(
  `| wal-push peak RSS (MiB): fast path / 9 uploads | ${fmt(fastRss.max / 1024, 1)} / ${fmt(laRss.max / 1024, 1)} | | | | | | <= 100 MiB | ${peak <= 100 ? 'yes' : 'no'} |`,
);
out.push('');

out.push('### Every configuration (seconds: median [min-max] (good runs/runs))', '');
out.push('| config | drain | restore |', '|---|---|---|');
for (const c of [...tools, 'raw']) out.push(`| ${c} | ${span(stat(c, 'drain'))} | ${span(stat(c, 'restore'))} |`);
out.push('');
out.push(`wal-push with look-ahead (its own segment + 8 ready ones, one process): ${fmt(laWall.med, 2)} s, peak RSS ${fmt(laRss.max / 1024, 1)} MiB.`);
out.push(`Start-up (${fast.n} runs each, interleaved, as the postgres user): node -e 0 ${span({ ...node0, med: node0.med * 1000, min: node0.min * 1000, max: node0.max * 1000 }, 1)} ms; wal-push fast path ${span({ ...fast, med: fast.med * 1000, min: fast.min * 1000, max: fast.max * 1000 }, 1)} ms.`);
console.log(out.join('\n'));
