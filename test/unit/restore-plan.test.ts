import { describe, expect, it } from 'vitest';
import type { BackupInfo } from '../../src/backup/backup-info.js';
import type { FetchPlan } from '../../src/backup/fetch-plan.js';
import { backupError } from '../../src/common/errors.js';
import { renderDrill } from '../../src/operate/drill-report.js';
import { formatSeconds, planDocument, renderPlan } from '../../src/operate/pitr-plan.js';
import type { DrillReport } from '../../src/operate/restore-drill.js';

// backup-fetch --dry-run's plan document and text, and restore-test's text: pure functions.

const info = (id: string, type: 'full' | 'incremental', reference?: string): BackupInfo =>
  ({ format: 2, type, ...(reference ? { reference } : {}), id, stopTime: '2026-11-30T09:00:00.000Z', stopLsn: '0/3000100', storedBytes: 999 }) as BackupInfo;

const FULL = 'base_000000010000000000000003_20261130T085900Z';
const INCR = 'base_000000010000000000000007_20261130T095900Z';

function plan(missing: string[] = []): FetchPlan {
  return {
    backup: info(INCR, 'incremental', FULL),
    why: 'the newest backup',
    chain: [info(INCR, 'incremental', FULL), info(FULL, 'full')],
    wal: {
      targetTli: 2,
      path: [
        { tli: 1, beginSegno: 0n },
        { tli: 2, beginSegno: 9n },
      ],
      firstSegment: '000000010000000000000007',
      lastSegment: '00000002000000000000000C',
      segments: 6,
      missing,
      ...(missing.length ? { problem: backupError(`the archive lacks WAL segment ${missing[0]}`) } : {}),
    },
    downloadBytes: 3 * 1024 * 1024,
    objects: 7,
    fileCount: 980,
  };
}

describe('backup-fetch --dry-run plan', () => {
  it('estimates the time from the measured throughput, and says unknown without one', () => {
    const rate = { bytesPerSecond: 1024 * 1024, bytes: 1, seconds: 1, measuredAt: '2026-11-30T08:00:00.000Z', backup: FULL, command: 'restore-test' };
    const d = planDocument(plan(), { kind: 'none' }, rate);
    expect(d.complete).toBe(true);
    expect(d.estimate).toEqual({ seconds: 3, bytesPerSecond: 1024 * 1024, measuredAt: rate.measuredAt, by: 'restore-test' });
    expect(d.chain).toEqual([
      { id: INCR, type: 'incremental' },
      { id: FULL, type: 'full' },
    ]);
    expect(d.wal).toMatchObject({ timelines: [1, 2], complete: true, missing: [] });
    const text = renderPlan(d);
    expect(text).toContain(`chain      ${INCR} (incremental) <- ${FULL} (full)`);
    expect(text).toContain('WAL        000000010000000000000007 .. 00000002000000000000000C (6 segments, timelines 1 -> 2): all archived');
    expect(text).toContain('download   3.00 MiB (3145728 bytes) in 7 objects, 980 files');
    expect(text).toContain('estimate   3.0 s at 1.00 MiB/s (measured by restore-test at 2026-11-30T08:00:00.000Z)');
    expect(text).toContain('plan       complete');
    expect(renderPlan(planDocument(plan(), { kind: 'none' }, undefined))).toContain('estimate   unknown');
  });

  it('names the missing segments and is incomplete', () => {
    const missing = ['000000010000000000000008', '000000010000000000000009'];
    const d = planDocument(plan(missing), { kind: 'lsn', lsn: '0/C000000' }, undefined);
    expect(d.complete).toBe(false);
    expect(d.target).toBe('LSN 0/C000000');
    expect(d.problems).toEqual(['the archive lacks WAL segment 000000010000000000000008']);
    const text = renderPlan(d);
    expect(text).toContain('MISSING 000000010000000000000008, 000000010000000000000009');
    expect(text).toContain('plan       INCOMPLETE: the archive lacks WAL segment 000000010000000000000008');
  });

  it('formats durations', () => {
    expect(formatSeconds(4.25)).toBe('4.3 s');
    expect(formatSeconds(125)).toBe('2 min 5 s');
    expect(formatSeconds(3 * 3600 + 120)).toBe('3 h 2 min');
  });
});

describe('restore-test text', () => {
  const ok: DrillReport = {
    ok: true,
    problems: [],
    backup: { id: FULL, format: 2, type: 'full', stopTime: '2026-11-30T09:00:00.000Z', stopLsn: '0/3000100' },
    target: 'the end of the archived WAL',
    wal: { firstSegment: '000000010000000000000003', lastSegment: '000000010000000000000005', segments: 3, timelines: [1] },
    download: { bytes: 2 * 1024 * 1024, objects: 4, files: 980, bytesPerSecond: 1024 * 1024 },
    recovery: { replayLsn: '0/5000060', replayTime: '2026-11-30T09:01:00.000Z', timeline: 2 },
    amcheck: { ran: true, program: '/usr/lib/postgresql/15/bin/pg_amcheck', args: ['--all', '--install-missing'] },
    sql: { file: 'check.sql', columns: ['accounts', 'marker'], rows: [['100000', 'after']] },
    phases: { restore: 2.5, replay: 1.25, checks: 0.5, total: 4.4 },
    directory: '/tmp/x',
    kept: false,
  };

  it('shows every phase, the checks and the SQL result', () => {
    const text = renderDrill(ok);
    expect(text.split('\n')[0]).toBe('restore-test: OK');
    expect(text).toContain('recovered    to 0/5000060 (last transaction 2026-11-30T09:01:00.000Z), promoted to timeline 2');
    expect(text).toContain('pg_amcheck   ok (/usr/lib/postgresql/15/bin/pg_amcheck --all --install-missing)');
    expect(text).toContain('sql          check.sql: ok, 1 row');
    expect(text).toContain('accounts | marker');
    expect(text).toContain('100000   | after');
    expect(text).toContain('RTO          restore 2.5 s + replay 1.3 s + checks 0.5 s = total 4.4 s');
  });

  it('names the reason and the problem of a failed drill, and the phases it reached', () => {
    const failed: DrillReport = { ...ok, ok: false, reason: 'missing WAL', problems: ['the archive lacks WAL segment X'], recovery: null, amcheck: null, sql: null, phases: { restore: null, replay: null, checks: null, total: 0.7 }, kept: true };
    const text = renderDrill(failed);
    expect(text.split('\n')[0]).toBe('restore-test: FAILED (missing WAL)');
    expect(text).toContain('RTO          total 0.7 s');
    expect(text).toContain('problem      the archive lacks WAL segment X');
    expect(text).toContain('kept         /tmp/x (--keep-failed)');
  });
});
