import { createCipheriv, createDecipheriv, createHash, createHmac, hkdfSync, randomBytes } from 'node:crypto';
import { pipeline, Transform, type Readable, type TransformCallback } from 'node:stream';
import { pipeline as pipelineAsync } from 'node:stream/promises';
import { integrityError, internalError } from '../common/errors.js';
import { ByteQueue } from './byte-queue.js';

// Encrypted object format, version 1 (design: README "Encryption"): HEADER || FRAME_0 || ... ||
// FRAME_{n-1}. HEADER = "WVX1", frameLog2, 3 zero bytes, 24-byte random salt. Each frame is F = 2^frameLog2
// plaintext bytes (the last one 0..F) sealed with AES-256-GCM under a per-object subkey
// HKDF-SHA256(master, salt, "walvault/aes-256-gcm/v1\0" keyId "\0" objectKey), nonce = uint64be(index)
// || uint32be(final), AAD = HEADER, followed by its 16-byte tag. Binding the index and the final flag in
// the nonce makes reordered, dropped, duplicated or cut-off frames fail authentication; binding the key
// id and object key in the subkey makes an object copied to another name, or metadata naming another
// key, fail too. Nothing is emitted from a frame before its tag verified.

export const CIPHER = 'aes-256-gcm-v1';
export const HEADER_BYTES = 32;
export const TAG_BYTES = 16;
export const FRAME_LOG2 = 16;
export const SALT_BYTES = 24;
const MAGIC = Buffer.from('WVX1', 'latin1');
const MIN_FRAME_LOG2 = 12;
const MAX_FRAME_LOG2 = 24;
const INFO_PREFIX = 'walvault/aes-256-gcm/v1\0';

export interface Key {
  id: string;
  /** 32 bytes. */
  key: Buffer;
}

export interface EncryptOptions {
  /** Reuse a salt (a second pass producing the same bytes); a fresh random one otherwise. */
  salt?: Buffer;
  /** Writers use FRAME_LOG2; other sizes (readers accept 12..24) for tests. */
  frameLog2?: number;
}

/** Stored bytes of an object of `plainBytes`: header, plaintext, one tag per frame (at least one). */
export function encryptedSize(plainBytes: number, frameLog2 = FRAME_LOG2): number {
  return HEADER_BYTES + plainBytes + TAG_BYTES * Math.max(1, Math.ceil(plainBytes / 2 ** frameLog2));
}

/** The per-object subkey. Exported for its test: hkdfSync and the HMAC form must agree. */
export function deriveSubkey(key: Key, salt: Buffer, objectKey: string): Buffer {
  if (key.key.length !== 32) throw internalError(`encryption key ${key.id} is ${key.key.length} bytes, not 32`);
  const info = Buffer.from(`${INFO_PREFIX}${key.id}\0${objectKey}`, 'utf8');
  if (info.length <= 1024) return Buffer.from(hkdfSync('sha256', key.key, salt, info, 32));
  // hkdfSync refuses an info above 1024 bytes (an OpenSSL limit); RFC 5869 for one 32-byte output
  // block is these two HMACs, so a long object key gets the same derivation.
  const prk = createHmac('sha256', salt).update(key.key).digest();
  return createHmac('sha256', prk).update(info).update(Buffer.of(1)).digest();
}

function makeHeader(frameLog2: number, salt: Buffer): Buffer {
  if (salt.length !== SALT_BYTES) throw internalError(`encryption salt is ${salt.length} bytes, not ${SALT_BYTES}`);
  if (!(frameLog2 >= MIN_FRAME_LOG2 && frameLog2 <= MAX_FRAME_LOG2)) throw internalError(`frameLog2 ${frameLog2} is outside ${MIN_FRAME_LOG2}..${MAX_FRAME_LOG2}`);
  const h = Buffer.alloc(HEADER_BYTES);
  MAGIC.copy(h, 0);
  h[4] = frameLog2;
  salt.copy(h, 8);
  return h;
}

/** Checks a stored header; returns its frameLog2. */
function parseHeader(h: Buffer, where: string): number {
  if (!h.subarray(0, 4).equals(MAGIC)) throw integrityError(`${where}: no encryption header (the object does not start with WVX1)`);
  const log2 = h[4]!;
  if (log2 < MIN_FRAME_LOG2 || log2 > MAX_FRAME_LOG2) throw integrityError(`${where}: encryption header has frame size 2^${log2}, outside 2^${MIN_FRAME_LOG2}..2^${MAX_FRAME_LOG2}`);
  if (h[5] !== 0 || h[6] !== 0 || h[7] !== 0) throw integrityError(`${where}: encryption header has non-zero reserved bytes`);
  return log2;
}

function nonce(i: number, final: boolean): Buffer {
  const n = Buffer.alloc(12);
  n.writeUInt32BE(Math.floor(i / 2 ** 32), 0);
  n.writeUInt32BE(i >>> 0, 4);
  n.writeUInt32BE(final ? 1 : 0, 8);
  return n;
}

/** The frames of one object: what the header fixes (subkey, AAD, frame size). */
class Sealer {
  readonly frame: number;
  private readonly subkey: Buffer;
  constructor(
    readonly key: Key,
    objectKey: string,
    readonly header: Buffer,
  ) {
    this.frame = 2 ** header[4]!;
    this.subkey = deriveSubkey(key, header.subarray(8, 8 + SALT_BYTES), objectKey);
  }

  /** Ciphertext and tag of frame `i` (GCM: the ciphertext is as long as the plaintext). */
  seal(i: number, final: boolean, plain: Buffer): { ct: Buffer; tag: Buffer } {
    const c = createCipheriv('aes-256-gcm', this.subkey, nonce(i, final));
    c.setAAD(this.header);
    const ct = c.update(plain);
    c.final();
    return { ct, tag: c.getAuthTag() };
  }

  /** The plaintext of stored frame `i` (ciphertext || tag), only once its tag verified. */
  open(i: number, final: boolean, frame: Buffer, where: string): Buffer {
    const d = createDecipheriv('aes-256-gcm', this.subkey, nonce(i, final), { authTagLength: TAG_BYTES });
    d.setAAD(this.header);
    d.setAuthTag(frame.subarray(frame.length - TAG_BYTES));
    const plain = d.update(frame.subarray(0, frame.length - TAG_BYTES));
    try {
      d.final();
    } catch {
      throw integrityError(
        `${where}: frame ${i} does not authenticate: the object was altered, truncated, or stored under another name, ` +
          `or key ${this.key.id} is not the key it was encrypted with`,
      );
    }
    return plain;
  }
}

function writeSealer(key: Key, objectKey: string, opts: EncryptOptions): Sealer {
  return new Sealer(key, objectKey, makeHeader(opts.frameLog2 ?? FRAME_LOG2, opts.salt ?? randomBytes(SALT_BYTES)));
}

const tooShort = (where: string, i: number, bytes: number) =>
  integrityError(`${where}: truncated: frame ${i} has ${bytes} bytes, fewer than its ${TAG_BYTES}-byte tag`);

const headerMissing = (where: string, bytes: number) =>
  integrityError(bytes === 0 ? `${where}: empty (0 bytes), not an encrypted object` : `${where}: truncated: ${bytes} bytes, less than the ${HEADER_BYTES}-byte encryption header`);

export function encryptBuffer(key: Key, objectKey: string, plain: Buffer, opts: EncryptOptions = {}): Buffer {
  const s = writeSealer(key, objectKey, opts);
  const n = Math.max(1, Math.ceil(plain.length / s.frame));
  const out = Buffer.allocUnsafe(HEADER_BYTES + plain.length + n * TAG_BYTES);
  let o = s.header.copy(out, 0);
  for (let i = 0; i < n; i++) {
    const { ct, tag } = s.seal(i, i === n - 1, plain.subarray(i * s.frame, (i + 1) * s.frame));
    o += ct.copy(out, o);
    o += tag.copy(out, o);
  }
  return out;
}

export function decryptBuffer(key: Key, objectKey: string, stored: Buffer, where: string): Buffer {
  if (stored.length < HEADER_BYTES) throw headerMissing(where, stored.length);
  const header = stored.subarray(0, HEADER_BYTES);
  parseHeader(header, where);
  const s = new Sealer(key, objectKey, header);
  const full = s.frame + TAG_BYTES;
  const body = stored.length - HEADER_BYTES;
  const n = Math.max(1, Math.ceil(body / full));
  const last = body - (n - 1) * full;
  if (last < TAG_BYTES) throw tooShort(where, n - 1, last);
  const out = Buffer.allocUnsafe(body - n * TAG_BYTES);
  for (let i = 0, o = 0; i < n; i++) {
    const at = HEADER_BYTES + i * full;
    o += s.open(i, i === n - 1, stored.subarray(at, Math.min(at + full, stored.length)), where).copy(out, o);
  }
  return out;
}

export interface EncryptStreamOptions extends EncryptOptions {
  /** Tags of a previous pass with the same salt: a frame whose tag differs is not emitted. */
  expectTags?: Buffer[];
  onTag?: (i: number, tag: Buffer) => void;
}

/**
 * Plaintext in, stored bytes out (header first). A full frame is sealed only once a byte beyond it
 * arrived, since the last frame is sealed as final and may be exactly F bytes.
 */
class EncryptStream extends Transform {
  private readonly q = new ByteQueue();
  private i = 0;
  private started = false;
  constructor(
    private readonly s: Sealer,
    private readonly objectKey: string,
    private readonly opts: EncryptStreamOptions,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      this.start();
      this.q.push(chunk);
      while (this.q.length > this.s.frame) this.emit1(false, this.q.take(this.s.frame));
      cb();
    } catch (e) {
      cb(e as Error);
    }
  }

  override _flush(cb: TransformCallback): void {
    try {
      this.start();
      this.emit1(true, this.q.take(this.q.length));
      cb();
    } catch (e) {
      cb(e as Error);
    }
  }

  private start(): void {
    if (this.started) return;
    this.started = true;
    this.push(this.s.header);
  }

  private emit1(final: boolean, plain: Buffer): void {
    const i = this.i++;
    const expect = this.opts.expectTags;
    // Same salt, same index, same flag = same nonce: bytes that differ from the first pass would be a
    // second plaintext under that nonce, which GCM must never publish. So compare before pushing.
    const lastExpected = expect ? expect.length - 1 : 0;
    if (expect && (final ? i !== lastExpected : i >= lastExpected)) throw changed(this.objectKey, i);
    const { ct, tag } = this.s.seal(i, final, plain);
    if (expect && !tag.equals(expect[i]!)) throw changed(this.objectKey, i);
    this.opts.onTag?.(i, tag);
    this.push(ct);
    this.push(tag);
  }
}

// Not retryable: another pass over the same changed source fails the same way.
const changed = (objectKey: string, i: number) =>
  integrityError(`${objectKey}: the data changed between two reads for encryption (frame ${i} differs); nothing of it was sent`, { retryable: false });

export function encryptStream(key: Key, objectKey: string, opts: EncryptStreamOptions = {}): Transform {
  return new EncryptStream(writeSealer(key, objectKey, opts), objectKey, opts);
}

/**
 * Stored bytes in, plaintext out. The reader cannot know a frame is the last before the end of the
 * input, so the last F+16 bytes are always held back: memory is one frame plus one input chunk.
 */
class DecryptStream extends Transform {
  private readonly q = new ByteQueue();
  private s: Sealer | undefined;
  private i = 0;
  constructor(
    private readonly key: Key,
    private readonly objectKey: string,
    private readonly where: string,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      this.q.push(chunk);
      if (!this.s) {
        if (this.q.length < HEADER_BYTES) return cb();
        const header = this.q.take(HEADER_BYTES);
        parseHeader(header, this.where);
        this.s = new Sealer(this.key, this.objectKey, header);
      }
      const full = this.s.frame + TAG_BYTES;
      while (this.q.length > full) this.push(this.s.open(this.i++, false, this.q.take(full), this.where));
      cb();
    } catch (e) {
      cb(e as Error);
    }
  }

  override _flush(cb: TransformCallback): void {
    try {
      if (!this.s) throw headerMissing(this.where, this.q.length);
      if (this.q.length < TAG_BYTES) throw tooShort(this.where, this.i, this.q.length);
      this.push(this.s.open(this.i, true, this.q.take(this.q.length), this.where));
      cb();
    } catch (e) {
      cb(e as Error);
    }
  }
}

export function decryptStream(key: Key, objectKey: string, where: string): Transform {
  return new DecryptStream(key, objectKey, where);
}

/**
 * A body for a PUT that needs its size and Content-MD5 before sending: pass 1 reads the plaintext
 * once and keeps the tags; each open() is another pass with the same salt, checked frame by frame
 * against them (a source that changed in between errors before the changed frame is emitted).
 */
export async function encryptReopenable(
  key: Key,
  objectKey: string,
  openPlain: () => Readable,
  opts: { frameLog2?: number } = {},
): Promise<{ size: number; md5: string; open(): Readable }> {
  const salt = randomBytes(SALT_BYTES);
  const tags: Buffer[] = [];
  const md5 = createHash('md5');
  let size = 0;
  await pipelineAsync(openPlain(), encryptStream(key, objectKey, { ...opts, salt, onTag: (i, t) => (tags[i] = t) }), async (stored) => {
    for await (const chunk of stored as AsyncIterable<Buffer>) {
      md5.update(chunk);
      size += chunk.length;
    }
  });
  return {
    size,
    md5: md5.digest('base64'),
    open(): Readable {
      const enc = encryptStream(key, objectKey, { ...opts, salt, expectTags: tags });
      // A source error reaches the consumer through enc; destroying enc destroys the source.
      pipeline(openPlain(), enc, () => undefined);
      return enc;
    },
  };
}
