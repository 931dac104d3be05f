import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { integrityError, type WalvaultError } from '../common/errors.js';

export function sha256Hex(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

export function md5Base64(data: Buffer): string {
  return createHash('md5').update(data).digest('base64');
}

/**
 * An object that yields more bytes than its writer recorded. Not retried: the stored bytes are what
 * they are, and another attempt would only decompress the same bomb again (time, disk, bandwidth).
 */
export function sizeExceededError(what: string, limit: number): WalvaultError {
  return integrityError(`${what} yields more than its declared ${limit} bytes: corrupt or hostile, not retried`, {
    retryable: false,
  });
}

/**
 * Pass-through stream that hashes and counts what flows through it. With `limit` (the size the
 * object's metadata declares) it fails on the first byte past it, so a decompression bomb costs at
 * most `limit` bytes of output and the time to produce them; the decompressor upstream stops with it.
 */
export class HashingStream extends Transform {
  private readonly hash: Hash = createHash('sha256');
  bytes = 0;

  constructor(private readonly bound?: { limit: number; what: string }) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.bound && this.bytes > this.bound.limit) {
      cb(sizeExceededError(this.bound.what, this.bound.limit));
      return;
    }
    this.hash.update(chunk);
    cb(null, chunk);
  }

  /** Valid once the stream has ended. */
  digest(): string {
    return this.hash.digest('hex');
  }
}
