// The prefetch worker's wake-ups (src/prefetch/dir-changes.ts): a request written while the worker
// is busy between two waits must wake the next wait at once. Before, it was lost and the request
// waited for the next poll (100-500 ms per "not found" at the end of every recovery).
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { watchDir } from '../../src/prefetch/dir-changes.js';

const dir = mkdtempSync(join(tmpdir(), 'wv-dir-changes-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const within = (p: Promise<void>, ms: number) =>
  Promise.race([p.then(() => 'woken'), new Promise<string>((r) => setTimeout(() => r('timeout'), ms))]);
const settle = () => new Promise((r) => setTimeout(r, 100));

describe('prefetch worker wake-ups', () => {
  it('keeps a change that came between two waits for the next wait', async () => {
    const changes = watchDir(dir)!;
    try {
      expect(changes).toBeDefined();
      // A request renamed into place while nobody waits (the worker is in the middle of a step).
      writeFileSync(join(dir, 'state.json.tmp'), '{}');
      renameSync(join(dir, 'state.json.tmp'), join(dir, 'state.json'));
      await settle();
      expect(await within(changes.next(), 1000)).toBe('woken');
      // Consumed: with nothing new, the next wait waits.
      expect(await within(changes.next(), 200)).toBe('timeout');
    } finally {
      changes.close();
    }
  });

  it("wakes for requests and segments handed over, not for the worker's own downloads", async () => {
    const changes = watchDir(dir)!;
    try {
      await settle();
      const none = changes.next();
      writeFileSync(join(dir, '000000010000000000000005.dl'), 'partial');
      writeFileSync(join(dir, '.walvault-tmp.000000010000000000000005.dl.1.ab'), 'partial');
      expect(await within(none, 200)).toBe('timeout');
      const seg = changes.next();
      writeFileSync(join(dir, '000000010000000000000005'), 'segment');
      expect(await within(seg, 1000)).toBe('woken');
    } finally {
      changes.close();
    }
  });
});
