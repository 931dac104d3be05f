import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ByteBudget } from '../../src/archive/byte-budget.js';
import { archiveOrder, contiguousEnd, pickLookahead } from '../../src/push-ahead/plan.js';
import { pruneRecords, pushRecordDir } from '../../src/push-ahead/records.js';
import { parseWalName } from '../../src/wal/names.js';

const MiB = 1024 * 1024;
const seg = (n: number, tli = 1) => `${tli.toString(16).toUpperCase().padStart(8, '0')}00000000${n.toString(16).toUpperCase().padStart(8, '0')}`;

describe('look-ahead selection', () => {
  it("uses PostgreSQL's archive order: history files first, then by name", () => {
    const names = [seg(5), '00000002.history', seg(3), `${seg(4)}.00000028.backup`, seg(4)];
    expect([...names].sort(archiveOrder)).toEqual(['00000002.history', seg(3), seg(4), `${seg(4)}.00000028.backup`, seg(5)]);
  });

  it('picks history files and files after the foreground segment, skips older, recorded and foreign names', () => {
    const ready = [seg(1), seg(2), seg(3), seg(4), seg(5), seg(6), '00000002.history', 'garbage', `${seg(7)}.partial`];
    const picked = pickLookahead(ready, parseWalName(seg(3)), 8, new Set([seg(5)])).map((w) => w.name);
    expect(picked).toEqual(['00000002.history', seg(4), seg(6), `${seg(7)}.partial`]);
  });

  it('respects the limit, 0 turns it off', () => {
    const ready = Array.from({ length: 20 }, (_, i) => seg(i + 1));
    expect(pickLookahead(ready, parseWalName(seg(1)), 8).map((w) => w.name)).toEqual(ready.slice(1, 9));
    expect(pickLookahead(ready, parseWalName(seg(1)), 0)).toEqual([]);
  });

  it('after a history file, takes the oldest segments', () => {
    const picked = pickLookahead([seg(9), seg(8), '00000002.history'], parseWalName('00000002.history'), 8).map((w) => w.name);
    expect(picked).toEqual([seg(8), seg(9)]);
  });
});

describe('contiguousEnd (what the high-water mark may claim)', () => {
  it('stops at the first segment that did not make it', () => {
    expect(contiguousEnd(seg(3), new Set([seg(4), seg(5), seg(7)]), 16 * MiB)).toBe(seg(5));
    expect(contiguousEnd(seg(3), new Set([seg(5)]), 16 * MiB)).toBe(seg(3));
  });

  it('crosses a log-id boundary', () => {
    const last = '0000000100000000000000FF';
    expect(contiguousEnd(last, new Set(['000000010000000100000000']), 16 * MiB)).toBe('000000010000000100000000');
  });
});

describe('ByteBudget', () => {
  it('admits one file above the limit and queues the rest in order', async () => {
    const b = new ByteBudget(32 * MiB);
    const order: string[] = [];
    await b.acquire(40 * MiB);
    const second = b.acquire(16 * MiB).then(() => order.push('second'));
    const third = b.acquire(16 * MiB).then(() => order.push('third'));
    await Promise.resolve();
    expect(order).toEqual([]);
    b.release(40 * MiB - MiB); // compressed to 1 MiB
    await second;
    expect(order).toEqual(['second']); // 1 + 16 fits, 1 + 16 + 16 does not
    b.release(16 * MiB);
    await third;
    expect(order).toEqual(['second', 'third']);
    expect(b.inUse).toBe(17 * MiB);
  });

  it('take() counts a body larger than reserved at once, past the limit, and holds back new files until it is given back', async () => {
    const b = new ByteBudget(8 * MiB);
    await b.acquire(4 * MiB);
    await b.acquire(4 * MiB);
    b.take(12 * MiB); // the first one's body: 16 MiB of random bytes instead of the 4 expected
    expect(b.inUse).toBe(20 * MiB);
    let admitted = false;
    const next = b.acquire(4 * MiB).then(() => (admitted = true));
    b.release(4 * MiB); // the second one is done
    await Promise.resolve();
    expect(admitted).toBe(false);
    b.release(16 * MiB); // the large body is uploaded
    await next;
    expect(b.inUse).toBe(4 * MiB);
  });
});

describe('look-ahead records', () => {
  it("lookahead: a wal-push's record tidy never deletes the temp file of a live worker's record", async () => {
    const cache = await mkdtemp(join(tmpdir(), 'wv-records-'));
    try {
      const dir = pushRecordDir(cache);
      await mkdir(dir, { recursive: true });
      const dead = spawnSync('true').pid;
      const live = `${seg(4)}.json.${process.ppid}.tmp`; // another process, alive: a worker mid-write
      await writeFile(join(dir, live), '{}');
      await writeFile(join(dir, `${seg(5)}.json.${dead}.tmp`), '{}'); // its writer is gone
      await writeFile(join(dir, `${seg(6)}.json.tmp`), '{}'); // no writer named
      await writeFile(join(dir, `${seg(4)}.json`), '{}');
      await writeFile(join(dir, `${seg(2)}.json`), '{}'); // archived and recycled
      await pruneRecords(cache, new Set([seg(4)]));
      expect((await readdir(dir)).sort()).toEqual([`${seg(4)}.json`, live].sort());
    } finally {
      await rm(cache, { recursive: true, force: true });
    }
  });
});
