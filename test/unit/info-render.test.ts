// info's pure renderers: the recovery window picture (a fixed-width snapshot, with and without
// colour) and the Prometheus textfile (names, HELP/TYPE, labels escaped, optional metrics left out).
import { describe, expect, it } from 'vitest';
import { drawWindow, type PictureInput } from '../../src/operate/picture.js';
import { formatMetrics } from '../../src/operate/prometheus.js';

const at = (h: number, m = 0) => new Date(Date.UTC(2026, 10, 30, h, m));

const input: PictureInput = {
  tli: 1,
  now: at(12),
  width: 72,
  color: false,
  backups: [
    { time: at(0, 30), type: 'full' },
    { time: at(6), type: 'incremental' },
    { time: at(9), type: 'incremental' },
  ],
  wal: { first: at(0), last: at(11, 55) },
  gaps: [{ from: at(3), to: at(4) }],
  window: { start: at(6), end: at(11, 55) },
};

describe('drawWindow (the recovery window on a terminal)', () => {
  it('draws backups as marks, WAL as a bar and a gap with its own character (72 columns)', () => {
    expect(drawWindow(input).join('\n') + '\n').toBe(
      [
        'timeline 1',
        'backups  |   F                          i              i               |',
        'WAL      |===============!!!!!!========================================|',
        '         +-------------------------------------------------------------+',
        '         2026-11-30 00:00:00Z                   now 2026-11-30 12:00:00Z',
        '         restorable from 2026-11-30 06:00:00Z to 2026-11-30 11:55:00Z',
        '         F full backup  i incremental  = archived WAL  ! gap (missing WAL)',
        '',
      ].join('\n'),
    );
  });

  it('with colour the gap is red, and every line keeps its width', () => {
    const lines = drawWindow({ ...input, color: true });
    expect(lines[2]).toContain('\x1b[31m!\x1b[0m');
    const plain = (s: string) => s.replace(/\x1b\[\d+m/g, '');
    expect(plain(lines[2]!)).toBe(drawWindow(input)[2]);
    expect(plain(lines[1]!).length).toBe(72);
  });

  it('says so when nothing is restorable, and follows the width', () => {
    const lines = drawWindow({ ...input, width: 40, window: null });
    expect(lines[1]!.length).toBe(40);
    expect(lines[5]).toMatch(/nothing restorable/);
  });
});

describe('formatMetrics (node_exporter textfile)', () => {
  it('writes HELP/TYPE and a sample per metric, labels escaped', () => {
    const text = formatMetrics({
      repository: 's3://b/p"x',
      now: at(12),
      lastSegment: { time: at(11, 59) },
      lastBackup: { time: at(9), sizeBytes: 1000, storedBytes: 400 },
      windowStart: at(6),
      gaps: 2,
      backups: { full: 1, incremental: 2 },
      verify: { time: at(10), ok: false },
      archiverFailedCount: 3,
    });
    const r = 'repository="s3://b/p\\"x"';
    expect(text).toContain('# HELP walvault_last_archived_segment_timestamp_seconds ');
    expect(text).toContain('# TYPE walvault_last_archived_segment_timestamp_seconds gauge\n');
    // One time series per repository: no label that changes with every archived segment.
    expect(text).toContain(`walvault_last_archived_segment_timestamp_seconds{${r}} ${at(11, 59).getTime() / 1000}\n`);
    expect(text).not.toContain('segment=');
    expect(text).toContain(`walvault_last_archived_age_seconds{${r}} 60\n`);
    expect(text).toContain(`walvault_last_backup_age_seconds{${r}} 10800\n`);
    expect(text).toContain(`walvault_last_backup_size_bytes{${r},kind="stored"} 400\n`);
    expect(text).toContain(`walvault_recovery_window_start_timestamp_seconds{${r}} ${at(6).getTime() / 1000}\n`);
    expect(text).toContain(`walvault_wal_gaps{${r}} 2\n`);
    expect(text).toContain(`walvault_backups{${r},type="incremental"} 2\n`);
    expect(text).toContain(`walvault_verify_ok{${r}} 0\n`);
    expect(text).toContain(`walvault_archiver_failed_count{${r}} 3\n`);
    expect(text.split('\n').filter((l) => l.startsWith('# TYPE')).length).toBe(11);
  });

  it('leaves out what is unknown (no backup, no verify run, no connection)', () => {
    const text = formatMetrics({ repository: 'file:///r', now: at(12), gaps: 0, backups: { full: 0, incremental: 0 } });
    expect(text).not.toMatch(/walvault_last_backup|walvault_verify|walvault_archiver|walvault_last_archived/);
    expect(text).toContain('walvault_wal_gaps{repository="file:///r"} 0\n');
  });
});
