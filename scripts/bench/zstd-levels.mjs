#!/usr/bin/env node
// Which zstd level is the best trade for real WAL on this machine? Given a directory of WAL segments
// (the benchmark's template: $W/template/data/pg_wal after a run of scripts/bench/run.sh), prints per
// level the compression ratio, compress and decompress MB/s on one core, and the CPU-seconds one
// archived GiB costs to compress; SHA-256 (always paid) and, when the `lz4` program is on PATH, lz4 -1
// (pgBackRest's default lz4 level) for context. Node built-ins only; everything runs synchronously on
// the main thread, so MB/s is what one core does.
//   node scripts/bench/zstd-levels.mjs <dir> [levels, comma-separated] [max segments]
//   REPEAT=3 node scripts/bench/zstd-levels.mjs /tmp/walvault-bench/template/data/pg_wal -7,-3,1,2,3,6,9 16
// (the fastest of REPEAT timings each, for a machine shared with other work)
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import zlib from 'node:zlib';

const [dir, levelArg, maxArg] = process.argv.slice(2);
if (!dir) throw new Error('usage: zstd-levels.mjs <dir of WAL segments> [levels] [max segments]');
// Node's zlib takes -1 for "not set" (the default level, 3), so -1 is not a level here.
const levels = (levelArg ?? '-7,-5,-3,-2,1,2,3,4,6,9').split(',').map(Number);
if (levels.includes(-1)) throw new Error('zstd level -1 means "default" (3) to node:zlib: leave it out');
const max = Number(maxArg ?? 16);
const REPEAT = Number(process.env.REPEAT ?? 3);

const names = readdirSync(dir)
  .filter((n) => /^[0-9A-F]{24}$/.test(n) && statSync(join(dir, n)).isFile())
  .sort()
  .slice(0, max);
if (names.length === 0) throw new Error(`no WAL segments in ${dir}`);
const segs = names.map((n) => readFileSync(join(dir, n)));
const raw = segs.reduce((a, b) => a + b.length, 0);
const MB = 1e6;
const GiB = 1024 ** 3;

/** Wall and CPU seconds (user+system of this process) of fn: the fastest of REPEAT runs (a shared machine). */
function timed(fn) {
  let best;
  for (let i = 0; i < REPEAT; i++) {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    const out = fn();
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const c = process.cpuUsage(c0);
    if (!best || wall < best.wall) best = { out, wall, cpu: (c.user + c.system) / 1e6 };
  }
  return best;
}

const rows = [];
const row = (name, stored, comp, decomp) =>
  rows.push({
    codec: name,
    ratio: (raw / stored).toFixed(2),
    'stored MiB': (stored / 1048576).toFixed(1),
    'compress MB/s': comp ? (raw / MB / comp.wall).toFixed(0) : '',
    'decompress MB/s': decomp ? (raw / MB / decomp.wall).toFixed(0) : '',
    'CPU-s/GiB compress': comp ? ((comp.cpu * GiB) / raw).toFixed(2) : '',
    'CPU-s/GiB decompress': decomp ? ((decomp.cpu * GiB) / raw).toFixed(2) : '',
  });

const sha = timed(() => segs.map((s) => createHash('sha256').update(s).digest('hex')));
rows.push({ codec: 'sha256 (every push and fetch)', 'compress MB/s': (raw / MB / sha.wall).toFixed(0), 'CPU-s/GiB compress': ((sha.cpu * GiB) / raw).toFixed(2) });

for (const level of levels) {
  const params = { [zlib.constants.ZSTD_c_compressionLevel]: level };
  zlib.zstdCompressSync(segs[0], { params }); // warm up: first-call allocations
  const comp = timed(() => segs.map((s) => zlib.zstdCompressSync(s, { params })));
  const stored = comp.out.reduce((a, b) => a + b.length, 0);
  const decomp = timed(() => comp.out.map((c) => zlib.zstdDecompressSync(c)));
  decomp.out.forEach((d, i) => {
    if (!d.equals(segs[i])) throw new Error(`level ${level}: ${names[i]} does not round-trip`);
  });
  row(`zstd ${level}`, stored, comp, decomp);
}

const gz = timed(() => segs.map((s) => zlib.gzipSync(s, { level: 1 })));
row('gzip 1', gz.out.reduce((a, b) => a + b.length, 0), gz, timed(() => gz.out.map((c) => zlib.gunzipSync(c))));

// lz4 runs as a program (no lz4 in Node): its wall time includes a process start per segment, its
// CPU time is the children's as the kernel accounts it (/proc/self/stat cutime + cstime).
if (spawnSync('lz4', ['--version']).status === 0) {
  let stored = 0;
  const cpu0 = childCpu();
  const t0 = process.hrtime.bigint();
  for (const n of names) {
    const r = spawnSync('lz4', ['-1', '-c', join(dir, n)], { maxBuffer: 64 * 1048576 });
    if (r.status !== 0) throw new Error(`lz4 failed on ${n}`);
    stored += r.stdout.length;
  }
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  row('lz4 -1 (program, incl. start)', stored, { wall, cpu: childCpu() - cpu0 }, undefined);
}

function childCpu() {
  const f = readFileSync('/proc/self/stat', 'utf8').split(') ')[1].split(' ');
  return (Number(f[13]) + Number(f[14])) / 100; // USER_HZ
}

console.log(`${names.length} segments, ${(raw / 1048576).toFixed(0)} MiB, ${names[0]}..${names[names.length - 1]}, node ${process.version}`);
console.table(rows);
