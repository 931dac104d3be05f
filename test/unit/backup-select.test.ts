import { describe, expect, it } from 'vitest';
import type { BackupInfo } from '../../src/backup/backup-info.js';
import { makeBackupId, sortBackups } from '../../src/backup/catalog.js';
import { requiredSegments, timelinePath } from '../../src/backup/coverage.js';
import { buildRestoreCommand, confQuote, recoverySettings } from '../../src/backup/recovery-conf.js';
import { parseTarget, parseTargetTime, selectBackup } from '../../src/backup/target.js';
import { loadConfig } from '../../src/common/config.js';

const MiB = 1024 * 1024;

const span = (timeline: number, checkpointLsn: string, stopLsn: string, stopTimeline = timeline) => ({ timeline, checkpointLsn, stopLsn, stopTimeline });

function backup(id: string, startTime: string, stopTime: string, startLsn: string, stopLsn: string): BackupInfo {
  return {
    format: 1,
    id,
    label: '',
    startTime,
    stopTime,
    startLsn,
    stopLsn,
    checkpointLsn: startLsn,
    timeline: 1,
    stopTimeline: 1,
    startSegment: '000000010000000000000002',
    stopSegment: '000000010000000000000002',
    walSegmentSize: MiB,
    sizeBytes: 1,
    sha256: '0'.repeat(64),
    storedBytes: 1,
    codec: 'zstd',
    fileCount: 1,
    filesBytes: 1,
    manifestSha256: '',
    pgVersion: 15,
    systemIdentifier: '1',
    backupFrom: 'primary',
    serverStartTime: '',
    walvaultVersion: 'test',
  };
}

// Names deliberately sort the other way round from their start times.
const older = backup('zzz_older', '2026-11-24T10:00:00.000Z', '2026-11-24T10:05:00.000Z', '0/2000028', '0/2000100');
const newer = backup('aaa_newer', '2026-11-24T12:00:00.000Z', '2026-11-24T12:05:00.000Z', '0/9000028', '0/9000100');
const list = sortBackups([newer, older]);

describe('recovery targets', () => {
  it('normalizes time targets to an absolute UTC timestamp, keeping microseconds', () => {
    expect(parseTargetTime('2026-11-24 13:59:00.123456+02').pg).toBe('2026-11-24 11:59:00.123456+00');
    expect(parseTargetTime('2026-11-24T11:59:00Z').pg).toBe('2026-11-24 11:59:00.000000+00');
    expect(parseTargetTime('2026-11-24 11:59:00 UTC').ms).toBe(Date.parse('2026-11-24T11:59:00Z'));
    expect(parseTargetTime('2026-11-24 06:12:37.640517+00').ms).toBeCloseTo(Date.parse('2026-11-24T06:12:37.640Z') + 0.517, 3);
    expect(parseTargetTime('2026-11-24 14:29:00+02:30').pg).toBe('2026-11-24 11:59:00.000000+00');
    // No zone: the local time of the machine running walvault (TZ), written with an explicit offset.
    const local = parseTargetTime('2026-11-24 13:59:00');
    expect(local.ms).toBe(new Date(2026, 10, 24, 13, 59, 0).getTime());
    expect(() => parseTargetTime('yesterday')).toThrow(/not a timestamp/);
    expect(() => parseTargetTime('2026-13-01 00:00:00Z')).toThrow(/not a date and time that exists/);
  });

  it('trust: --target-time refuses impossible dates', () => {
    for (const t of [
      '2026-02-30 12:00:00Z',
      '2026-02-29 00:00:00+00',
      '2026-04-31',
      '2026-13-01 00:00:00Z',
      '2026-00-10 00:00:00Z',
      '2026-11-24 24:00:00Z',
      '2026-11-24 24:00',
      '2026-11-24 23:60:00Z',
      '2026-11-24 23:59:60Z',
      '2026-11-24 12:00:00+01:75',
    ]) {
      expect(() => parseTargetTime(t), t).toThrow(/--target-time .* (is not a date and time that exists|is not a timestamp)/);
      expect(() => parseTarget({ targetTime: t }), t).toThrow(expect.objectContaining({ exitCode: 2 }));
    }
    // The real edges still pass: leap day, last second of the day, midnight.
    expect(parseTargetTime('2028-02-29 23:59:59Z').pg).toBe('2028-02-29 23:59:59.000000+00');
    expect(parseTargetTime('2026-12-31 00:00:00+00').pg).toBe('2026-12-31 00:00:00.000000+00');
  });

  it('trust: --target-time refuses ambiguous local times', () => {
    // Europe/Berlin 2026: clocks go forward 29 March 02:00 -> 03:00, back 25 October 03:00 -> 02:00.
    const zone = 'Europe/Berlin';
    expect(() => parseTargetTime('2026-10-25 02:30:00', zone)).toThrow(/is ambiguous in Europe\/Berlin .* explicit offset/);
    expect(() => parseTargetTime('2026-03-29 02:30:00', zone)).toThrow(/does not exist in Europe\/Berlin .* explicit offset/);
    // Either side of the changes, and with an explicit offset inside them, it is one instant.
    expect(parseTargetTime('2026-10-25 01:59:59', zone).pg).toBe('2026-10-24 23:59:59.000000+00');
    expect(parseTargetTime('2026-10-25 03:00:00', zone).pg).toBe('2026-10-25 02:00:00.000000+00');
    expect(parseTargetTime('2026-03-29 03:00:00', zone).pg).toBe('2026-03-29 01:00:00.000000+00');
    expect(parseTargetTime('2026-10-25 02:30:00+02', zone).pg).toBe('2026-10-25 00:30:00.000000+00');
    expect(parseTargetTime('2026-10-25 02:30:00+01', zone).pg).toBe('2026-10-25 01:30:00.000000+00');
    expect(parseTargetTime('2026-07-01 12:00:00', zone).pg).toBe('2026-07-01 10:00:00.000000+00');

    // The same through the process's TZ, as `walvault backup-fetch --target-time` reads it.
    const saved = process.env['TZ'];
    try {
      process.env['TZ'] = 'Europe/Berlin';
      expect(new Date(Date.UTC(2026, 6, 1)).getTimezoneOffset()).toBe(-120); // the runtime honours TZ
      for (const t of ['2026-10-25 02:00', '2026-10-25 02:59:59.999999', '2026-03-29 02:15:00']) {
        expect(() => parseTarget({ targetTime: t }), t).toThrow(expect.objectContaining({ exitCode: 2, message: expect.stringMatching(/explicit offset/) }));
      }
      expect(parseTarget({ targetTime: '2026-11-24 13:59:00' })).toMatchObject({ pg: '2026-11-24 12:59:00.000000+00' });
      process.env['TZ'] = 'America/New_York'; // 1 November 2026, 02:00 EDT -> 01:00 EST
      expect(() => parseTargetTime('2026-11-01 01:30:00')).toThrow(/ambiguous in America\/New_York/);
      expect(parseTargetTime('2026-11-01 01:30:00-05').pg).toBe('2026-11-01 06:30:00.000000+00');
    } finally {
      if (saved === undefined) delete process.env['TZ'];
      else process.env['TZ'] = saved;
    }
  });

  it('accepts exactly one target', () => {
    expect(parseTarget({})).toEqual({ kind: 'none' });
    expect(parseTarget({ targetLsn: '0/16b3748' })).toEqual({ kind: 'lsn', lsn: '0/16B3748' });
    expect(parseTarget({ targetXid: '1234' })).toEqual({ kind: 'xid', xid: '1234' });
    expect(parseTarget({ targetName: 'before-drop' })).toEqual({ kind: 'name', name: 'before-drop' });
    expect(parseTarget({ targetImmediate: true })).toEqual({ kind: 'immediate' });
    expect(() => parseTarget({ targetLsn: '0/1', targetXid: '5' })).toThrow(/only one recovery target/);
    expect(() => parseTarget({ targetLsn: 'nope' })).toThrow(/not an LSN/);
    expect(() => parseTarget({ targetXid: 'x' })).toThrow(/not a transaction id/);
  });
});

describe('backup selection', () => {
  it('sorts by recorded start time, not by name', () => {
    expect(list.map((b) => b.id)).toEqual(['zzz_older', 'aaa_newer']);
  });

  it('LATEST without a target, or with a restore point name, is the newest backup', () => {
    expect(selectBackup(list, 'LATEST', { kind: 'none' }, 'repo').backup.id).toBe('aaa_newer');
    expect(selectBackup(list, 'latest', { kind: 'name', name: 'x' }, 'repo').backup.id).toBe('aaa_newer');
  });

  it('an xid target picks the newest backup that started before the transaction id was assigned', () => {
    const withXids = sortBackups([
      { ...older, startNextXid: String((1n << 32n) + 700n) },
      { ...newer, startNextXid: String((1n << 32n) + 900n) },
    ]);
    expect(selectBackup(withXids, 'LATEST', { kind: 'xid', xid: '800' }, 'repo').backup.id).toBe('zzz_older');
    expect(selectBackup(withXids, 'LATEST', { kind: 'xid', xid: '900' }, 'repo').backup.id).toBe('aaa_newer');
    expect(selectBackup(withXids, 'LATEST', { kind: 'xid', xid: String((1n << 32n) + 950n) }, 'repo').backup.id).toBe('aaa_newer');
    expect(() => selectBackup(withXids, 'LATEST', { kind: 'xid', xid: '600' }, 'repo')).toThrow(/oldest backup zzz_older/);
    // Without the recorded xid (older walvault, unknown pg_control layout): the newest.
    expect(selectBackup(list, 'LATEST', { kind: 'xid', xid: '5' }, 'repo').backup.id).toBe('aaa_newer');
  });

  it('a time target between two backups picks the older one; after both, the newer', () => {
    const between = { kind: 'time' as const, input: '', ...parseTargetTime('2026-11-24T11:00:00Z') };
    expect(selectBackup(list, 'LATEST', between, 'repo').backup.id).toBe('zzz_older');
    const after = { kind: 'time' as const, input: '', ...parseTargetTime('2026-11-24T12:05:00Z') };
    expect(selectBackup(list, 'LATEST', after, 'repo').backup.id).toBe('aaa_newer');
    // During the newer backup (started, not yet ended): it cannot be used.
    const during = { kind: 'time' as const, input: '', ...parseTargetTime('2026-11-24T12:01:00Z') };
    expect(selectBackup(list, 'LATEST', during, 'repo').backup.id).toBe('zzz_older');
  });

  it('an LSN target picks the newest backup that stops at or before it', () => {
    expect(selectBackup(list, 'LATEST', { kind: 'lsn', lsn: '0/5000000' }, 'repo').backup.id).toBe('zzz_older');
    expect(selectBackup(list, 'LATEST', { kind: 'lsn', lsn: '0/9000100' }, 'repo').backup.id).toBe('aaa_newer');
  });

  it('refuses a target before the oldest backup, an unknown id, and an id that ends after the target', () => {
    const before = { kind: 'time' as const, input: '', ...parseTargetTime('2026-11-24T09:00:00Z') };
    expect(() => selectBackup(list, 'LATEST', before, 'repo')).toThrow(/before the end of the oldest backup zzz_older/);
    expect(() => selectBackup(list, 'LATEST', { kind: 'lsn', lsn: '0/1000000' }, 'repo')).toThrow(/oldest backup/);
    expect(() => selectBackup(list, 'nope', { kind: 'none' }, 'repo')).toThrow(/backup "nope" is not in repo/);
    const between = { kind: 'time' as const, input: '', ...parseTargetTime('2026-11-24T11:00:00Z') };
    expect(() => selectBackup(list, 'aaa_newer', between, 'repo')).toThrow(/before the end of backup aaa_newer/);
    expect(selectBackup(list, 'zzz_older', between, 'repo').backup.id).toBe('zzz_older');
    expect(() => selectBackup([], 'LATEST', { kind: 'none' }, 'repo')).toThrow(/no complete backup/);
  });

  it('makes sortable ids from the start segment and time', () => {
    expect(makeBackupId('000000010000000000000007', new Date('2026-11-24T06:12:37.123Z'))).toBe('base_000000010000000000000007_20261124T061237Z');
  });
});

describe('WAL coverage plan', () => {
  it('needs every segment from the start to the end on one timeline', () => {
    const path = timelinePath(span(1, '0/200060', '0/300100'), 1, [], MiB);
    expect(requiredSegments(path, 2n, 4n, MiB)).toEqual(['000000010000000000000002', '000000010000000000000003', '000000010000000000000004']);
  });

  it('follows a timeline switch: the switch segment comes from the new timeline', () => {
    const path = timelinePath(span(1, '0/200060', '0/300100'), 2, [{ tli: 1, switchLsn: '0/4000A0' }], MiB);
    expect(requiredSegments(path, 2n, 5n, MiB)).toEqual([
      '000000010000000000000002',
      '000000010000000000000003',
      '000000020000000000000004',
      '000000020000000000000005',
    ]);
  });

  it('refuses a timeline that branched off before the backup started, or does not descend from it', () => {
    expect(() => timelinePath(span(1, '0/500060', '0/600100'), 2, [{ tli: 1, switchLsn: '0/4000A0' }], MiB)).toThrow(/before the backup's checkpoint/);
    expect(() => timelinePath(span(3, '0/500060', '0/600100'), 4, [{ tli: 1, switchLsn: '0/4000A0' }, { tli: 2, switchLsn: '0/6000A0' }], MiB)).toThrow(
      /does not descend/,
    );
  });

  it('trust: coverage checks the timeline switch against the backup end', () => {
    // Backup from 0/200028 (checkpoint 0/200060) to 0/500100 on timeline 1.
    const b = span(1, '0/200060', '0/500100');
    // Timeline 2 forked at 0/4000A0: after the start, before the end. The backup's data files hold
    // timeline 1's changes up to 0/500100, which timeline 2 never had: refused.
    expect(() => timelinePath(b, 2, [{ tli: 1, switchLsn: '0/4000A0' }], MiB)).toThrow(/before the backup ended \(stop LSN 0\/500100\)/);
    // Between the checkpoint and the stop LSN, even in the stop segment itself.
    expect(() => timelinePath(b, 2, [{ tli: 1, switchLsn: '0/5000F8' }], MiB)).toThrow(/before the backup ended/);
    // Through an intermediate timeline: 1 -> 2 at 0/300000 is what breaks it, not 2 -> 3.
    expect(() => timelinePath(b, 3, [{ tli: 1, switchLsn: '0/300000' }, { tli: 2, switchLsn: '0/900000' }], MiB)).toThrow(/branched off timeline 1/);
    // A fork exactly at or after the stop LSN keeps the whole backup.
    expect(timelinePath(b, 2, [{ tli: 1, switchLsn: '0/500100' }], MiB).map((s) => s.tli)).toEqual([1, 2]);
    expect(timelinePath(b, 2, [{ tli: 1, switchLsn: '0/700000' }], MiB).map((s) => s.tli)).toEqual([1, 2]);
    // A backup taken on a standby whose upstream was promoted while it ran starts on 1 and ends on 2:
    // the 1 -> 2 switch between start and stop is its own history, fine on 2 and its descendants...
    const crossing = span(1, '0/200060', '0/500100', 2);
    const h12 = { tli: 1, switchLsn: '0/4000A0' };
    expect(requiredSegments(timelinePath(crossing, 2, [h12], MiB), 2n, 5n, MiB)).toEqual([
      '000000010000000000000002',
      '000000010000000000000003',
      '000000020000000000000004',
      '000000020000000000000005',
    ]);
    expect(timelinePath(crossing, 3, [h12, { tli: 2, switchLsn: '0/600000' }], MiB).map((s) => s.tli)).toEqual([1, 2, 3]);
    // ...but not on timeline 1 (it never reaches the end), nor on a 3 that left 2 before the end.
    expect(() => timelinePath(crossing, 1, [], MiB)).toThrow(/ends on timeline 2/);
    expect(() => timelinePath(crossing, 3, [h12, { tli: 2, switchLsn: '0/500000' }], MiB)).toThrow(/branched off timeline 2 at 0\/500000, before the backup ended/);
    expect(() => timelinePath(crossing, 3, [{ tli: 1, switchLsn: '0/4000A0' }], MiB)).toThrow(/does not pass through timeline 2/);
  });
});

describe('recovery settings', () => {
  it('carries the config file and non-secret settings from flags/env into restore_command, never secrets', () => {
    const loaded = loadConfig(
      { repo: 's3://bucket/pg', config: undefined },
      { AWS_ENDPOINT_URL_S3: 'http://127.0.0.1:7480', AWS_SECRET_ACCESS_KEY: 'sekrit', AWS_ACCESS_KEY_ID: 'AKIA', WALVAULT_SPOOL: '/root/spool' },
    );
    const cmd = buildRestoreCommand(loaded, '/opt/node/bin/node', '/opt/walvault/dist/walvault.mjs');
    expect(cmd).toBe(
      '/opt/node/bin/node /opt/walvault/dist/walvault.mjs --repo=s3://bucket/pg --s3-endpoint=http://127.0.0.1:7480 wal-fetch %f %p',
    );
    expect(cmd).not.toContain('sekrit');
    expect(cmd).not.toContain('spool');
  });

  it('quotes for the shell, escapes % for PostgreSQL, and writes one setting per target', () => {
    const loaded = loadConfig({ repo: 'file:///srv/wal 100%' }, {});
    const cmd = buildRestoreCommand(loaded, '/usr/bin/node', '/opt/it\'s/walvault.mjs');
    expect(cmd).toBe(`/usr/bin/node '/opt/it'\\''s/walvault.mjs' '--repo=file:///srv/wal 100%%' wal-fetch %f %p`);
    expect(confQuote("a'b\\c")).toBe(`'a''b\\\\c'`);
    const time = { kind: 'time' as const, input: '', ...parseTargetTime('2026-11-24T11:59:00Z') };
    expect(recoverySettings(time, { targetAction: 'promote' }, 'current', 'X')).toEqual([
      ['restore_command', 'X'],
      ['recovery_target_time', '2026-11-24 11:59:00.000000+00'],
      ['recovery_target_action', 'promote'],
      ['recovery_target_timeline', 'current'],
    ]);
    expect(recoverySettings({ kind: 'immediate' }, {}, undefined, 'X')).toEqual([
      ['restore_command', 'X'],
      ['recovery_target', 'immediate'],
    ]);
  });
});
