#!/usr/bin/env node
// What client-side encryption (src/crypto/frames.ts) costs on this machine, on one core: MB/s of
// encryptStream and decryptStream over SIZE MiB (default 256) fed in 256 KiB chunks (the size
// readRange reads), next to encryptBuffer/decryptBuffer and, for context, one AES-256-GCM cipher over
// the whole buffer (OpenSSL's own speed, no framing) and SHA-256 (which walvault always pays).
// The fastest of REPEAT runs (default 3) each, for a machine shared with other work.
//   node scripts/bench/crypto.mjs [SIZE_MIB]
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { build } from 'esbuild';

const MiB = 1024 * 1024;
const size = Number(process.argv[2] ?? 256) * MiB;
const repeat = Number(process.env.REPEAT ?? 3);
const CHUNK = 256 * 1024;

const bundle = await build({ entryPoints: ['src/crypto/frames.ts'], bundle: true, format: 'esm', platform: 'node', write: false, logLevel: 'warning' });
const f = await import(`data:text/javascript;base64,${Buffer.from(bundle.outputFiles[0].text).toString('base64')}`);

const key = { id: 'bench', key: randomBytes(32) };
const obj = 'backups/20260101T000000Z/data/000001';
const pool = randomBytes(16 * MiB);
const plain = Buffer.allocUnsafe(size);
for (let o = 0; o < size; o += pool.length) pool.copy(plain, o);

const chunks = (buf) => Readable.from((function* () { for (let o = 0; o < buf.length; o += CHUNK) yield buf.subarray(o, o + CHUNK); })());
const drain = async (src) => { let n = 0; for await (const c of src) n += c.length; return n; };

async function best(name, fn) {
  let fastest = Infinity;
  for (let i = 0; i < repeat; i++) {
    const t0 = process.hrtime.bigint();
    await fn();
    fastest = Math.min(fastest, Number(process.hrtime.bigint() - t0) / 1e9);
  }
  console.log(`${name.padEnd(34)} ${(size / MiB / fastest).toFixed(0).padStart(6)} MiB/s  (${fastest.toFixed(3)} s for ${size / MiB} MiB)`);
}

const stored = f.encryptBuffer(key, obj, plain);
await best('encryptStream', async () => {
  let n = 0;
  await pipeline(chunks(plain), f.encryptStream(key, obj), async (s) => { n = await drain(s); });
  if (n !== stored.length) throw new Error(`encryptStream gave ${n} bytes`);
});
await best('decryptStream', async () => {
  let n = 0;
  await pipeline(chunks(stored), f.decryptStream(key, obj, 'bench'), async (s) => { n = await drain(s); });
  if (n !== size) throw new Error(`decryptStream gave ${n} bytes`);
});
await best('encryptBuffer', () => f.encryptBuffer(key, obj, plain));
await best('decryptBuffer', () => f.decryptBuffer(key, obj, stored, 'bench'));
await best('one AES-256-GCM cipher (no frames)', () => {
  const c = createCipheriv('aes-256-gcm', key.key, randomBytes(12));
  for (let o = 0; o < size; o += CHUNK) c.update(plain.subarray(o, o + CHUNK));
  c.final();
});
await best('SHA-256 (context)', () => createHash('sha256').update(plain).digest());
