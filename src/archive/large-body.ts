import { createHash, type Hash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { open } from 'node:fs/promises';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

// Bodies of WAL files too large to hold in memory (local-wal.ts): read from a descriptor for each
// upload attempt. Streaming a gigabyte through Node allocates a fresh Buffer per chunk (file reads,
// compressor output); they die at once, but V8 frees their memory only at a garbage collection, and
// with a small JS heap that comes only after ~64 MiB of such garbage. With two files in flight that
// garbage alone would double walvault's resident size, so streamed bytes are counted and a minor
// (young generation) collection, ~1 ms, is run every GC_EVERY bytes. Only files above
// IN_MEMORY_MAX get here (the default 16 MiB segment never does). Measured without it (test
// `trust: large segments are pushed in bounded memory`, two 128 MiB zstd segments in one process):
// peak RSS 142-164 MiB instead of 111-112 MiB. The chunks pushed by readRange are not pooled: the
// consumer (the HTTP request, the multipart chunker) keeps references to them with no signal when
// it is done, so a reused buffer could change bytes still to be sent.

const GC_EVERY = 16 * 1024 * 1024;
const READ_CHUNK = 256 * 1024;

let minorGc: (() => void) | null | undefined;
let sinceGc = 0;

function collector(): (() => void) | null {
  if (minorGc !== undefined) return minorGc;
  try {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as (o?: { type: string }) => void;
    minorGc = typeof gc === 'function' ? () => gc({ type: 'minor' }) : null;
  } catch {
    minorGc = null; // only a larger peak; never a failure
  }
  return minorGc;
}

/**
 * Keeps V8's young generation at its initial size (1 MiB semi-spaces) instead of letting it grow to
 * 16 MiB ones while the AWS SDK loads: ~14 MiB less resident memory for a process that uploads WAL,
 * for a few more (short) young-generation collections. Set while the process runs, before the SDK.
 */
export function smallYoungGeneration(): void {
  try {
    setFlagsFromString('--semi-space-growth-factor=1');
  } catch {
    // only a larger peak
  }
}

/**
 * Frees the memory of Buffers nothing will read again, now, by detaching their ArrayBuffers (a Buffer
 * left on one reads as empty): the compressed body of a 16 MiB segment once uploaded, the
 * compressor's output pieces once joined into it. Garbage-collected instead, they would stay: a body
 * lives through its upload, long enough to be promoted to V8's old generation, and V8 collects that
 * for memory outside its heap only after ~64 MiB more of it (a look-ahead batch of 9 segments kept
 * ~30 MiB of dead bodies; a forced full collection costs 15-30 ms each time). Only ArrayBuffers
 * larger than Node's Buffer pool are detached, and a failure to detach is never an error.
 */
export function freeNow(buffers: Buffer[]): void {
  for (const b of new Set(buffers.map((x) => x.buffer as Detachable))) {
    // Node serves small Buffers from shared pools of Buffer.poolSize bytes (64 KiB in Node 24).
    if (!(b instanceof ArrayBuffer) || b.byteLength <= Math.max(Buffer.poolSize, 64 * 1024) || b.detached) continue;
    try {
      b.transfer(0);
    } catch {
      // Some are not detachable (Node marks those it shares with native code): left to the GC.
    }
  }
}

/** ES2024's ArrayBuffer (Node >= 21), beyond the TypeScript lib this project targets. */
type Detachable = ArrayBufferLike & { detached: boolean; transfer(length: number): ArrayBuffer };

/** Call with the size of every chunk streamed. */
export function streamed(bytes: number): void {
  sinceGc += bytes;
  if (sinceGc < GC_EVERY) return;
  sinceGc = 0;
  collector()?.();
}

/** `size` bytes of `fh` from offset 0, as a stream of its own (one per upload attempt). */
export function readRange(fh: FileHandle, size: number): Readable {
  let pos = 0;
  return new Readable({
    highWaterMark: READ_CHUNK,
    read() {
      const want = Math.min(READ_CHUNK, size - pos);
      if (want <= 0) {
        this.push(null);
        return;
      }
      fh.read(Buffer.allocUnsafeSlow(want), 0, want, pos).then(
        ({ bytesRead, buffer }) => {
          if (bytesRead === 0) {
            this.destroy(new Error(`file ended at ${pos} of ${size} bytes`));
            return;
          }
          pos += bytesRead;
          streamed(bytesRead);
          this.push(bytesRead === want ? buffer : buffer.subarray(0, bytesRead));
        },
        (e: unknown) => this.destroy(e as Error),
      );
    },
  });
}

/** Opens a spooled body for reading; the handle is kept until the body is disposed. */
export const openBody = (path: string): Promise<FileHandle> => open(path, 'r');

/** Pass-through that computes the MD5 (base64, for Content-MD5) and size of what is stored. */
export class Md5Count extends Transform {
  private readonly hash: Hash = createHash('md5');
  bytes = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    streamed(chunk.length);
    cb(null, chunk);
  }
  digest(): string {
    return this.hash.digest('base64');
  }
}
