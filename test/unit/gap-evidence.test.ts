// The evidence gap detection relies on (state objects, timeline history files) is data read from a
// repository: every field is checked, and anything wrong is an IntegrityError-class error (exit 10)
// naming the object, never "no mark", never an InternalError or a TypeError.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExitCode, isWalvaultError } from '../../src/common/errors.js';
import { sha256Hex } from '../../src/fs/hash.js';
import { Deadline } from '../../src/common/retry.js';
import { createFileStorage } from '../../src/storage/file/driver.js';
import type { Storage } from '../../src/storage/types.js';
import { highWaterKey, parseHighWater, readHighWater } from '../../src/archive/high-water.js';
import { parseTimelineHistory } from '../../src/wal/timeline-history.js';

const T1 = '000000010000000000000001';
const T9 = '000000010000000000000009';
const GOOD = { timeline: 1, first: T1, last: T9, updatedAt: '2026-11-30T03:00:00.000Z' };
const policy = { retries: 0, minDelayMs: 1, maxDelayMs: 1, attemptTimeoutMs: 5_000, deadlineMs: 5_000 };

/** Every way a state object's JSON can be wrong. */
const BAD_BODIES: Record<string, string> = {
  'truncated JSON': JSON.stringify(GOOD).slice(0, 30),
  'empty body': '',
  'JSON null': 'null',
  'JSON array': JSON.stringify([GOOD]),
  'JSON string': JSON.stringify(JSON.stringify(GOOD)),
  'JSON number': '1',
  'extra field': JSON.stringify({ ...GOOD, extra: true }),
  'prototype field': '{"timeline":1,"first":"' + T1 + '","last":"' + T9 + '","updatedAt":"2026-11-30T03:00:00Z","__proto__":{}}',
  ...Object.fromEntries(Object.keys(GOOD).map((k) => [`missing ${k}`, JSON.stringify({ ...GOOD, [k]: undefined })])),
  ...Object.fromEntries(
    Object.keys(GOOD).flatMap((k) =>
      [null, true, 0, -1, 1.5, '', '1', [], {}, 'x'.repeat(5000)].map((v) => [`${k} = ${JSON.stringify(v)?.slice(0, 20)}`, JSON.stringify({ ...GOOD, [k]: v })]),
    ),
  ),
  'timeline of another key': JSON.stringify({ ...GOOD, timeline: 2 }),
  'timeline above 32 bits': JSON.stringify({ ...GOOD, timeline: 2 ** 32 }),
  'timeline as hex string': JSON.stringify({ ...GOOD, timeline: '00000001' }),
  'first lower-case': JSON.stringify({ ...GOOD, first: '00000001000000000000000a', last: '00000001000000000000000F' }),
  'first 23 hex': JSON.stringify({ ...GOOD, first: T1.slice(1) }),
  'first 25 hex': JSON.stringify({ ...GOOD, first: T1 + '0' }),
  'first with a path': JSON.stringify({ ...GOOD, first: '../../../etc/passwd' }),
  'first on another timeline': JSON.stringify({ ...GOOD, first: '000000020000000000000001' }),
  'last on another timeline': JSON.stringify({ ...GOOD, last: '000000020000000000000009' }),
  'last a .partial': JSON.stringify({ ...GOOD, last: `${T9}.partial` }),
  'first after last': JSON.stringify({ ...GOOD, first: T9, last: T1 }),
  'updatedAt not a date': JSON.stringify({ ...GOOD, updatedAt: 'yesterday' }),
  'updatedAt impossible date': JSON.stringify({ ...GOOD, updatedAt: '2026-13-45T99:00:00Z' }),
  'updatedAt a number': JSON.stringify({ ...GOOD, updatedAt: Date.now() }),
};

function expectCorrupt(fn: () => unknown, where: string): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(isWalvaultError(err), `threw ${String(err)}`).toBe(true);
  expect((err as { exitCode: number }).exitCode).toBe(ExitCode.integrity);
  expect((err as Error).message).toContain(where);
}

describe('trust: the state object is validated field by field', () => {
  it('accepts a well-formed mark', () => {
    expect(parseHighWater(JSON.stringify(GOOD), 1, 'x')).toEqual(GOOD);
    expect(parseHighWater(JSON.stringify(GOOD) + '\n', 1, 'x')).toEqual(GOOD);
  });

  it.each(Object.entries(BAD_BODIES))('rejects %s', (_label, body) => {
    expectCorrupt(() => parseHighWater(body, 1, 's3://b/p/state/timeline-00000001.json'), 's3://b/p/state/timeline-00000001.json');
  });
});

describe('trust: a state object is read through the verified path', () => {
  let dir: string;
  let storage: Storage;
  const key = highWaterKey(1);
  const read = async () => {
    const deadline = new Deadline(5_000);
    try {
      return await readHighWater(storage, 1, { policy, deadline });
    } finally {
      deadline.dispose();
    }
  };
  const put = (body: Buffer, meta: Record<string, string>) => storage.put(key, body, meta);
  const meta = (b: Buffer) => ({ sha256: sha256Hex(b), size: String(b.length), codec: 'none' });
  const good = Buffer.from(JSON.stringify(GOOD) + '\n');

  async function expectReadCorrupt(): Promise<void> {
    const err = await read().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isWalvaultError(err), `resolved or threw ${String(err)}`).toBe(true);
    expect((err as { exitCode: number }).exitCode).toBe(ExitCode.integrity);
    expect((err as Error).message).toContain(`${storage.url}/${key}`);
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'wv-gap-evidence-'));
    storage = createFileStorage(dir);
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('returns the mark when it verifies, null when there is none', async () => {
    await storage.delete([key]);
    expect(await read()).toBeNull();
    await put(good, meta(good));
    expect(await read()).toEqual(GOOD);
    const gz = gzipSync(good);
    await put(gz, { ...meta(good), codec: 'gzip' });
    expect(await read()).toEqual(GOOD);
  });

  it.each(Object.entries(BAD_BODIES))('an object holding %s (with matching SHA-256) is an error', async (_label, text) => {
    const b = Buffer.from(text);
    await put(b, meta(b));
    await expectReadCorrupt();
  });

  const badMeta: Record<string, (b: Buffer) => Record<string, string>> = {
    'wrong sha256': (b) => ({ ...meta(b), sha256: sha256Hex(Buffer.from('other')) }),
    'wrong size (smaller)': (b) => ({ ...meta(b), size: String(b.length - 1) }),
    'wrong size (larger)': (b) => ({ ...meta(b), size: String(b.length + 1) }),
    'huge declared size': (b) => ({ ...meta(b), size: String(2 ** 40) }),
    'size not a number': (b) => ({ ...meta(b), size: 'abc' }),
    'negative size': (b) => ({ ...meta(b), size: '-1' }),
    'no sha256': (b) => ({ size: String(b.length), codec: 'none' }),
    'sha256 upper-case': (b) => ({ ...meta(b), sha256: sha256Hex(b).toUpperCase() }),
    'no metadata': () => ({}),
    'unknown codec': (b) => ({ ...meta(b), codec: 'lz4' }),
    'codec gzip on plain bytes': (b) => ({ ...meta(b), codec: 'gzip' }),
  };
  it.each(Object.entries(badMeta))('a good body with %s is an error', async (_label, m) => {
    await put(good, m(good));
    await expectReadCorrupt();
  });

  it('a body that inflates past its declared size is an error', async () => {
    const big = Buffer.alloc(1024 * 1024, 0x20);
    await put(gzipSync(big), { sha256: sha256Hex(good), size: String(good.length), codec: 'gzip' });
    await expectReadCorrupt();
  });
});

describe('timeline history files', () => {
  const where = 'file:///r/wal/00000003.history';
  it('parses ancestors and switch points, with comments, blank lines and reasons', () => {
    const text = '# comment\n1\t0/3000000\tno recovery target specified\n\n2\t1/A0000028\tat restore point "x"\n';
    expect(parseTimelineHistory(text, 3, where)).toEqual([
      { parent: 1, switchpoint: 0x3000000n },
      { parent: 2, switchpoint: 0x1a0000028n },
    ]);
  });

  it.each([
    ['empty', ''],
    ['only comments', '# x\n'],
    ['no LSN', '1\tno recovery target\n'],
    ['LSN without slash', '1\t3000000\treason\n'],
    ['LSN too long', '1\t0/123456789\treason\n'],
    ['negative timeline', '-1\t0/3000000\n'],
    ['timeline 0', '0\t0/3000000\n'],
    ['parent not older than the file', '3\t0/3000000\n'],
    ['parents out of order', '2\t0/3000000\n1\t0/4000000\n'],
    ['switch points backwards', '1\t0/5000000\n2\t0/4000000\n'],
    ['binary junk', '\u0000\u0001\u0002'],
  ])('rejects %s as a corrupt object', (_label, text) => {
    expectCorrupt(() => parseTimelineHistory(text, 3, where), where);
  });
});

describe('file:// list with startAfter (the gap check reads one timeline after the missing name)', () => {
  it('returns only the keys after it, in order, without descending into earlier shards', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'wv-list-after-'));
    try {
      const storage = createFileStorage(dir);
      const keys = [
        'wal/00000001.history',
        'wal/0000000100000000/000000010000000000000001',
        'wal/0000000100000000/000000010000000000000002',
        'wal/0000000100000000/000000010000000000000003',
        'wal/000000010000000000000002.00000028.backup',
        'wal/0000000100000001/000000010000000100000000',
        'wal/0000000200000000/000000020000000000000003',
      ];
      for (const k of keys) await storage.put(k, Buffer.from('x'), {});
      const list = async (prefix: string, startAfter?: string) => {
        const out: string[] = [];
        for await (const o of storage.list(prefix, startAfter === undefined ? {} : { startAfter })) out.push(o.key);
        return out;
      };
      expect(await list('wal/00000001', keys[2])).toEqual([keys[3], keys[4], keys[5]]);
      expect(await list('wal/00000001', 'wal/0000000100000000/')).toEqual(keys.slice(1, 6));
      expect(await list('wal/00000001', 'wal/0000000100000001/000000010000000100000000')).toEqual([]);
      expect(await list('wal/00000001')).toEqual(keys.slice(0, 6));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
