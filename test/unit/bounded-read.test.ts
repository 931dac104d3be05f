// Reads bounded by the declared size (issue 8, item 8): pure stream logic, no store.
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { HashingStream } from '../../src/fs/hash.js';
import { readAll } from '../../src/archive/small-objects.js';

const bomb = zlib.zstdCompressSync(Buffer.alloc(64 * 1024 * 1024));

describe('trust: decompression stops at the declared size', () => {
  it('HashingStream fails on the first byte past the limit, not retryable, and the decoder stops with it', async () => {
    const hashing = new HashingStream({ limit: 1024 * 1024, what: 'obj' });
    const d = zlib.createZstdDecompress();
    const err = await pipeline(Readable.from([bomb]), d, hashing, async function* (src) {
      for await (const _ of src) yield;
    }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'IntegrityError', exitCode: 10, retryable: false });
    expect((err as Error).message).toMatch(/obj yields more than its declared 1048576 bytes/);
    expect(hashing.bytes).toBeLessThan(4 * 1024 * 1024);
  });

  it('HashingStream passes exactly the declared size', async () => {
    const hashing = new HashingStream({ limit: 10, what: 'obj' });
    await pipeline(Readable.from([Buffer.alloc(10)]), hashing, async function* (src) {
      for await (const _ of src) yield;
    });
    expect(hashing.bytes).toBe(10);
  });

  it('readAll stops at its limit with a non-retryable IntegrityError', async () => {
    const d = zlib.createZstdDecompress();
    d.end(bomb);
    await expect(readAll(d, 4096, 'state/x.json')).rejects.toMatchObject({ code: 'IntegrityError', retryable: false });
    await expect(readAll(Readable.from([Buffer.from('{}')]), 2)).resolves.toEqual(Buffer.from('{}'));
  });
});
