import { hash } from 'node:crypto';
import type { Extent } from './file-list.js';

// Block maps of format-2 backups (pure): every file above one block has a checksum per block, kept in
// the backup's blocks/<NNNNNN> objects (one per data object, the checksums of that object's files one
// after the other; files.json names where a file's map starts). An incremental backup compares a
// changed file's blocks with its reference's map and stores only the blocks that differ; the others
// become extents naming the reference's bytes.
//
// 8 KiB blocks, PostgreSQL's page: measured with pgbench -s 10 after updating one row on a random 1 %
// of pgbench_accounts' pages (README "Incremental backups"), an incremental stores 1.7 % of the full's
// bytes at 8 KiB, 3.0 % at 16, 5.7 % at 32 and 10.5 % at 64 KiB; the map doubles (0.1 % of the data
// instead of 0.05 %), far less than the bytes saved.
// 8-byte checksums (SHA-256 truncated; SHA-256 is the fastest hash here with SHA-NI): 1 TiB is 134 M
// blocks, 1 GiB of maps; 1 MiB per 1 GiB relation segment, in memory while that file is read. A
// collision (2^-64 per changed block) cannot give a wrong restore silently: the file's whole SHA-256,
// taken from what was really read, is checked at restore.

export const BLOCK_SIZE = 8 * 1024;
export const CHECKSUM_BYTES = 8;
export const BLOCK_MAP_PREFIX = 'blocks/';

/** The key (below backups/<id>/) of the block map that goes with data object number `n`. */
export function blockMapName(n: number): string {
  return `${BLOCK_MAP_PREFIX}${String(n).padStart(6, '0')}`;
}

export function blockCount(size: number, blockSize: number): number {
  return Math.ceil(size / blockSize);
}

/** A file has a map when it is larger than one block (smaller ones are stored whole when changed). */
export function hasBlockMap(size: number, blockSize: number): boolean {
  return size > blockSize;
}

export function blockChecksum(block: Buffer): Buffer {
  return hash('sha256', block, 'buffer').subarray(0, CHECKSUM_BYTES);
}

/** A file's map while it is read, and the byte ranges of the file to store (changed blocks). */
export class BlockScanner {
  /** CHECKSUM_BYTES per block so far, in one growing buffer: a Buffer per block would cost ~100
   * bytes of heap each (131,072 of them per 1 GiB segment file per job), growing with the database. */
  private sums = Buffer.allocUnsafe(0);
  private count = 0;
  /** [fileOffset, size) runs of the file that go into this backup's object, in file order. */
  readonly stored: Array<{ fileOffset: number; size: number }> = [];

  /**
   * `reference`: the reference backup's map of this file and its size then; a block whose bytes
   * have the same length and checksum as the reference's block at the same index is not stored.
   */
  constructor(
    private readonly blockSize: number,
    private readonly reference?: { map: Buffer; size: number },
  ) {}

  /**
   * Feeds `chunk`, read at `fileOffset` (a multiple of the block size, except after the file's
   * last bytes); returns the parts of it to store, in order.
   */
  scan(chunk: Buffer, fileOffset: number): Buffer[] {
    const out: Buffer[] = [];
    const bs = this.blockSize;
    let runStart = -1;
    for (let at = 0; at < chunk.length; at += bs) {
      const block = chunk.subarray(at, Math.min(at + bs, chunk.length));
      const sum = blockChecksum(block);
      this.push(sum);
      const changed = !this.unchanged(this.count - 1, block.length, sum);
      if (changed && runStart < 0) runStart = at;
      if (!changed && runStart >= 0) {
        out.push(this.keep(chunk, runStart, at, fileOffset));
        runStart = -1;
      }
    }
    if (runStart >= 0) out.push(this.keep(chunk, runStart, chunk.length, fileOffset));
    return out;
  }

  /** The map (CHECKSUM_BYTES per block), or none for a file of at most one block. */
  map(size: number): Buffer | undefined {
    return hasBlockMap(size, this.blockSize) ? Buffer.from(this.sums.subarray(0, this.count * CHECKSUM_BYTES)) : undefined;
  }

  private push(sum: Buffer): void {
    const at = this.count * CHECKSUM_BYTES;
    if (at + CHECKSUM_BYTES > this.sums.length) {
      const grown = Buffer.allocUnsafe(Math.max(1024 * CHECKSUM_BYTES, this.sums.length * 2));
      this.sums.copy(grown, 0, 0, at);
      this.sums = grown;
    }
    sum.copy(this.sums, at, 0, CHECKSUM_BYTES);
    this.count++;
  }

  private unchanged(index: number, length: number, sum: Buffer): boolean {
    const ref = this.reference;
    if (!ref) return false;
    const refLength = Math.min(this.blockSize, ref.size - index * this.blockSize);
    if (refLength !== length) return false;
    const at = index * CHECKSUM_BYTES;
    return at + CHECKSUM_BYTES <= ref.map.length && ref.map.compare(sum, 0, CHECKSUM_BYTES, at, at + CHECKSUM_BYTES) === 0;
  }

  private keep(chunk: Buffer, from: number, to: number, fileOffset: number): Buffer {
    const last = this.stored.at(-1);
    if (last && last.fileOffset + last.size === fileOffset + from) last.size += to - from;
    else this.stored.push({ fileOffset: fileOffset + from, size: to - from });
    return chunk.subarray(from, to);
  }
}

/** Bytes [start, end) of a file stored as `extents`: the extents (or parts of them) that hold them. */
export function sliceExtents(extents: readonly Extent[], start: number, end: number): Extent[] {
  const out: Extent[] = [];
  let pos = 0;
  for (const e of extents) {
    const from = Math.max(start, pos);
    const to = Math.min(end, pos + e.size);
    if (from < to) out.push({ object: e.object, offset: e.offset + (from - pos), size: to - from });
    pos += e.size;
    if (pos >= end) break;
  }
  if (out.reduce((a, e) => a + e.size, 0) !== end - start) throw new RangeError(`bytes ${start}-${end} are not all in the extents`);
  return out;
}

/** Extents with neighbours in the same object at adjacent offsets joined. */
export function joinExtents(extents: readonly Extent[]): Extent[] {
  const out: Extent[] = [];
  for (const e of extents) {
    const last = out.at(-1);
    if (last && last.object === e.object && last.offset + last.size === e.offset) last.size += e.size;
    else out.push({ ...e });
  }
  return out;
}

/**
 * A file's extents from what this backup stored (`stored` runs, one after the other from
 * `objectOffset` in `object`) and, between them, the reference's bytes (`reference`, its extents
 * already renumbered into this list's objects).
 */
export function pieceExtents(
  size: number,
  stored: ReadonlyArray<{ fileOffset: number; size: number }>,
  object: number,
  objectOffset: number,
  reference: readonly Extent[],
): Extent[] {
  const out: Extent[] = [];
  let pos = 0;
  let at = objectOffset;
  for (const run of stored) {
    if (run.fileOffset > pos) out.push(...sliceExtents(reference, pos, run.fileOffset));
    out.push({ object, offset: at, size: run.size });
    at += run.size;
    pos = run.fileOffset + run.size;
  }
  if (pos < size) out.push(...sliceExtents(reference, pos, size));
  return joinExtents(out);
}
