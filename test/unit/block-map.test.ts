import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { BACKUP_ID_GRAMMAR, validateBackupInfo, type BackupInfo } from '../../src/backup/backup-info.js';
import { pickReference } from '../../src/backup/reference.js';
import { BlockScanner, CHECKSUM_BYTES, blockMapName, joinExtents, pieceExtents, sliceExtents } from '../../src/backup/block-map.js';
import { dataObjectName, parseFileList, serializeFileList, type FileList } from '../../src/backup/file-list.js';

const BS = 8192;

/** Runs a file through a scanner in 256 KiB chunks, as data-object.ts reads it. */
function scanFile(bytes: Buffer, reference?: { map: Buffer; size: number }) {
  const s = new BlockScanner(BS, reference);
  const parts: Buffer[] = [];
  for (let at = 0; at < bytes.length; at += 256 * 1024) parts.push(...s.scan(bytes.subarray(at, at + 256 * 1024), at));
  return { stored: s.stored, bytes: Buffer.concat(parts), map: s.map(bytes.length) };
}

describe('block maps (incremental backups)', () => {
  it('a full read stores everything and maps every block; a file of one block has no map', () => {
    const file = randomBytes(BS * 40 + 123);
    const full = scanFile(file);
    expect(full.stored).toEqual([{ fileOffset: 0, size: file.length }]);
    expect(full.bytes.equals(file)).toBe(true);
    expect(full.map!.length).toBe(41 * CHECKSUM_BYTES);
    expect(scanFile(randomBytes(BS)).map).toBeUndefined();
    expect(blockMapName(7)).toBe('blocks/000007');
  });

  it('against a reference stores only the changed blocks, and the pieces rebuild the file exactly', () => {
    const before = randomBytes(BS * 100 + 500);
    const ref = scanFile(before);
    const after = Buffer.from(before);
    for (const page of [0, 3, 4, 57, 99]) after[page * BS + 17] = after[page * BS + 17]! ^ 0xff;
    const grown = Buffer.concat([after, randomBytes(BS * 2)]); // the last partial block and 2 new ones
    const inc = scanFile(grown, { map: ref.map!, size: before.length });
    expect(inc.stored).toEqual([
      { fileOffset: 0, size: BS },
      { fileOffset: 3 * BS, size: 2 * BS },
      { fileOffset: 57 * BS, size: BS },
      { fileOffset: 99 * BS, size: grown.length - 99 * BS },
    ]);
    // The reference's bytes sit in two objects (0 and 1); this backup's in object 2 from offset 10.
    const refExtents = [
      { object: 0, offset: 5, size: 30 * BS },
      { object: 1, offset: 0, size: before.length - 30 * BS },
    ];
    const objects = [Buffer.concat([Buffer.alloc(5), before.subarray(0, 30 * BS)]), before.subarray(30 * BS), Buffer.concat([Buffer.alloc(10), inc.bytes])];
    const extents = pieceExtents(grown.length, inc.stored, 2, 10, refExtents);
    const rebuilt = Buffer.concat(extents.map((e) => objects[e.object]!.subarray(e.offset, e.offset + e.size)));
    expect(rebuilt.equals(grown)).toBe(true);
    expect(extents.length).toBeLessThanOrEqual(9);
  });

  it('an unchanged file read again (touched) stores nothing; a shrunk file stores its new last block', () => {
    const before = randomBytes(BS * 10);
    const ref = scanFile(before);
    expect(scanFile(before, { map: ref.map!, size: before.length }).stored).toEqual([]);
    const shrunk = before.subarray(0, BS * 5 + 100);
    expect(scanFile(shrunk, { map: ref.map!, size: before.length }).stored).toEqual([{ fileOffset: 5 * BS, size: 100 }]);
  });

  it('slices and joins extents; a slice past the extents is a RangeError', () => {
    const ex = [
      { object: 0, offset: 100, size: 10 },
      { object: 3, offset: 0, size: 20 },
    ];
    expect(sliceExtents(ex, 5, 15)).toEqual([
      { object: 0, offset: 105, size: 5 },
      { object: 3, offset: 0, size: 5 },
    ]);
    expect(() => sliceExtents(ex, 25, 31)).toThrow(RangeError);
    expect(joinExtents([{ object: 1, offset: 0, size: 4 }, { object: 1, offset: 4, size: 4 }, { object: 2, offset: 8, size: 1 }])).toEqual([
      { object: 1, offset: 0, size: 8 },
      { object: 2, offset: 8, size: 1 },
    ]);
  });
});

const ID = 'base_000000010000000000000002_20261130T060000Z';
const REF = 'base_000000010000000000000001_20261130T050000Z';
const SHA = 'a'.repeat(64);

describe('files.json block map references', () => {
  const list = (): FileList => ({
    format: 2,
    backup: ID,
    type: 'incremental',
    reference: REF,
    blockSize: BS,
    objects: [{ name: dataObjectName(0), backup: REF, size: 3 * BS, sha256: SHA, storedBytes: 20, codec: 'zstd' }],
    entries: [{ type: 'file', path: 'x', mode: 0o600, size: 3 * BS, mtimeMs: 1, sha256: SHA, extents: [{ object: 0, offset: 0, size: 3 * BS }], blocks: { backup: REF, name: 'blocks/000000', offset: 24 } }],
  });
  const parse = (l: unknown) => parseFileList(JSON.stringify(l), ID, 'files.json', BACKUP_ID_GRAMMAR);

  it('round-trips, and refuses a bad block map reference', () => {
    expect(parseFileList(serializeFileList(list()).toString('utf8'), ID, 'files.json', BACKUP_ID_GRAMMAR)).toEqual(list());
    const noSize = { ...list(), blockSize: undefined };
    expect(() => parse(noSize)).toThrow(/needs "blockSize"/);
    const badName = list();
    (badName.entries[0] as { blocks: { name: string } }).blocks.name = '../data/000000';
    expect(() => parse(badName)).toThrow(/blocks\.name must be blocks\/<digits>/);
    expect(() => parse({ ...list(), blockSize: 100 })).toThrow(/"blockSize" must be an integer from 512/);
  });
});

describe('backup.json type and reference', () => {
  const info = (extra: Record<string, unknown>) => ({
    format: 2, method: 'files', id: ID, label: 'l', startTime: '2026-11-30T06:00:00Z', stopTime: '2026-11-30T06:01:00Z',
    startLsn: '0/2000028', stopLsn: '0/2000100', checkpointLsn: '0/2000060', timeline: 1, stopTimeline: 1,
    startSegment: '000000010000000000000002', stopSegment: '000000010000000000000002', walSegmentSize: 16777216,
    sizeBytes: 1, sha256: SHA, storedBytes: 1, codec: 'zstd', fileCount: 1, filesBytes: 1, manifestSha256: SHA,
    pgVersion: 15, systemIdentifier: '123', backupFrom: 'primary', serverStartTime: 'x', walvaultVersion: '1', ...extra,
  });

  it('accepts full (or none) and incremental with a reference; refuses the rest', () => {
    expect(validateBackupInfo(info({}), 'b').type).toBeUndefined();
    expect(validateBackupInfo(info({ type: 'full' }), 'b').type).toBe('full');
    expect(validateBackupInfo(info({ type: 'incremental', reference: REF }), 'b').reference).toBe(REF);
    expect(() => validateBackupInfo(info({ type: 'incremental' }), 'b')).toThrow(/"reference" must name the backup/);
    expect(() => validateBackupInfo(info({ type: 'incremental', reference: ID }), 'b')).toThrow(/"reference" must name another backup/);
    expect(() => validateBackupInfo(info({ type: 'full', reference: REF }), 'b')).toThrow(/"reference" belongs to incremental/);
    expect(() => validateBackupInfo(info({ type: 'delta' }), 'b')).toThrow(/"type" must be full or incremental/);
    expect(() => validateBackupInfo(info({ format: 1, method: undefined, type: 'incremental', reference: REF }), 'b')).toThrow(/"type" must be full for format 1/);
  });
});

describe('the reference of --incremental', () => {
  const MiB = 1024 * 1024;
  const b = (id: string, over: Partial<BackupInfo>): BackupInfo =>
    ({ id, format: 2, method: 'files', systemIdentifier: '42', timeline: 1, stopTimeline: 1, checkpointLsn: '0/3000060', stopLsn: '0/3000100', ...over }) as BackupInfo;
  const cluster = (timeline: number) => ({ systemIdentifier: '42', timeline, segSize: 16 * MiB });

  it('is the newest format-2 backup of the same system on the current timeline', () => {
    const all = [b(REF, {}), b(ID, {}), b('base_000000010000000000000009_20261130T070000Z', { systemIdentifier: '43' }), b('base_00000001000000000000000A_20261130T080000Z', { format: 1, method: undefined })];
    expect(pickReference(all, cluster(1), [])?.id).toBe(ID);
    expect(pickReference([], cluster(1), [])).toBeUndefined();
  });

  it('on an ancestor timeline only if the current timeline branched off after the backup ended', () => {
    const older = b(REF, { checkpointLsn: '0/1000060', stopLsn: '0/1000100' });
    const newer = b(ID, { checkpointLsn: '0/5000060', stopLsn: '0/5000100' });
    // Timeline 2 left timeline 1 at 0/4000000: the newer backup on 1 is not in timeline 2's past.
    expect(pickReference([older, newer], cluster(2), [{ tli: 1, switchLsn: '0/4000000' }])?.id).toBe(REF);
    // A backup on a timeline that is not an ancestor (a sibling) is never a reference.
    expect(pickReference([b(ID, { timeline: 3, stopTimeline: 3 })], cluster(2), [{ tli: 1, switchLsn: '0/4000000' }])).toBeUndefined();
  });
});
