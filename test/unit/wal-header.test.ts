import { describe, expect, it } from 'vitest';
import { checkSegmentMatchesName, parseWalHeader } from '../../src/wal/header.js';
import { fakeSegment } from '../support/wal-fixtures.js';

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
