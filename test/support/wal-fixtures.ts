// Synthetic WAL files with a valid long page header: fast to make, and enough for every rule that
// looks at the header (system identifier, segment size, page address vs name).
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
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
  buf.writeUInt32LE(opts.seed ?? 0, 8192);
  buf.writeUInt16LE(opts.magic ?? 0xd110, 0);
  buf.writeUInt16LE(0x0007, 2);
  buf.writeUInt32LE(1, 4);
  buf.writeBigUInt64LE((opts.segno ?? 1n) * BigInt(segSize), 8);
  buf.writeBigUInt64LE(opts.sysid ?? 7000000000000000001n, 24);
  buf.writeUInt32LE(segSize, 32);
  buf.writeUInt32LE(8192, 36);
  return buf;
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
