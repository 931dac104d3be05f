import type { Transform } from 'node:stream';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { configError } from '../common/errors.js';

// The codec is recorded in object metadata, never in the key: changing compression never breaks a
// fetch, and a fetch is always exactly one GET.
export const CODECS = ['zstd', 'gzip', 'none'] as const;
export type Codec = (typeof CODECS)[number];

export function parseCodec(value: string, where = 'compression'): Codec {
  const v = value.trim().toLowerCase();
  if ((CODECS as readonly string[]).includes(v)) return v as Codec;
  throw configError(`${where}: unknown codec ${JSON.stringify(value)} (expected ${CODECS.join(', ')})`);
}

/**
 * Default levels favour speed: WAL is pushed on PostgreSQL's critical path, on the database's cores.
 * zstd 1 against 3 on pgbench WAL (scripts/bench/zstd-levels.mjs, README "Compression levels"):
 * half the CPU per GiB for ~20% more stored bytes, still ~1.8x smaller than lz4.
 */
export const DEFAULT_LEVEL: Record<Codec, number> = { zstd: 1, gzip: 6, none: 0 };

/**
 * Output buffer of a compressor. Node's default (16 KiB) makes the libuv pool hand every 16 KiB of
 * output back to the main thread before it compresses on: ~100 round trips per WAL segment.
 */
const OUT_CHUNK = 256 * 1024;

const zstdCompress = promisify(zlib.zstdCompress);
const gzip = promisify(zlib.gzip);

/** Compresses a whole buffer off the main thread (libuv pool), so look-ahead uploads overlap. */
export async function compressBuffer(codec: Codec, data: Buffer, level?: number): Promise<Buffer> {
  switch (codec) {
    case 'none':
      return data;
    case 'zstd':
      return zstdCompress(data, {
        chunkSize: OUT_CHUNK,
        params: { [zlib.constants.ZSTD_c_compressionLevel]: level ?? DEFAULT_LEVEL.zstd },
      });
    case 'gzip':
      return gzip(data, { chunkSize: OUT_CHUNK, level: level ?? DEFAULT_LEVEL.gzip });
  }
}

export function compressStream(codec: Codec, level?: number): Transform | undefined {
  switch (codec) {
    case 'none':
      return undefined;
    case 'zstd':
      return zlib.createZstdCompress({
        chunkSize: OUT_CHUNK,
        params: { [zlib.constants.ZSTD_c_compressionLevel]: level ?? DEFAULT_LEVEL.zstd },
      });
    case 'gzip':
      return zlib.createGzip({ chunkSize: OUT_CHUNK, level: level ?? DEFAULT_LEVEL.gzip });
  }
}

/** True when `e` comes from a zstd or zlib decoder: the compressed bytes are corrupt or truncated. */
export function isDecompressionError(e: unknown): e is NodeJS.ErrnoException & { code: string } {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  // Node's zstd decoder reports damage with libzstd's own names (ZSTD_error_corruption_detected, ...).
  return !!code && (code.startsWith('ERR_ZSTD') || code.startsWith('ZSTD_error') || code === 'Z_DATA_ERROR' || code === 'Z_BUF_ERROR' || code.startsWith('ERR__ZLIB'));
}

/**
 * Output buffer of a decompressor: with Node's default (16 KiB) a 16 MiB WAL segment passes through
 * the libuv pool, the hashing stream and write(2) in 1024 pieces, which cost ~2.5x the CPU of 1 MiB
 * pieces (restore prefetch, measured on pgbench WAL: 156 vs 63 CPU-ms per segment).
 */
const DECOMPRESS_CHUNK = 1024 * 1024;

export function decompressStream(codec: Codec): Transform | undefined {
  switch (codec) {
    case 'none':
      return undefined;
    case 'zstd':
      return zlib.createZstdDecompress({ chunkSize: DECOMPRESS_CHUNK });
    case 'gzip':
      return zlib.createGunzip({ chunkSize: DECOMPRESS_CHUNK });
  }
}
