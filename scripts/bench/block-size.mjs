#!/usr/bin/env node
// Which block size should backup-push --incremental compare? Given two copies of a data directory
// (before and after a change), prints for 8, 16, 32 and 64 KiB blocks the bytes an incremental would
// store (blocks that differ, plus new files and grown tails) next to the bytes of a full backup, and
// the size of the block maps (8 bytes per block). Usage: block-size.mjs <before-dir> <after-dir>
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

const [before, after] = process.argv.slice(2);
if (!before || !after) throw new Error('usage: block-size.mjs <before-dir> <after-dir>');
const sizes = [8, 16, 32, 64].map((k) => k * 1024);

function* files(dir, rel = '') {
  for (const d of readdirSync(join(dir, rel), { withFileTypes: true })) {
    const p = rel ? `${rel}/${d.name}` : d.name;
    if (d.isDirectory()) {
      if (p === 'pg_wal') continue;
      yield* files(dir, p);
    } else if (d.isFile()) yield p;
  }
}

let full = 0;
const stored = new Map(sizes.map((s) => [s, 0]));
const maps = new Map(sizes.map((s) => [s, 0]));
for (const p of files(after)) {
  const b = readFileSync(join(after, p));
  full += b.length;
  let a;
  try {
    a = statSync(join(before, p)).isFile() ? readFileSync(join(before, p)) : undefined;
  } catch {
    a = undefined;
  }
  for (const bs of sizes) {
    if (b.length > bs) maps.set(bs, maps.get(bs) + Math.ceil(b.length / bs) * 8);
    if (a && a.equals(b)) continue;
    for (let at = 0; at < b.length; at += bs) {
      const x = b.subarray(at, at + bs);
      const y = a?.subarray(at, at + bs);
      if (!y || y.length !== x.length || !y.equals(x)) stored.set(bs, stored.get(bs) + x.length);
    }
  }
}
console.log(`full: ${full} bytes`);
for (const bs of sizes) {
  const s = stored.get(bs);
  console.log(`${bs / 1024} KiB blocks: incremental stores ${s} bytes (${((100 * s) / full).toFixed(2)} % of the full), block maps ${maps.get(bs)} bytes`);
}
