import { describe, expect, it } from 'vitest';
import type { BackupInfo } from '../../src/backup/catalog.js';
import { makeBackupId, sortBackups } from '../../src/backup/catalog.js';
import { requiredSegments, timelinePath } from '../../src/backup/coverage.js';
import { buildRestoreCommand, confQuote, recoverySettings } from '../../src/backup/recovery-conf.js';
import { parseTarget, parseTargetTime, selectBackup } from '../../src/backup/target.js';
import { loadConfig } from '../../src/common/config.js';

const MiB = 1024 * 1024;

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
    expect(() => parseTargetTime('2026-13-01 00:00:00Z')).toThrow(/not a timestamp/);
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
    const path = timelinePath(1, '0/200028', 1, [], MiB);
    expect(requiredSegments(path, 2n, 4n, MiB)).toEqual(['000000010000000000000002', '000000010000000000000003', '000000010000000000000004']);
  });

  it('follows a timeline switch: the switch segment comes from the new timeline', () => {
    const path = timelinePath(1, '0/200028', 2, [{ tli: 1, switchLsn: '0/4000A0' }], MiB);
    expect(requiredSegments(path, 2n, 5n, MiB)).toEqual([
      '000000010000000000000002',
      '000000010000000000000003',
      '000000020000000000000004',
      '000000020000000000000005',
    ]);
  });

  it('refuses a timeline that branched off before the backup started, or does not descend from it', () => {
    expect(() => timelinePath(1, '0/500028', 2, [{ tli: 1, switchLsn: '0/4000A0' }], MiB)).toThrow(/before the backup started/);
    expect(() => timelinePath(3, '0/500028', 4, [{ tli: 1, switchLsn: '0/4000A0' }, { tli: 2, switchLsn: '0/6000A0' }], MiB)).toThrow(
      /does not descend/,
    );
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
