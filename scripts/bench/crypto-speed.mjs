// The CPU cost of walvault's encryption alone, apart from the store and the machine's other load:
// src/crypto/frames.ts (bundled on the fly with esbuild) sealing and opening MIB MiB of random bytes
// (compressed WAL is as incompressible), in one process, against SHA-256 of the same bytes (which
// walvault computes for every object anyway). Reports MiB/s and CPU-seconds per GiB of plaintext
// (process.cpuUsage: user + system of this process), the best of REPEAT runs.
//   node scripts/bench/crypto-speed.mjs            # MIB=256 REPEAT=5
//   MIB=1024 node scripts/bench/crypto-speed.mjs
// Rows: encryptBuffer / decryptBuffer (a whole object in memory), encrypt / decrypt streams (1 MiB
// chunks through the Transform, as WAL and backup files go), encryptReopenable + one open(): the
// S3 upload path of a stream body (one pass for size and MD5, one to send), sha256.
import { build } from 'esbuild';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';

const MIB = Number(process.env.MIB ?? 256);
const REPEAT = Number(process.env.REPEAT ?? 5);
const root = join(dirname(fileURLToPath(import.meta.url)), '../..');
const tmp = mkdtempSync(join(tmpdir(), 'walvault-crypto-speed-'));
let frames;
try {
  await build({ entryPoints: [join(root, 'src/crypto/frames.ts')], outfile: join(tmp, 'frames.mjs'), bundle: true, format: 'esm', platform: 'node', logLevel: 'warning' });
  frames = await import(pathToFileURL(join(tmp, 'frames.mjs')).href);
} finally {
  rmSync(tmp, { recursive: true, force: true });
}

const key = { id: 'bench', key: randomBytes(32) };
const objectKey = 'wal/0000000100000000/000000010000000000000001';
const plain = randomBytes(MIB * 1048576);
const chunks = (buf) => Readable.from((function* () { for (let o = 0; o < buf.length; o += 1048576) yield buf.subarray(o, o + 1048576); })(), { objectMode: false });
const drain = async (readable) => {
  let n = 0;
  for await (const c of readable) n += c.length;
  return n;
};

const sealed = frames.encryptBuffer(key, objectKey, plain);
const cases = {
  encryptBuffer: async () => frames.encryptBuffer(key, objectKey, plain),
  decryptBuffer: async () => frames.decryptBuffer(key, objectKey, sealed, 'bench'),
  'encrypt stream': async () => {
    let n = 0;
    await pipeline(chunks(plain), frames.encryptStream(key, objectKey), async (s) => { n = await drain(s); });
    return n;
  },
  'decrypt stream': async () => {
    let n = 0;
    await pipeline(chunks(sealed), frames.decryptStream(key, objectKey, 'bench'), async (s) => { n = await drain(s); });
    if (n !== plain.length) throw new Error(`decrypted ${n} bytes, not ${plain.length}`);
  },
  'encryptReopenable + open() (S3 stream PUT)': async () => {
    const body = await frames.encryptReopenable(key, objectKey, () => chunks(plain));
    return drain(body.open());
  },
  sha256: async () => createHash('sha256').update(plain).digest(),
};

const out = [`crypto-speed: ${MIB} MiB of random bytes, best of ${REPEAT}, node ${process.version}`, '', '| operation | MiB/s | CPU-s per GiB of plaintext |', '|---|---|---|'];
for (const [name, fn] of Object.entries(cases)) {
  let best = { wall: Infinity, cpu: Infinity };
  for (let r = 0; r < REPEAT; r++) {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    await fn();
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const c = process.cpuUsage(c0);
    const cpu = (c.user + c.system) / 1e6;
    if (wall < best.wall) best = { wall, cpu };
  }
  out.push(`| ${name} | ${(MIB / best.wall).toFixed(0)} | ${((best.cpu * 1024) / MIB).toFixed(3)} |`);
}
console.log(out.join('\n'));
