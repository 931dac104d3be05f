import { localFileError } from '../common/errors.js';
import { segmentNumber } from './names.js';

// XLogLongPageHeaderData (src/include/access/xlog_internal.h), little-endian on every platform
// PostgreSQL ships for that matters here:
//   0 uint16 xlp_magic | 2 uint16 xlp_info | 4 uint32 xlp_tli | 8 uint64 xlp_pageaddr
//  16 uint32 xlp_rem_len | 20 pad | 24 uint64 xlp_sysid | 32 uint32 xlp_seg_size | 36 uint32 xlp_xlog_blcksz
export const LONG_HEADER_SIZE = 40;
const XLP_LONG_HEADER = 0x0002;

/** XLOG_PAGE_MAGIC per major version: the magic changes whenever the WAL format does. */
const MAGIC_TO_VERSION: Record<number, number> = {
  0xd097: 10,
  0xd098: 11,
  0xd101: 12,
  0xd106: 13,
  0xd10d: 14,
  0xd110: 15,
  0xd113: 16,
  0xd116: 17,
  0xd118: 18,
};

export interface WalHeader {
  magic: number;
  /** PostgreSQL major version derived from the magic; undefined for an unknown (newer) magic. */
  pgVersion?: number;
  timeline: number;
  pageAddr: bigint;
  systemIdentifier: string;
  segmentSize: number;
  blockSize: number;
}

export function isValidSegmentSize(size: number): boolean {
  return size >= 1 << 20 && size <= 1 << 30 && (size & (size - 1)) === 0;
}

/** Parses and sanity-checks the long page header at the start of a WAL segment. */
export function parseWalHeader(buf: Buffer, what: string): WalHeader {
  if (buf.length < LONG_HEADER_SIZE) {
    throw localFileError(`${what} is not a WAL segment: ${buf.length} bytes is shorter than a WAL page header`);
  }
  const magic = buf.readUInt16LE(0);
  const info = buf.readUInt16LE(2);
  if ((info & XLP_LONG_HEADER) === 0 || (magic & 0xf000) !== 0xd000) {
    throw localFileError(`${what} is not a WAL segment: no long page header (magic 0x${magic.toString(16)})`);
  }
  const segmentSize = buf.readUInt32LE(32);
  const blockSize = buf.readUInt32LE(36);
  if (!isValidSegmentSize(segmentSize) || blockSize < 1024 || blockSize > 65536) {
    throw localFileError(`${what} is not a WAL segment: implausible segment size ${segmentSize} / block size ${blockSize}`);
  }
  return {
    magic,
    pgVersion: MAGIC_TO_VERSION[magic],
    timeline: buf.readUInt32LE(4),
    pageAddr: buf.readBigUInt64LE(8),
    systemIdentifier: buf.readBigUInt64LE(24).toString(),
    segmentSize,
    blockSize,
  };
}

/**
 * Checks that a complete segment file is what its name says: the right size for its header and the
 * page address its name implies. `.partial` files are full-size too (PostgreSQL copies the segment).
 */
export function checkSegmentMatchesName(h: WalHeader, segment: string, fileSize: number, what: string): void {
  if (fileSize !== h.segmentSize) {
    throw localFileError(`${what} is truncated or padded: ${fileSize} bytes, but its header says segments are ${h.segmentSize} bytes`);
  }
  const expected = segmentNumber(segment, h.segmentSize) * BigInt(h.segmentSize);
  if (h.pageAddr !== expected) {
    throw localFileError(
      `${what} does not hold segment ${segment}: its first page is at 0x${h.pageAddr.toString(16)}, expected 0x${expected.toString(16)}`,
    );
  }
}
