import { describe, expect, it } from 'vitest';
import { checkSegmentMatchesName, parseWalHeader } from '../../src/wal/header.js';

export function fakeSegment(opts: { segSize?: number; segno?: bigint; sysid?: bigint; magic?: number; fill?: number } = {}): Buffer {
  const segSize = opts.segSize ?? 1024 * 1024;
  const buf = Buffer.alloc(segSize, opts.fill ?? 0);
  buf.writeUInt16LE(opts.magic ?? 0xd110, 0);
  buf.writeUInt16LE(0x0007, 2);
  buf.writeUInt32LE(1, 4);
  buf.writeBigUInt64LE((opts.segno ?? 1n) * BigInt(segSize), 8);
  buf.writeBigUInt64LE(opts.sysid ?? 7000000000000000001n, 24);
  buf.writeUInt32LE(segSize, 32);
  buf.writeUInt32LE(8192, 36);
  return buf;
}

describe('WAL long page header', () => {
  it('reads system identifier, version and segment size', () => {
    const h = parseWalHeader(fakeSegment({ segSize: 2 * 1024 * 1024, sysid: 123456789012345678n }), 'x');
    expect(h.systemIdentifier).toBe('123456789012345678');
    expect(h.pgVersion).toBe(15);
    expect(h.segmentSize).toBe(2 * 1024 * 1024);
  });

  it('refuses non-WAL content, short files and implausible sizes', () => {
    expect(() => parseWalHeader(Buffer.from('hello world, certainly not WAL at all, no sir'), 'x')).toThrow(/not a WAL segment/);
    expect(() => parseWalHeader(Buffer.alloc(10), 'x')).toThrow(/shorter than a WAL page header/);
    const bad = fakeSegment();
    bad.writeUInt32LE(3 * 1024 * 1024, 32);
    expect(() => parseWalHeader(bad, 'x')).toThrow(/implausible segment size/);
  });

  it('checks size and page address against the file name', () => {
    const seg = fakeSegment({ segno: 6n });
    const h = parseWalHeader(seg, 'x');
    expect(() => checkSegmentMatchesName(h, '000000010000000000000006', seg.length, 'x')).not.toThrow();
    expect(() => checkSegmentMatchesName(h, '000000010000000000000007', seg.length, 'x')).toThrow(/does not hold segment/);
    expect(() => checkSegmentMatchesName(h, '000000010000000000000006', seg.length - 1, 'x')).toThrow(/truncated/);
  });
});
