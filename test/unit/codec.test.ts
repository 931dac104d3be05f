import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { CODECS, compressBuffer, compressStream, decompressStream, isDecompressionError, parseCodec } from '../../src/codec/codec.js';
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import { readAll } from '../../src/archive/small-objects.js';

const sample = Buffer.concat([randomBytes(100_000), Buffer.alloc(500_000, 7)]);

describe.each(CODECS)('codec %s', (codec) => {
  it('round-trips a buffer through compressBuffer and decompressStream', async () => {
    const packed = await compressBuffer(codec, sample);
    if (codec !== 'none') expect(packed.length).toBeLessThan(sample.length);
    const d = decompressStream(codec);
    const out = d ? await readAll(Readable.from([packed]).pipe(d)) : packed;
    expect(out.equals(sample)).toBe(true);
  });

  it('round-trips through the streaming compressor', async () => {
    const c = compressStream(codec);
    const packed = c ? await readAll(Readable.from([sample]).pipe(c)) : sample;
    const d = decompressStream(codec);
    const out = d ? await readAll(Readable.from([packed]).pipe(d)) : packed;
    expect(out.equals(sample)).toBe(true);
  });
});

describe('isDecompressionError', () => {
  it('recognises a zstd frame damaged in its header (libzstd names the error itself)', async () => {
    const packed = await compressBuffer('zstd', sample);
    const bad = Buffer.from(packed);
    bad[5] = bad[5]! ^ 0xff;
    const err = await pipeline(Readable.from([bad]), decompressStream('zstd')!, new Writable({ write: (_c, _e, cb) => cb() })).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeDefined();
    expect((err as { code?: string }).code).toMatch(/^ZSTD_error/);
    expect(isDecompressionError(err)).toBe(true);
  });
});

describe('parseCodec', () => {
  it('accepts known codecs case-insensitively and refuses others', () => {
    expect(parseCodec('ZSTD')).toBe('zstd');
    expect(() => parseCodec('lz4')).toThrow(/unknown codec/);
  });
});
