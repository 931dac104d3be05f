// The encrypted object format (issue 13, design "Object format (version 1)"): round trips through the
// buffer and stream forms, the byte layout checked against an independent construction from the
// spec, and every alteration a store or an attacker can make refused before its plaintext is emitted.
import { createCipheriv, createHash, createHmac, hkdfSync, randomBytes } from 'node:crypto';
import { Readable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import {
  CIPHER,
  decryptBuffer,
  decryptStream,
  deriveSubkey,
  encryptBuffer,
  encryptedSize,
  encryptReopenable,
  encryptStream,
  FRAME_LOG2,
  HEADER_BYTES,
  TAG_BYTES,
  type Key,
} from '../../src/crypto/frames.js';

const F = 2 ** FRAME_LOG2;
const FS = F + TAG_BYTES;
const K1: Key = { id: 'k1', key: randomBytes(32) };
const K2: Key = { id: 'k2', key: randomBytes(32) };
const OBJ = 'wal/0000000100000000/000000010000000000000001';

/** Deterministic pseudo-random chunk sizes 1..max, so a failure reproduces. */
function chunked(buf: Buffer, max: number, seed = 1): Buffer[] {
  const out: Buffer[] = [];
  let s = seed;
  for (let at = 0; at < buf.length; ) {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    const n = 1 + (s % max);
    out.push(buf.subarray(at, at + n));
    at += n;
  }
  return out;
}

/** Everything `t` emitted from `chunks`, and the error it ended with (if any). */
async function run(t: Transform, chunks: Buffer[]): Promise<{ out: Buffer; err: unknown }> {
  const got: Buffer[] = [];
  const err = await pipeline(Readable.from(chunks), t, async (src) => {
    for await (const c of src) got.push(c as Buffer);
  }).then(
    () => undefined,
    (e: unknown) => e,
  );
  return { out: Buffer.concat(got), err };
}

async function decryptAll(stored: Buffer, key = K1, obj = OBJ, max = 100_000) {
  return run(decryptStream(key, obj, 'obj'), chunked(stored, max));
}

/** The error of decrypting `stored` both ways; they must agree. */
async function refusal(stored: Buffer, key = K1, obj = OBJ): Promise<string> {
  let bufErr: unknown;
  try {
    decryptBuffer(key, obj, stored, 'obj');
  } catch (e) {
    bufErr = e;
  }
  const { err } = await decryptAll(stored, key, obj);
  expect(bufErr).toMatchObject({ code: 'IntegrityError', exitCode: 10 });
  expect(err).toMatchObject({ code: 'IntegrityError', exitCode: 10 });
  expect((err as Error).message).toBe((bufErr as Error).message);
  return (err as Error).message;
}

const frame = (stored: Buffer, i: number) => stored.subarray(HEADER_BYTES + i * FS, HEADER_BYTES + (i + 1) * FS);
const header = (stored: Buffer) => stored.subarray(0, HEADER_BYTES);
const flip = (b: Buffer, at: number) => {
  const c = Buffer.from(b);
  c[at]! ^= 0x01;
  return c;
};

describe('crypto frames: format', () => {
  it('names the cipher and sizes: header, one tag per frame, at least one frame', () => {
    expect(CIPHER).toBe('aes-256-gcm-v1');
    expect(encryptedSize(0)).toBe(32 + 16);
    expect(encryptedSize(1)).toBe(32 + 1 + 16);
    expect(encryptedSize(F - 1)).toBe(32 + F - 1 + 16);
    expect(encryptedSize(F)).toBe(32 + F + 16);
    expect(encryptedSize(F + 1)).toBe(32 + F + 1 + 32);
    expect(encryptedSize(3 * F)).toBe(32 + 3 * F + 48);
    expect(encryptedSize(4096 * 3 + 1, 12)).toBe(32 + 4096 * 3 + 1 + 64);
  });

  it('lays out bytes exactly as the design fixes them (independent construction from the spec)', () => {
    const salt = randomBytes(24);
    const plain = randomBytes(2 * F + 100);
    const hdr = Buffer.concat([Buffer.from([0x57, 0x56, 0x58, 0x31, 16, 0, 0, 0]), salt]);
    const info = Buffer.concat([Buffer.from('walvault/aes-256-gcm/v1\0k1\0'), Buffer.from(OBJ)]);
    const sub = Buffer.from(hkdfSync('sha256', K1.key, salt, info, 32));
    const parts = [hdr];
    for (let i = 0; i < 3; i++) {
      const nonce = Buffer.alloc(12);
      nonce.writeBigUInt64BE(BigInt(i), 0);
      nonce.writeUInt32BE(i === 2 ? 1 : 0, 8);
      const c = createCipheriv('aes-256-gcm', sub, nonce);
      c.setAAD(hdr);
      parts.push(c.update(plain.subarray(i * F, (i + 1) * F)), c.final(), c.getAuthTag());
    }
    const expected = Buffer.concat(parts);
    expect(encryptBuffer(K1, OBJ, plain, { salt }).equals(expected)).toBe(true);
    expect(decryptBuffer(K1, OBJ, expected, 'obj').equals(plain)).toBe(true);
  });

  it('writes a fresh random salt per object', () => {
    const a = encryptBuffer(K1, OBJ, Buffer.from('same'));
    const b = encryptBuffer(K1, OBJ, Buffer.from('same'));
    expect(a.subarray(8, 32).equals(b.subarray(8, 32))).toBe(false);
    expect(a.equals(b)).toBe(false);
  });

  it('derives the subkey by RFC 5869 also for object keys beyond hkdfSync\'s 1024-byte info', async () => {
    const salt = randomBytes(24);
    const reference = (objectKey: string) => {
      const prk = createHmac('sha256', salt).update(K1.key).digest();
      return createHmac('sha256', prk).update(`walvault/aes-256-gcm/v1\0k1\0${objectKey}`).update(Buffer.of(1)).digest();
    };
    expect(deriveSubkey(K1, salt, OBJ).equals(reference(OBJ))).toBe(true);
    const long = `backups/${'x'.repeat(1100)}`;
    expect(deriveSubkey(K1, salt, long).equals(reference(long))).toBe(true);
    const stored = encryptBuffer(K1, long, randomBytes(1000));
    expect(decryptBuffer(K1, long, stored, 'obj')).toHaveLength(1000);
    await expect(refusal(stored, K1, `${long}y`)).resolves.toMatch(/frame 0 does not authenticate/);
  });
});

describe('crypto frames: round trips', () => {
  const sizes = [0, 1, F - 1, F, F + 1, 3 * F, 5_000_003];
  for (const n of sizes) {
    it(`${n} bytes: buffer and stream forms agree byte for byte and decrypt to the plaintext`, async () => {
      const plain = randomBytes(n);
      const salt = randomBytes(24);
      const stored = encryptBuffer(K1, OBJ, plain, { salt });
      expect(stored.length).toBe(encryptedSize(n));
      expect(decryptBuffer(K1, OBJ, stored, 'obj').equals(plain)).toBe(true);
      const enc = await run(encryptStream(K1, OBJ, { salt }), chunked(plain, 200_000, n));
      expect(enc.err).toBeUndefined();
      expect(enc.out.equals(stored)).toBe(true);
      const dec = await decryptAll(stored, K1, OBJ, 150_000);
      expect(dec.err).toBeUndefined();
      expect(dec.out.equals(plain)).toBe(true);
    });
  }

  it('handles 1-byte chunks both ways (4 KiB frames)', async () => {
    const plain = randomBytes(3 * 4096 + 5);
    const salt = randomBytes(24);
    const stored = encryptBuffer(K1, OBJ, plain, { salt, frameLog2: 12 });
    const enc = await run(encryptStream(K1, OBJ, { salt, frameLog2: 12 }), chunked(plain, 1));
    expect(enc.out.equals(stored)).toBe(true);
    const dec = await run(decryptStream(K1, OBJ, 'obj'), chunked(stored, 1));
    expect(dec.err).toBeUndefined();
    expect(dec.out.equals(plain)).toBe(true);
  });

  it('reads any frame size 2^12..2^24 a header declares', () => {
    for (const log2 of [12, 24]) {
      const plain = randomBytes(10_000);
      const stored = encryptBuffer(K1, OBJ, plain, { frameLog2: log2 });
      expect(stored[4]).toBe(log2);
      expect(stored.length).toBe(encryptedSize(10_000, log2));
      expect(decryptBuffer(K1, OBJ, stored, 'obj').equals(plain)).toBe(true);
    }
  });

  it('decrypts with whichever key of the keyring encrypted (the key is a parameter)', () => {
    const stored = encryptBuffer(K2, OBJ, Buffer.from('rotated'));
    expect(decryptBuffer(K2, OBJ, stored, 'obj').toString()).toBe('rotated');
  });
});

describe('crypto frames: refusals', () => {
  const plain = randomBytes(3 * F + 1000); // frames 0..2 full, frame 3 final with 1000 bytes
  const stored = encryptBuffer(K1, OBJ, plain);

  it('a flipped bit in the header salt, a middle frame, a tag', async () => {
    await expect(refusal(flip(stored, 20))).resolves.toMatch(/^obj: frame 0 does not authenticate/);
    await expect(refusal(flip(stored, HEADER_BYTES + FS + 500))).resolves.toMatch(/^obj: frame 1 does not authenticate/);
    await expect(refusal(flip(stored, HEADER_BYTES + 3 * FS - 1))).resolves.toMatch(/^obj: frame 2 does not authenticate/);
    await expect(refusal(flip(stored, stored.length - 1))).resolves.toMatch(/^obj: frame 3 does not authenticate/);
  });

  it('a bad magic, frame size or reserved byte in the header', async () => {
    await expect(refusal(flip(stored, 0))).resolves.toMatch(/does not start with WVX1/);
    for (const log2 of [11, 25]) {
      const h = Buffer.from(stored);
      h[4] = log2;
      await expect(refusal(h)).resolves.toMatch(new RegExp(`frame size 2\\^${log2}, outside`));
    }
    await expect(refusal(flip(stored, 6))).resolves.toMatch(/non-zero reserved bytes/);
  });

  it('truncation at a frame boundary, mid-frame, after the header, inside the header, to nothing', async () => {
    await expect(refusal(stored.subarray(0, HEADER_BYTES + 3 * FS))).resolves.toMatch(/^obj: frame 2 does not authenticate: the object was altered, truncated/);
    await expect(refusal(stored.subarray(0, HEADER_BYTES + FS))).resolves.toMatch(/^obj: frame 0 does not authenticate/);
    await expect(refusal(stored.subarray(0, stored.length - 100))).resolves.toMatch(/^obj: frame 3 does not authenticate/);
    await expect(refusal(stored.subarray(0, HEADER_BYTES + 2 * FS + 5))).resolves.toBe('obj: truncated: frame 2 has 5 bytes, fewer than its 16-byte tag');
    await expect(refusal(stored.subarray(0, HEADER_BYTES))).resolves.toBe('obj: truncated: frame 0 has 0 bytes, fewer than its 16-byte tag');
    await expect(refusal(stored.subarray(0, 10))).resolves.toBe('obj: truncated: 10 bytes, less than the 32-byte encryption header');
    await expect(refusal(Buffer.alloc(0))).resolves.toBe('obj: empty (0 bytes), not an encrypted object');
  });

  it('swapped, dropped and duplicated frames', async () => {
    const f = [0, 1, 2].map((i) => frame(stored, i));
    const tail = stored.subarray(HEADER_BYTES + 3 * FS);
    const hdr = header(stored);
    await expect(refusal(Buffer.concat([hdr, f[1]!, f[0]!, f[2]!, tail]))).resolves.toMatch(/frame 0 does not authenticate/);
    await expect(refusal(Buffer.concat([hdr, f[0]!, f[2]!, tail]))).resolves.toMatch(/frame 1 does not authenticate/);
    await expect(refusal(Buffer.concat([hdr, f[0]!, f[0]!, f[1]!, f[2]!, tail]))).resolves.toMatch(/frame 1 does not authenticate/);
    // The final frame moved up: authentic as final only at its own index.
    await expect(refusal(Buffer.concat([hdr, f[0]!, tail]))).resolves.toMatch(/frame 1 does not authenticate/);
  });

  it('trailing bytes, short or a whole frame long', async () => {
    await expect(refusal(Buffer.concat([stored, Buffer.of(0)]))).resolves.toMatch(/frame 3 does not authenticate/);
    await expect(refusal(Buffer.concat([stored, frame(stored, 1)]))).resolves.toMatch(/frame 3 does not authenticate/);
    const empty = encryptBuffer(K1, OBJ, Buffer.alloc(0));
    await expect(refusal(Buffer.concat([empty, Buffer.alloc(3)]))).resolves.toMatch(/frame 0 does not authenticate/);
  });

  it('another object key, another key, the same key under another id; the message names the key id', async () => {
    await expect(refusal(stored, K1, 'wal/0000000100000000/000000010000000000000002')).resolves.toMatch(/frame 0 does not authenticate/);
    await expect(refusal(stored, K2)).resolves.toMatch(/frame 0 does not authenticate: .* or key k2 is not the key it was encrypted with$/);
    await expect(refusal(stored, { id: 'k1-copy', key: K1.key })).resolves.toMatch(/key k1-copy is not the key/);
    const msg = await refusal(stored, K2);
    expect(msg).not.toContain(K1.key.toString('hex'));
    expect(msg).not.toContain(K2.key.toString('hex'));
  });

  it('never emits plaintext of a frame before its tag verified', async () => {
    // Frame 2 altered: exactly frames 0 and 1 come out, then the error.
    const bad = await decryptAll(flip(stored, HEADER_BYTES + 2 * FS + 7), K1, OBJ, 7000);
    expect(bad.err).toMatchObject({ code: 'IntegrityError' });
    expect(bad.out.equals(plain.subarray(0, 2 * F))).toBe(true);
    // Cut after frame 2: frame 2 was not sealed as final, so it is never emitted.
    const cut = await decryptAll(stored.subarray(0, HEADER_BYTES + 3 * FS), K1, OBJ, 7000);
    expect(cut.err).toMatchObject({ code: 'IntegrityError' });
    expect(cut.out.equals(plain.subarray(0, 2 * F))).toBe(true);
  });

  it('holds back a whole frame until a byte beyond it shows it is not the last', async () => {
    const d = decryptStream(K1, OBJ, 'obj');
    const got: Buffer[] = [];
    d.on('data', (c: Buffer) => got.push(c));
    d.write(stored.subarray(0, HEADER_BYTES + FS));
    await new Promise((r) => setImmediate(r));
    expect(got).toEqual([]);
    d.write(stored.subarray(HEADER_BYTES + FS, HEADER_BYTES + FS + 1));
    await new Promise((r) => setImmediate(r));
    expect(Buffer.concat(got).equals(plain.subarray(0, F))).toBe(true);
    d.destroy();
  });
});

describe('crypto frames: two passes over one plaintext', () => {
  const plain = randomBytes(3 * F + 123);

  it('expectTags: the same plaintext gives the same bytes; a changed frame is not emitted', async () => {
    const salt = randomBytes(24);
    const tags: Buffer[] = [];
    const first = await run(encryptStream(K1, OBJ, { salt, onTag: (i, t) => (tags[i] = t) }), chunked(plain, 50_000));
    expect(tags).toHaveLength(4);
    const again = await run(encryptStream(K1, OBJ, { salt, expectTags: tags }), chunked(plain, 70_000, 9));
    expect(again.err).toBeUndefined();
    expect(again.out.equals(first.out)).toBe(true);

    const changed = flip(plain, 2 * F + 3);
    const bad = await run(encryptStream(K1, OBJ, { salt, expectTags: tags }), chunked(changed, 20_000));
    expect(bad.err).toMatchObject({ code: 'IntegrityError', retryable: false });
    expect((bad.err as Error).message).toMatch(/changed between two reads for encryption \(frame 2 differs\)/);
    expect(bad.out.equals(first.out.subarray(0, HEADER_BYTES + 2 * FS))).toBe(true);

    for (const other of [plain.subarray(0, 2 * F + 10), Buffer.concat([plain, Buffer.alloc(F)])]) {
      const r = await run(encryptStream(K1, OBJ, { salt, expectTags: tags }), [other]);
      expect(r.err).toMatchObject({ code: 'IntegrityError' });
      expect(r.out.equals(first.out.subarray(0, r.out.length))).toBe(true);
    }
  });

  it('expectTags from a pass with another frame count: a change at the first frame past it, not a crash', async () => {
    const salt = randomBytes(24);
    const tags: Buffer[] = [];
    const first = await run(encryptStream(K1, OBJ, { salt, onTag: (i, t) => (tags[i] = t) }), [plain]);
    const r = await run(encryptStream(K1, OBJ, { salt, expectTags: tags.slice(0, 2) }), chunked(plain, 20_000));
    expect(r.err).toMatchObject({ code: 'IntegrityError', retryable: false });
    expect((r.err as Error).message).toMatch(/frame 1 differs/);
    expect(r.out.equals(first.out.subarray(0, HEADER_BYTES + FS))).toBe(true);
  });

  it('encryptReopenable: size and MD5 are those of what open() yields, every time', async () => {
    const body = await encryptReopenable(K1, OBJ, () => Readable.from(chunked(plain, 30_000)));
    expect(body.size).toBe(encryptedSize(plain.length));
    const a = await collect(body.open());
    const b = await collect(body.open());
    expect(a.length).toBe(body.size);
    expect(createHash('md5').update(a).digest('base64')).toBe(body.md5);
    expect(a.equals(b)).toBe(true);
    expect(decryptBuffer(K1, OBJ, a, 'obj').equals(plain)).toBe(true);
  });

  it('encryptReopenable: a source that changed since pass 1 errors before the changed frame', async () => {
    let calls = 0;
    const body = await encryptReopenable(K1, OBJ, () => Readable.from(chunked(++calls <= 2 ? plain : flip(plain, F + 9), 10_000)));
    const good = await collect(body.open());
    const got: Buffer[] = [];
    const err = await (async () => {
      for await (const c of body.open()) got.push(c as Buffer);
    })().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'IntegrityError', retryable: false });
    expect((err as Error).message).toMatch(/frame 1 differs/);
    // What came out is the first pass's bytes up to frame 1, never frame 1 itself.
    const out = Buffer.concat(got);
    expect(out.length).toBeLessThanOrEqual(HEADER_BYTES + FS);
    expect(out.equals(good.subarray(0, out.length))).toBe(true);
  });

  it('encryptReopenable: a source error reaches the reader of open()', async () => {
    let calls = 0;
    const body = await encryptReopenable(K1, OBJ, () => {
      if (++calls === 1) return Readable.from([plain]);
      const r = new Readable({ read() {} });
      r.push(plain.subarray(0, 1000));
      setImmediate(() => r.destroy(new Error('disk gone')));
      return r;
    });
    await expect(collect(body.open())).rejects.toThrow('disk gone');
  });

  it('encryptReopenable: a pass 1 source error rejects; destroying an open() stream closes its source', async () => {
    await expect(encryptReopenable(K1, OBJ, () => Readable.from((async function* () {
      yield plain.subarray(0, 10);
      throw new Error('read failed');
    })()))).rejects.toThrow('read failed');
    const sources: Readable[] = [];
    const body = await encryptReopenable(K1, OBJ, () => {
      const r = Readable.from(chunked(plain, 10_000));
      sources.push(r);
      return r;
    });
    const s = body.open();
    s.destroy();
    await new Promise((r) => setImmediate(r));
    expect(sources).toHaveLength(2);
    expect(sources[1]!.destroyed).toBe(true);
  });
});

async function collect(r: Readable): Promise<Buffer> {
  const got: Buffer[] = [];
  for await (const c of r) got.push(c as Buffer);
  return Buffer.concat(got);
}
