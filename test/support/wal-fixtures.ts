// Synthetic WAL files with a valid long page header: fast to make, and enough for every rule that
// looks at the header (system identifier, segment size, page address vs name).
import { createHash, randomBytes } from 'node:crypto';
import { open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface FakeSegmentOptions {
  segSize?: number;
  segno?: bigint;
  sysid?: bigint;
  magic?: number;
  seed?: number;
}

export function fakeSegment(opts: FakeSegmentOptions = {}): Buffer {
  const segSize = opts.segSize ?? 1024 * 1024;
  const buf = Buffer.alloc(segSize);
  // Part random (so content differs per seed and compression has work), part zeros like real WAL.
  randomBytes(64 * 1024).copy(buf, 4096);
  writeHeader(buf, opts);
  return buf;
}

/** The long page header of a segment (and the seed) into the first 8 KiB of `buf`. */
function writeHeader(buf: Buffer, opts: FakeSegmentOptions): void {
  const segSize = opts.segSize ?? 1024 * 1024;
  buf.writeUInt32LE(opts.seed ?? 0, 8192);
  buf.writeUInt16LE(opts.magic ?? 0xd110, 0);
  buf.writeUInt16LE(0x0007, 2);
  buf.writeUInt32LE(1, 4);
  buf.writeBigUInt64LE((opts.segno ?? 1n) * BigInt(segSize), 8);
  buf.writeBigUInt64LE(opts.sysid ?? 7000000000000000001n, 24);
  buf.writeUInt32LE(segSize, 32);
  buf.writeUInt32LE(8192, 36);
}

/**
 * A large segment (initdb --wal-segsize up to 1 GiB) written 1 MiB at a time, never whole in memory:
 * random bytes throughout (incompressible, the worst case for memory), zeros after the header, or
 * `walLike`: one random eighth in every 64 KiB, which zstd shrinks about as much as pgbench WAL
 * (~8x, a ~2 MiB body for 16 MiB). Returns its path, name and SHA-256.
 */
export async function writeLargeSegment(
  dir: string,
  segno: number,
  opts: FakeSegmentOptions & { segSize: number; fill: 'random' | 'zeros' | 'walLike' },
): Promise<{ path: string; name: string; sha256: string }> {
  const name = segName(segno, 1, opts.segSize);
  const path = join(dir, name);
  const hash = createHash('sha256');
  const fh = await open(path, 'wx', 0o644);
  try {
    const chunk = 1024 * 1024;
    for (let off = 0; off < opts.segSize; off += chunk) {
      const buf = opts.fill === 'random' ? randomBytes(chunk) : Buffer.alloc(chunk);
      if (opts.fill === 'walLike') for (let at = 0; at < chunk; at += 64 * 1024) randomBytes(8 * 1024).copy(buf, at);
      if (off === 0) writeHeader(buf, { ...opts, segno: BigInt(segno) });
      hash.update(buf);
      await fh.write(buf, 0, chunk, off);
    }
  } finally {
    await fh.close();
  }
  return { path, name, sha256: hash.digest('hex') };
}

/** Segment name for timeline 1 and segment number `segno` with 1 MiB segments. */
export function segName(segno: number, tli = 1, segSize = 1024 * 1024): string {
  const per = 0x100000000 / segSize;
  const hex = (n: number) => n.toString(16).toUpperCase().padStart(8, '0');
  return hex(tli) + hex(Math.floor(segno / per)) + hex(segno % per);
}

export async function writeFakeSegment(dir: string, segno: number, opts: FakeSegmentOptions = {}): Promise<{ path: string; name: string; data: Buffer }> {
  const name = segName(segno, 1, opts.segSize);
  const data = fakeSegment({ ...opts, segno: BigInt(segno) });
  const path = join(dir, name);
  await writeFile(path, data);
  return { path, name, data };
}
