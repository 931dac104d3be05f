import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startBaseBackup, stopBaseBackup } from '../../src/backup/pg-basebackup.js';

// backup-push stops pg_basebackup by PID and never waits on it without a bound: a child that
// ignores SIGTERM (a pg_basebackup stuck in the server's archive wait, here a stand-in) gets SIGKILL.
describe('stopping pg_basebackup', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it('sends SIGTERM, then SIGKILL after the grace period', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'wv-stop-'));
    dirs.push(dir);
    const bin = join(dir, 'pg_basebackup');
    // Ignores SIGTERM, like a process that does not get to handle it; exec keeps the PID.
    await writeFile(bin, "#!/bin/sh\ntrap '' TERM\necho started >&2\nexec sleep 60\n");
    await chmod(bin, 0o755);
    const p = startBaseBackup(bin, { checkpoint: 'fast' }, 'test');
    await new Promise((r) => p.child.stderr!.once('data', r));
    const started = performance.now();
    await stopBaseBackup(p, 300);
    const ms = performance.now() - started;
    expect(await p.exit).toEqual({ code: null, signal: 'SIGKILL' });
    expect(ms).toBeGreaterThanOrEqual(250);
    expect(ms).toBeLessThan(3_000);
  });

  it('returns at once for a child that has already exited', async () => {
    const p = startBaseBackup('/bin/true', { checkpoint: 'fast' }, 'test');
    await p.exit;
    const started = performance.now();
    await stopBaseBackup(p, 5_000);
    expect(performance.now() - started).toBeLessThan(100);
  });
});
