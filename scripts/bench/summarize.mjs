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
const scale = (s, k) => ({ ...s, med: s.med * k, min: s.min * k, max: s.max * k });
const span = (s, d = 2) => {
  if (!s.of) return '';
  if (!s.n) return `failed (0/${s.of})`;
  const range = s.n > 1 ? ` [${fmt(s.min, d)}-${fmt(s.max, d)}]` : '';
  return `${fmt(s.med, d)}${range}${s.n < s.of ? ` (${s.n}/${s.of} good)` : ''}`;
};

let envText = '';
try {
  envText = readFileSync(join(dir, 'env.txt'), 'utf8');
} catch {
  // no env.txt
}
const segs = Number(/N=(\d+)/.exec(envText)?.[1] ?? 64);
const reps = Number(/REPEAT=(\d+)/.exec(envText)?.[1] ?? NaN);
// CPU is per GiB of WAL archived (segments x 16 MiB, uncompressed), whatever the tool stores.
const gib = (segs * 16) / 1024;

const order = ['walvault', 'walvault-enc', 'pgbackrest-async-lz4', 'pgbackrest-async-none', 'pgbackrest-sync-lz4', 'pgbackrest-sync-none', 'raw', 'floor'];
const present = new Set(rows.filter((r) => r.test !== 'startup').map((r) => r.cfg));
const configs = [...order.filter((c) => present.has(c)), ...[...present].filter((c) => !order.includes(c))];

const node0 = stat('node-e0', 'startup');
const true0 = stat('true0', 'startup');
const fast = stat('wal-push-fast', 'startup');
const fastNode = stat('wal-push-fast-node', 'startup');
const fastNodeRss = stat('wal-push-fast-node', 'startup', 'rss_kib');
const fastRss = stat('wal-push-fast', 'startup', 'rss_kib');
const laRss = stat('wal-push-lookahead', 'startup', 'rss_kib');
const laWall = stat('wal-push-lookahead', 'startup');

const per = Object.fromEntries(
  configs.map((c) => [
    c,
    {
      drain: stat(c, 'drain'),
      restore: stat(c, 'restore'),
      drainCpu: scale(stat(c, 'drain', 'cpu_s'), 1 / gib),
      restoreCpu: scale(stat(c, 'restore', 'cpu_s'), 1 / gib),
      rssMib: stat(c, 'drain', 'rss_mib'),
    },
  ]),
);

const out = [];
out.push('## walvault vs pgBackRest: WAL drain and restore through PostgreSQL, radosgw behind nginx TLS', '');
if (envText) out.push(...envText.trim().split('\n').map((l) => `- ${l}`), '');

out.push(
  `### Every configuration (${segs} segments = ${fmt(gib, 2)} GiB; medians${reps > 1 ? ' [min-max]' : ''} of ${Number.isFinite(reps) ? reps : '?'} run(s))`,
  '',
);
out.push('| config | drain (s) | restore (s) | drain CPU-s/GiB | restore CPU-s/GiB | fast-path wal-push (ms) | peak RSS (MiB) |');
out.push('|---|---|---|---|---|---|---|');
for (const c of configs) {
  const p = per[c];
  let fastCell = '';
  let rssCell = '';
  if (c === 'walvault') {
    fastCell = `${span(scale(fast, 1000), 1)} shell / ${span(scale(fastNode, 1000), 1)} Node (\`/bin/true\`: ${fmt(true0.med * 1000, 1)}, \`node -e 0\`: ${fmt(node0.med * 1000, 1)})`;
    rssCell = `${fmt(fastRss.max / 1024, 1)} shell fast path / ${fmt(fastNodeRss.max / 1024, 1)} Node fast path / ${fmt(laRss.max / 1024, 1)} 9 uploads`;
  } else if (c === 'raw') {
    rssCell = p.rssMib.n ? `${fmt(p.rssMib.max, 1)} (one process)` : '';
  }
  out.push(`| ${c} | ${span(p.drain)} | ${span(p.restore)} | ${span(p.drainCpu)} | ${span(p.restoreCpu)} | ${fastCell} | ${rssCell} |`);
}
out.push('');

// The issue-12 targets, each a ratio in the same run.
const wv = per.walvault;
const lz4 = per['pgbackrest-async-lz4'];
const floor = per.floor;
const verdict = (ok, x) => (Number.isFinite(x) ? (ok ? 'met' : 'not met') : 'n/a');
const targets = [];
if (wv && lz4) {
  const x = lz4.drain.med / wv.drain.med;
  targets.push(['drain: pgBackRest async lz4 / walvault (speed-up)', `${fmt(lz4.drain.med)} s / ${fmt(wv.drain.med)} s = ${fmt(x)}x`, '>= 1.5x', verdict(x >= 1.5, x)]);
}
if (wv && floor) {
  const x = wv.restore.med / floor.restore.med;
  targets.push(['restore: walvault / floor (cp)', `${fmt(wv.restore.med)} s / ${fmt(floor.restore.med)} s = ${fmt(x)}x`, '<= 1.1x', verdict(x <= 1.1, x)]);
}
if (wv && lz4) {
  const x = wv.drainCpu.med / lz4.drainCpu.med;
  targets.push(['drain CPU-s/GiB: walvault / pgBackRest async lz4', `${fmt(wv.drainCpu.med)} / ${fmt(lz4.drainCpu.med)} = ${fmt(x)}x`, '<= 1.0x', verdict(x <= 1, x)]);
}
if (wv) {
  // "A few milliseconds": the shell fast path's own cost, above running /bin/true the same way.
  const x = (fast.med - true0.med) * 1000;
  targets.push(['fast-path wal-push minus `/bin/true` (ms)', `${fmt(fast.med * 1000, 1)} ms - ${fmt(true0.med * 1000, 1)} ms = ${fmt(x, 1)} ms`, '<= 5 ms', verdict(x <= 5, x)]);
  const peak = Math.max(laRss.max, fastRss.max, fastNodeRss.n ? fastNodeRss.max : 0) / 1024;
  targets.push(['walvault peak RSS, one process (MiB)', fmt(peak, 1), '<= 100', verdict(peak <= 100, peak)]);
}
if (targets.length) {
  out.push('### Targets (issue 12)', '', '| target | measured | wanted | |', '|---|---|---|---|');
  for (const t of targets) out.push(`| ${t.join(' | ')} |`);
  out.push('');
}

// What encryption costs: walvault-enc (the walvault config plus a keyring) against walvault, same run.
// The ratio of the medians, and the range of the per-repeat ratios (repeat r of one against repeat r
// of the other: with INTERLEAVE=1 they ran next to each other).
const enc = per['walvault-enc'];
if (wv && enc) {
  const paired = (test, key) => {
    const val = (cfg, r) => rows.find((x) => x.cfg === cfg && x.test === test && x.rep === r && x.v.ok === '1')?.v[key];
    const reps = [...new Set(rows.filter((x) => x.cfg === 'walvault' && x.test === test).map((x) => x.rep))];
    return reps.map((r) => Number(val('walvault-enc', r)) / Number(val('walvault', r))).filter(Number.isFinite);
  };
  const line = (what, encVal, wvVal, d, pairs) => {
    const range = pairs.length > 1 ? ` [${fmt(Math.min(...pairs), 3)}-${fmt(Math.max(...pairs), 3)}]` : '';
    return `| ${what} | ${fmt(wvVal, d)} | ${fmt(encVal, d)} | ${fmt(encVal / wvVal, 3)}x${range} |`;
  };
  const mib = segs * 16;
  const wvStored = stat('walvault', 'drain', 'stored_bytes');
  const encStored = stat('walvault-enc', 'drain', 'stored_bytes');
  out.push('### The cost of encryption (walvault-enc / walvault, same run)', '');
  out.push('| measure | walvault | walvault-enc | walvault-enc / walvault [per-repeat range] |', '|---|---|---|---|');
  out.push(
    line('drain (s)', enc.drain.med, wv.drain.med, 2, paired('drain', 'wall_s')),
    line('drain throughput (MiB/s of WAL)', mib / enc.drain.med, mib / wv.drain.med, 0, paired('drain', 'wall_s').map((x) => 1 / x)),
    line('restore (s)', enc.restore.med, wv.restore.med, 2, paired('restore', 'wall_s')),
    line('restore throughput (MiB/s of WAL)', mib / enc.restore.med, mib / wv.restore.med, 0, paired('restore', 'wall_s').map((x) => 1 / x)),
    line('drain CPU-s/GiB', enc.drainCpu.med, wv.drainCpu.med, 2, paired('drain', 'cpu_s')),
    line('restore CPU-s/GiB', enc.restoreCpu.med, wv.restoreCpu.med, 2, paired('restore', 'cpu_s')),
    line('stored (MiB)', encStored.med / 1048576, wvStored.med / 1048576, 1, paired('drain', 'stored_bytes')),
  );
  const objs = stat('walvault-enc', 'drain', 'objects');
  const sealed = stat('walvault-enc', 'drain', 'encrypted_objects');
  if (objs.n) {
    out.push(
      '',
      `walvault-enc: ${fmt(sealed.min, 0)} of ${fmt(objs.min, 0)} stored objects per drain carry cipher metadata (checked with a HEAD of each); ` +
        `${fmt((encStored.med - wvStored.med) / objs.med, 0)} bytes more per object than walvault (a 32-byte header and a 16-byte tag per 64 KiB frame).`,
    );
  }
  out.push('');
}

out.push(
  'CPU-s/GiB: user+system seconds of every process of the run (PostgreSQL and everything it starts, detached workers included, summed by scripts/bench/cpu-reaper.pl) per GiB of WAL; the `floor` row is PostgreSQL\'s own share plus a plain cp. raw: the one SDK process (GNU time). The store side (nginx, radosgw) is not counted.',
);
if (laWall.n) out.push(`wal-push with look-ahead (its own segment + 8 ready ones, one process): ${fmt(laWall.med, 2)} s, peak RSS ${fmt(laRss.max / 1024, 1)} MiB.`);
if (fast.n) {
  out.push(
    `Start-up (${fast.n} runs each, interleaved, as the postgres user through runuser and GNU time): /bin/true ${span(scale(true0, 1000), 1)} ms; node -e 0 ${span(scale(node0, 1000), 1)} ms; ` +
      `wal-push answered by the shell fast path ${span(scale(fast, 1000), 1)} ms; by Node's fast path (no wrapper) ${span(scale(fastNode, 1000), 1)} ms.`,
  );
}
console.log(out.join('\n'));
