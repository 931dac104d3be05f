import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { PassThrough, Writable } from 'node:stream';
import { watchArchiveWait } from '../../src/backup/archive-wait.js';
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

  it('trust: pg_basebackup never waits without end for a server that does not answer (PGCONNECT_TIMEOUT)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'wv-connect-'));
    dirs.push(dir);
    const bin = join(dir, 'pg_basebackup');
    await writeFile(bin, '#!/bin/sh\necho "timeout=$PGCONNECT_TIMEOUT" >&2\n');
    await chmod(bin, 0o755);
    const seen = async (): Promise<string> => {
      const p = startBaseBackup(bin, { checkpoint: 'fast' }, 'test');
      await p.exit;
      return p.stderrTail();
    };
    const saved = process.env['PGCONNECT_TIMEOUT'];
    try {
      delete process.env['PGCONNECT_TIMEOUT'];
      expect(await seen()).toContain('timeout=30');
      process.env['PGCONNECT_TIMEOUT'] = '7';
      expect(await seen()).toContain('timeout=7');
    } finally {
      if (saved === undefined) delete process.env['PGCONNECT_TIMEOUT'];
      else process.env['PGCONNECT_TIMEOUT'] = saved;
    }
  });

  it('returns at once for a child that has already exited', async () => {
    const p = startBaseBackup('/bin/true', { checkpoint: 'fast' }, 'test');
    await p.exit;
    const started = performance.now();
    await stopBaseBackup(p, 5_000);
    expect(performance.now() - started).toBeLessThan(100);
  });
});

// The archive-wait clock runs only while walvault sits idle on pg_basebackup's output after the last
// data file: time the upload spends holding the stream back is not the server's wait.
describe('the archive wait clock', () => {
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  it('fires after the timeout once the data is streamed and the source is idle', async () => {
    const source = new PassThrough();
    source.pipe(new Writable({ write: (_c, _e, cb) => cb() }));
    let streamed = false;
    let fired = 0;
    const w = watchArchiveWait({ source, streamed: () => streamed, released: () => false, timeoutMs: 500, onTimeout: () => fired++ });
    await sleep(800);
    expect(fired, 'not before the data is streamed').toBe(0);
    streamed = true;
    await sleep(1_100);
    w.stop();
    expect(fired).toBe(1);
  });

  it('does not count time while the source is held back, nor after the server released the stream', async () => {
    const held = new PassThrough();
    held.pipe(new Writable({ highWaterMark: 1, write: () => undefined })); // never drains
    held.write(Buffer.alloc(64 * 1024));
    await sleep(50);
    expect(held.readableFlowing).toBe(false);
    let fired = 0;
    const a = watchArchiveWait({ source: held, streamed: () => true, released: () => false, timeoutMs: 300, onTimeout: () => fired++ });
    const idle = new PassThrough();
    idle.pipe(new Writable({ write: (_c, _e, cb) => cb() }));
    const b = watchArchiveWait({ source: idle, streamed: () => true, released: () => true, timeoutMs: 300, onTimeout: () => fired++ });
    await sleep(900);
    a.stop();
    b.stop();
    expect(fired).toBe(0);
  });
});
