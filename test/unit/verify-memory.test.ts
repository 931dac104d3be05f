// verify --deep's memory of verified objects: known by key, size and ETag (a rewritten object is
// read again), small (16 hex digits an object), entries of objects no longer listed dropped, a
// failed object forgotten, a damaged file only costs a re-read.
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MEMORY_FILE, VerifyMemory } from '../../src/operate/verify-memory.js';
import type { ListedObject } from '../../src/storage/types.js';

const obj = (key: string, etag?: string, storedSize = 10): ListedObject => ({ key, storedSize, lastModified: new Date(0), ...(etag ? { etag } : {}) });

describe('VerifyMemory', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'wv-memory-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('remembers what was verified, by key, size and ETag', async () => {
    const a = obj('wal/a', '"e1"');
    const m = await VerifyMemory.load(join(dir, 'repo'));
    expect(m.has(a)).toBe(false);
    m.remember(a);
    expect(await m.save([a])).toBe(1);
    const again = await VerifyMemory.load(join(dir, 'repo'));
    expect(again.has(a)).toBe(true);
    expect(again.has(obj('wal/a', '"e2"'))).toBe(false);
    expect(again.has(obj('wal/a', '"e1"', 11))).toBe(false);
    expect(again.has(obj('wal/b', '"e1"'))).toBe(false);
    const file = await readFile(join(dir, 'repo', MEMORY_FILE), 'utf8');
    expect(JSON.parse(file)).toEqual({ format: 1, objects: [expect.stringMatching(/^[0-9a-f]{16}$/)] });
    expect(await readdir(join(dir, 'repo'))).toEqual([MEMORY_FILE]); // no temp file left
  });

  it('drops objects no longer listed and forgets failed ones; never remembers an object without an ETag', async () => {
    const [a, b, c] = [obj('a', '1'), obj('b', '2'), obj('c', '3')];
    const m = await VerifyMemory.load(dir);
    for (const o of [a, b, c, obj('d')]) m.remember(o);
    m.forget(c);
    expect(await m.save([a, c, obj('d')])).toBe(1);
    const again = await VerifyMemory.load(dir);
    expect([a, b, c].map((o) => again.has(o))).toEqual([true, false, false]);
  });

  it('a damaged file is an empty memory', async () => {
    await writeFile(join(dir, MEMORY_FILE), '{"format":1,"objects":[');
    const m = await VerifyMemory.load(dir);
    expect(m.has(obj('a', '1'))).toBe(false);
  });
});
