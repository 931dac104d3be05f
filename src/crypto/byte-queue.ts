// Bytes from a stream, cut into frames of a fixed size whatever the chunks look like. A frame lying in
// one chunk is a view of it (no copy); one spanning chunks is copied once. Consumed chunks are
// dropped by index and the array compacted now and then, so a stream of 1-byte chunks costs O(1)
// per chunk rather than an Array.shift() over up to a frame's worth of entries.

export class ByteQueue {
  private chunks: Buffer[] = [];
  /** Index of the first chunk still holding bytes, and the offset of its first unread byte. */
  private first = 0;
  private offset = 0;
  length = 0;

  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    this.length += chunk.length;
  }

  /** The next `n` bytes (n <= length). */
  take(n: number): Buffer {
    if (n > this.length) throw new RangeError(`ByteQueue: ${n} bytes asked, ${this.length} held`);
    this.length -= n;
    const head = this.chunks[this.first];
    if (n === 0 || head === undefined) return Buffer.alloc(0);
    if (head.length - this.offset >= n) {
      const view = head.subarray(this.offset, this.offset + n);
      this.advance(head, n);
      return view;
    }
    const out = Buffer.allocUnsafe(n);
    for (let o = 0; o < n; ) {
      const c = this.chunks[this.first]!;
      const k = Math.min(c.length - this.offset, n - o);
      c.copy(out, o, this.offset, this.offset + k);
      o += k;
      this.advance(c, k);
    }
    return out;
  }

  private advance(c: Buffer, k: number): void {
    this.offset += k;
    if (this.offset < c.length) return;
    this.chunks[this.first++] = EMPTY; // the chunk can be collected now
    this.offset = 0;
    if (this.first === this.chunks.length) {
      this.chunks = [];
      this.first = 0;
    } else if (this.first >= 1024 && this.first * 2 >= this.chunks.length) {
      this.chunks = this.chunks.slice(this.first);
      this.first = 0;
    }
  }
}

const EMPTY = Buffer.alloc(0);
