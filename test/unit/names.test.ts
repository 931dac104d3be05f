import { describe, expect, it } from 'vitest';
import { ExitCode } from '../../src/common/errors.js';
import { formatLsn, nextSegment, parseLsn, parseWalName, segmentName, segmentNumber, segmentOfEndLsn, segmentOfLsn, walObjectKey } from '../../src/wal/names.js';

describe('parseWalName', () => {
  it.each([
    ['000000010000000000000001', 'segment', 1],
    ['00000002000000A1000000FF', 'segment', 2],
    ['000000010000000000000003.partial', 'partial', 1],
    ['00000002.history', 'history', 2],
    ['000000010000000000000002.00000028.backup', 'backup', 1],
  ])('accepts %s as %s', (name, kind, tli) => {
    const w = parseWalName(name);
    expect(w.kind).toBe(kind);
    expect(w.timeline).toBe(tli);
  });

  it.each([
    '',
    '../x',
    '000000010000000000000001/../../x',
    '00000001000000000000000',
    '0000000100000000000000010',
    '000000010000000000000001.PARTIAL',
    '00000001000000000000000g',
    '000000010000000000000001\n',
    'a'.repeat(65),
    '0'.repeat(24) + '.' + 'history'.padEnd(40, 'y'),
    '/tmp/000000010000000000000001',
  ])('refuses %j with BadWalName', (name) => {
    try {
      parseWalName(name);
      expect.unreachable();
    } catch (e) {
      expect((e as { exitCode: number }).exitCode).toBe(ExitCode.badWalName);
    }
  });
});

describe('keys and segment arithmetic', () => {
  it('shards segments and partials by timeline+log, keeps history/backup flat', () => {
    expect(walObjectKey(parseWalName('00000001000000020000003F'))).toBe('wal/0000000100000002/00000001000000020000003F');
    expect(walObjectKey(parseWalName('00000001000000020000003F.partial'))).toBe('wal/0000000100000002/00000001000000020000003F.partial');
    expect(walObjectKey(parseWalName('00000003.history'))).toBe('wal/00000003.history');
  });

  it('wraps the segment counter at the segment size boundary', () => {
    const MiB16 = 16 * 1024 * 1024;
    expect(nextSegment('0000000100000000000000FF', MiB16)).toBe('000000010000000100000000');
    expect(nextSegment('000000010000000000000FFF', 1024 * 1024)).toBe('000000010000000100000000');
    expect(segmentNumber('000000010000000100000002', MiB16)).toBe(258n);
    expect(segmentName(1, 258n, MiB16)).toBe('000000010000000100000002');
  });

  it('maps LSNs to segments', () => {
    expect(segmentOfLsn('0/3000028', 1, 16 * 1024 * 1024)).toBe('000000010000000000000003');
    expect(segmentOfLsn('1/A0000000', 2, 16 * 1024 * 1024)).toBe('0000000200000001000000A0');
  });

  it('trust: a backup ending exactly on a segment boundary ends in the segment before it', () => {
    const seg = 16 * 1024 * 1024;
    expect(segmentOfEndLsn('0/3000028', 1, seg)).toBe('000000010000000000000003');
    expect(segmentOfEndLsn('0/4000000', 1, seg)).toBe('000000010000000000000003');
    expect(segmentOfEndLsn('1/0', 2, seg)).toBe('0000000200000000000000FF');
    expect(formatLsn(parseLsn('16/B374D848'))).toBe('16/B374D848');
  });
});
