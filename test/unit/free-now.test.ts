// freeNow (src/archive/large-body.ts) frees uploaded bodies at once by detaching their ArrayBuffers.
// It runs after a successful upload, so it must never throw (a throw there turned stored files into
// failed pushes), and must never touch memory that other Buffers share (Node's 8 KiB pool).
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { freeNow } from '../../src/archive/large-body.js';

/** WebAssembly, which the TypeScript lib of this project does not declare. */
const Wasm = (globalThis as unknown as { WebAssembly: { Memory: new (d: { initial: number }) => { buffer: ArrayBuffer } } }).WebAssembly;

describe('freeNow', () => {
  it('empties a large Buffer of its own at once', () => {
    const body = Buffer.alloc(2 * 1024 * 1024, 7);
    freeNow([body]);
    expect(body.length).toBe(0);
    expect((body.buffer as ArrayBuffer & { detached: boolean }).detached).toBe(true);
  });

  it('leaves small Buffers alone: they may share an allocation pool with live ones', () => {
    const a = Buffer.from('a small body');
    const b = Buffer.from('its neighbour in the pool');
    freeNow([a]);
    expect(a.toString()).toBe('a small body');
    expect(b.toString()).toBe('its neighbour in the pool');
  });

  it('never throws, also on ArrayBuffers that cannot be detached', async () => {
    // A WebAssembly memory's buffer (128 KiB here) refuses to be detached, as Node's own shared ones do.
    const wasm = Buffer.from(new Wasm.Memory({ initial: 2 }).buffer);
    const zstd = await promisify(zlib.zstdCompress)(Buffer.alloc(1024 * 1024, 1));
    const pieces = [wasm, zstd, Buffer.alloc(128 * 1024), zstd];
    expect(() => freeNow(pieces)).not.toThrow();
    expect(wasm.length).toBe(128 * 1024);
    expect(pieces[2]!.length).toBe(0);
    // the second time, already detached ones are skipped
    expect(() => freeNow(pieces)).not.toThrow();
  });
});
