import { describe, expect, it } from 'vitest';
import { backupHistoryFileName, parseBackupLabel, parsePgTimestamp } from '../../src/backup/label.js';
import { manifestWalSpan, parseBackupManifest } from '../../src/backup/manifest.js';
import { parseHistory } from '../../src/backup/coverage.js';

const LABEL = `START WAL LOCATION: 0/700028 (file 000000010000000000000007)
CHECKPOINT LOCATION: 0/700060
BACKUP METHOD: streamed
BACKUP FROM: primary
START TIME: 2026-11-24 06:12:37 UTC
LABEL: walvault-test
START TIMELINE: 1
`;

const HISTORY_FILE = `START WAL LOCATION: 0/700028 (file 000000010000000000000007)
STOP WAL LOCATION: 0/700100 (file 000000010000000000000007)
CHECKPOINT LOCATION: 0/700060
BACKUP METHOD: streamed
BACKUP FROM: primary
START TIME: 2026-11-24 06:12:37 UTC
LABEL: walvault-test
START TIMELINE: 1
STOP TIME: 2026-11-24 06:12:39 UTC
STOP TIMELINE: 1`;

describe('backup_label', () => {
  it('reads the fields pg_basebackup writes', () => {
    const l = parseBackupLabel(LABEL);
    expect(l).toMatchObject({
      startLsn: '0/700028',
      startSegment: '000000010000000000000007',
      checkpointLsn: '0/700060',
      backupFrom: 'primary',
      label: 'walvault-test',
      startTimeline: 1,
      startTimeText: '2026-11-24 06:12:37 UTC',
    });
    expect(l.startTime?.toISOString()).toBe('2026-11-24T06:12:37.000Z');
    expect(l.stopLsn).toBeUndefined();
  });

  it('reads the stop fields of a backup history file', () => {
    const h = parseBackupLabel(HISTORY_FILE, '000000010000000000000007.00000028.backup');
    expect(h.stopLsn).toBe('0/700100');
    expect(h.stopTime?.toISOString()).toBe('2026-11-24T06:12:39.000Z');
    expect(h.stopTimeline).toBe(1);
  });

  it('refuses text that is not a backup label', () => {
    expect(() => parseBackupLabel('hello\n')).toThrow(/START WAL LOCATION/);
    expect(() => parseBackupLabel(LABEL.replace('0/700028 (file', 'zz (file'))).toThrow(/START WAL LOCATION/);
  });

  it('reads only unambiguous time zones', () => {
    expect(parsePgTimestamp('2026-11-24 06:12:37 UTC')?.toISOString()).toBe('2026-11-24T06:12:37.000Z');
    expect(parsePgTimestamp('2026-11-24 06:12:37 GMT')?.toISOString()).toBe('2026-11-24T06:12:37.000Z');
    expect(parsePgTimestamp('2026-11-24 09:12:37 +03')?.toISOString()).toBe('2026-11-24T06:12:37.000Z');
    expect(parsePgTimestamp('2026-11-24 01:42:37 -0430')?.toISOString()).toBe('2026-11-24T06:12:37.000Z');
    expect(parsePgTimestamp('2026-11-24 07:12:37 CET')).toBeUndefined();
  });

  it('names the backup history file after the start segment and offset', () => {
    expect(backupHistoryFileName('000000010000000000000007', '0/700028', 1024 * 1024)).toBe('000000010000000000000007.00000028.backup');
    expect(backupHistoryFileName('00000002000000010000002A', '1/2A123450', 16 * 1024 * 1024)).toBe('00000002000000010000002A.00123450.backup');
  });
});

describe('backup_manifest', () => {
  const manifest = (ranges: string, files = '') => `{ "PostgreSQL-Backup-Manifest-Version": 1,
"Files": [
{ "Path": "backup_label", "Size": 211, "Last-Modified": "2026-11-24 06:12:37 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "f23bbce4" },
{ "Path": "global/pg_control", "Size": 8192, "Last-Modified": "2026-11-24 06:12:37 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "43872087" }${files}
],
"WAL-Ranges": [
${ranges}
],
"Manifest-Checksum": "f07a78bc152da75e837f14bedac6352b9d998dc534760822310e29271c7ac560"}
`;

  it('reads the WAL range and file totals', () => {
    const m = parseBackupManifest(manifest('{ "Timeline": 1, "Start-LSN": "0/700028", "End-LSN": "0/700100" }'));
    expect(m.fileCount).toBe(2);
    expect(m.filesBytes).toBe(8192 + 211);
    expect(m.tablespaceFiles).toBe(0);
    expect(manifestWalSpan(m)).toEqual({ startLsn: '0/700028', stopLsn: '0/700100', startTimeline: 1, stopTimeline: 1 });
  });

  it('spans a timeline switch during the backup, whatever the order of ranges', () => {
    const m = parseBackupManifest(
      manifest(
        '{ "Timeline": 2, "Start-LSN": "0/9000000", "End-LSN": "0/9000200" },\n{ "Timeline": 1, "Start-LSN": "0/8000028", "End-LSN": "0/9000000" }',
      ),
    );
    expect(manifestWalSpan(m)).toEqual({ startLsn: '0/8000028', stopLsn: '0/9000200', startTimeline: 1, stopTimeline: 2 });
  });

  it('counts tablespace files and refuses malformed manifests', () => {
    const m = parseBackupManifest(
      manifest('{ "Timeline": 1, "Start-LSN": "0/700028", "End-LSN": "0/700100" }', ',\n{ "Path": "pg_tblspc/16384/PG_15_202209061/5/16385", "Size": 0 }'),
    );
    expect(m.tablespaceFiles).toBe(1);
    expect(() => parseBackupManifest('{')).toThrow(/not valid JSON/);
    expect(() => parseBackupManifest('{"PostgreSQL-Backup-Manifest-Version": 1, "Files": []}')).toThrow(/WAL-Ranges/);
    expect(() => parseBackupManifest(manifest(''))).toThrow(/empty WAL-Ranges/);
  });
});

describe('timeline history files', () => {
  it('parses parent timelines and switch points, skipping comments', () => {
    expect(parseHistory('1\t0/3000000\tno recovery target specified\n\n# comment\n2\t0/50000A0\tbefore 2026-11-24 06:19:23+00\n', 3, 'h')).toEqual([
      { tli: 1, switchLsn: '0/3000000' },
      { tli: 2, switchLsn: '0/50000A0' },
    ]);
  });

  it('trust: coverage refuses a malformed history file instead of skipping its lines', () => {
    expect(() => parseHistory('1\t0/3000000\tok\nnot a line\n', 3, 'wal/00000003.history')).toThrow(/wal\/00000003.history is not a timeline history file/);
    expect(() => parseHistory('5\t0/3000000\tok\n', 3, 'h')).toThrow(/cannot be an ancestor/);
  });
});
