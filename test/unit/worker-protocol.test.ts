import { existsSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { CONFIG_FILE, LOCK_FILE, WORKERS, workerOfCommand } from '../../src/worker/control.js';
import { pollUntilIdle } from '../../src/worker/loop.js';
import { answer, ask, readState, type WorkerState } from '../../src/worker/protocol.js';
import { parseHotArgv } from '../../src/cli/hot-path.js';

// The request/answer protocol between a command and its worker, with this process standing in for
// the worker (its pid in the lock, so that workerRunning() sees it alive).

const root = mkdtempSync(join(tmpdir(), 'wv-worker-unit-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let dir: string;
let n = 0;

beforeEach(async () => {
  dir = join(root, `w${n++}`);
  await mkdir(dir, { recursive: true });
  writeFileSync(join(dir, LOCK_FILE), String(process.pid));
  writeFileSync(join(dir, CONFIG_FILE), 'fp');
});

interface Extra extends WorkerState {
  timeline: number;
}

/** Plays the worker: waits for a request, then calls `reply` with it. */
async function onRequest(reply: (s: Extra) => Promise<void>): Promise<void> {
  for (;;) {
    const s = await readState<Extra>(dir);
    if (s?.reqId) return reply(s);
    await new Promise((r) => setTimeout(r, 2));
  }
}

describe('worker request/answer protocol', () => {
  it('returns the answer to its own request, with the worker-specific fields written beside it', async () => {
    const worker = onRequest(async (s) => {
      expect(s).toMatchObject({ req: 'A', timeline: 7 });
      await answer(dir, 'A', s.reqId!, 'absent');
    });
    const got = await ask<Extra>(dir, 'A', { fingerprint: 'fp', waitMs: 5000, done: () => false, fields: async () => ({ timeline: 7 }) });
    await worker;
    expect(got).toEqual({ result: 'absent' });
    expect(existsSync(join(dir, 'A.answer'))).toBe(false);
  });

  it('ignores an answer to another request, and gives up after waitMs', async () => {
    const worker = onRequest((s) => answer(dir, 'A', `${s.reqId}-old`, 'absent', 'not for you'));
    const t0 = Date.now();
    const got = await ask(dir, 'A', { fingerprint: 'fp', waitMs: 300, done: () => false });
    await worker;
    expect(got).toBe('no-answer');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
  });

  it('removes an answer left from an earlier request before asking', async () => {
    writeFileSync(join(dir, 'A.answer'), JSON.stringify({ reqId: 'stale', result: 'error' }));
    expect(await ask(dir, 'A', { fingerprint: 'fp', waitMs: 50, done: () => false })).toBe('no-answer');
    expect(existsSync(join(dir, 'A.answer'))).toBe(false);
  });

  it('is done when the result appears', async () => {
    let polls = 0;
    expect(await ask(dir, 'A', { fingerprint: 'fp', waitMs: 5000, done: async () => ++polls === 3 })).toBe('done');
  });

  it('asks nobody when no worker runs with this configuration, or its lock is stale', async () => {
    const never = () => {
      throw new Error('must not poll');
    };
    expect(await ask(dir, 'A', { fingerprint: 'other', waitMs: 5000, done: never })).toBe('no-answer');
    utimesSync(join(dir, LOCK_FILE), new Date(0), new Date(0));
    expect(await ask(dir, 'A', { fingerprint: 'fp', waitMs: 5000, done: never })).toBe('no-answer');
    expect(await readState(dir)).toBeNull(); // no request written
  });

  it('stops waiting soon after the worker is gone', async () => {
    setTimeout(() => rmSync(join(dir, LOCK_FILE)), 30);
    const t0 = Date.now();
    expect(await ask(dir, 'A', { fingerprint: 'fp', waitMs: 10_000, done: () => false })).toBe('no-answer');
    expect(Date.now() - t0).toBeLessThan(2000);
  });
});

describe('worker poll loop', () => {
  it('returns after idleMs with nothing started, and a fresh request starts the idle time over', async () => {
    const running = new Map<string, Promise<void>>();
    let steps = 0;
    const t0 = Date.now();
    await pollUntilIdle(dir, { idleMs: 100, pollMs: () => 5 }, async () => ({ running, started: 0, fresh: ++steps === 10 }));
    expect(Date.now() - t0).toBeGreaterThanOrEqual(100 + 9 * 5);
  });

  it('waits for running work and is not idle while it runs', async () => {
    const running = new Map<string, Promise<void>>();
    let started = false;
    let idleCalls = 0;
    let finishedAt: number | undefined;
    await pollUntilIdle(dir, { idleMs: 50, pollMs: () => 5, onIdle: async () => void idleCalls++ }, async () => {
      if (started) return { running, started: 0 };
      started = true;
      const work = new Promise<void>((r) => setTimeout(r, 200)).finally(() => {
        finishedAt = Date.now();
        running.delete('x');
      });
      running.set('x', work);
      return { running, started: 1 };
    });
    // Not idle while the work ran: the idle time counts only from its end, give or take the last
    // poll before it ended (5 ms) and timers firing a ms or two early on a loaded machine.
    expect(finishedAt).toBeDefined();
    expect(Date.now() - finishedAt!).toBeGreaterThanOrEqual(50 - 5 - 5);
    expect(idleCalls).toBeGreaterThan(0);
  });
});

describe('hidden worker commands', () => {
  it('are one table: each is found by its command and parsed by the fast path with no arguments', () => {
    for (const [kind, w] of Object.entries(WORKERS)) {
      expect(workerOfCommand(w.command)).toBe(kind);
      expect(parseHotArgv([w.command])).toEqual({ command: w.command, args: [], flags: {} });
      expect(parseHotArgv([w.command, 'x'])).toBeNull();
    }
    expect(workerOfCommand('wal-push')).toBeUndefined();
  });
});
