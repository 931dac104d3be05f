import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { integrityError } from '../common/errors.js';
import type { Piece } from './file-plan.js';
import { PAX_POSITION, TAR_END, tarHeader, tarPadding } from './tar-encode.js';

// One data object of a format-2 backup in, the tar stream of its files out: file i is bytes
// [offset, offset + size) of the object's uncompressed content (file-list.ts). Each file's SHA-256
// and size are checked as its last byte passes; a mismatch fails the stream at once (IntegrityError),
// before the archive ends, so the extractor never reports that object as restored. Bytes between
// files are read (the object's own SHA-256 covers them) and dropped. Memory: one chunk at a time.

export class ObjectCutter extends Transform {
  private pos = 0;
  private next = 0;
  private hash: Hash | undefined;
  private held: Buffer | undefined;
  /** Files whose bytes were all checked. */
  verified = 0;

  /**
   * `files` sorted by offset, none overlapping (file-plan.ts). `beforeEnd` runs once the whole
   * object went through, before the end of the archive is written; it throws to fail the stream.
   */
  constructor(
    private readonly files: Piece[],
    private readonly what: string,
    private readonly beforeEnd: () => void = () => undefined,
  ) {
    super({ readableHighWaterMark: 256 * 1024 });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      this.consume(chunk);
      cb();
    } catch (e) {
      cb(e as Error);
    }
  }

  private consume(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length || this.startsHere()) {
      const f = this.files[this.next];
      if (!f) break;
      if (!this.hash) {
        if (this.pos < f.offset) {
          const skip = Math.min(f.offset - this.pos, chunk.length - at);
          at += skip;
          this.pos += skip;
          continue;
        }
        const extra: Record<string, string> = f.position === undefined ? {} : { [PAX_POSITION]: String(f.position) };
        this.push(tarHeader(f.path, 'file', f.size, f.mode, f.mtimeMs, extra));
        this.hash = createHash('sha256');
      }
      const take = Math.min(f.offset + f.size - this.pos, chunk.length - at);
      if (take > 0) {
        const part = chunk.subarray(at, at + take);
        // An extent of a file in pieces is checked with the whole file once all its extents are
        // in (pieced-files.ts); a whole file's last chunk goes out only once its SHA-256 matched:
        // the extractor never completes a file with bytes that were not verified.
        if (f.position === undefined) this.hash.update(part);
        if (this.held) this.push(this.held);
        this.held = part;
        at += take;
        this.pos += take;
      }
      if (this.pos === f.offset + f.size) this.finishFile(f);
    }
    this.pos += chunk.length - at;
  }

  /** The next file begins (or, empty, lies) at the current position. */
  private startsHere(): boolean {
    const f = this.files[this.next];
    return f !== undefined && (this.hash !== undefined ? this.pos === f.offset + f.size : this.pos === f.offset);
  }

  private finishFile(f: Piece): void {
    const digest = this.hash!.digest('hex');
    this.hash = undefined;
    if (f.position === undefined && digest !== f.sha256) {
      throw integrityError(`${f.path} (bytes ${f.offset}-${f.offset + f.size} of ${this.what}) has SHA-256 ${digest}, the file list records ${f.sha256}`);
    }
    if (this.held) this.push(this.held);
    this.held = undefined;
    this.push(tarPadding(f.size));
    this.verified++;
    this.next++;
  }

  override _flush(cb: TransformCallback): void {
    try {
      // Empty files at the very end of the object start at its last byte.
      this.consume(Buffer.alloc(0));
      const f = this.files[this.next];
      if (f) {
        throw integrityError(`${this.what} ended after ${this.pos} bytes, inside or before ${f.path} (bytes ${f.offset}-${f.offset + f.size}): truncated`);
      }
      this.beforeEnd();
      this.push(TAR_END);
      cb();
    } catch (e) {
      cb(e as Error);
    }
  }
}
