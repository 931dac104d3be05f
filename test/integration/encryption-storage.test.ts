// The encryption layer (src/storage/encrypting.ts) over a real file:// repository: every way a body
// reaches the store (a buffer, a re-readable stream body, a multipart-style upload) is sealed, reads
// open it, sizes are the store's, the hash in the metadata is sealed, and a missing key, a
// tampered hash or a body that changed since it was hashed are refused. The keyring file checks
// and the frame format have their unit tests (test/unit/crypto-*.test.ts).
import { createHash, randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { afterAll, describe, expect, it } from 'vitest';
import { smallObjectMeta } from '../../src/archive/objects.js';
import { isWalvaultError } from '../../src/common/errors.js';
import { parseKeyring, type Keyring } from '../../src/crypto/keyring.js';
import { withEncryption } from '../../src/storage/encrypting.js';
import { createFileStorage } from '../../src/storage/file/driver.js';
import { storedSizeFor, type Storage } from '../../src/storage/types.js';
import { cleanupAll, tempDir } from '../support/walvault.js';

afterAll(cleanupAll);

const keyring = (...ids: string[]): Keyring => parseKeyring(ids.map((id) => `${id} ${randomBytes(32).toString('hex')}`).join('\n'), 'test keyring');
const md5 = (b: Buffer) => createHash('md5').update(b).digest('base64');
const codeOf = (e: unknown) => (isWalvaultError(e) ? e.code : String(e));

async function repo(ring: Keyring | null): Promise<{ dir: string; plain: Storage; sealed: Storage }> {
  const dir = await tempDir('wv-enc-storage');
  const plain = createFileStorage(dir);
  return { dir, plain, sealed: withEncryption(plain, ring) };
}

describe('encryption layer on a file:// repository', () => {
  it('encryption layer: buffer, stream body and upload are sealed, read back, and occupy storedSizeFor() bytes', async () => {
    const ring = keyring('a1');
    const { dir, plain, sealed } = await repo(ring);
    const marker = Buffer.from(`marker-${randomBytes(8).toString('hex')}`);
    const body = Buffer.concat([marker, randomBytes(200_000), marker]);
    const temp = join(dir, 'body.tmp');
    await writeFile(temp, body);
    await sealed.putIfAbsent('wal/a', body, smallObjectMeta(body));
    await sealed.put('wal/b', { size: body.length, md5: md5(body), open: () => Readable.from([body]) }, smallObjectMeta(body));
    const up = await sealed.upload('wal/c', Readable.from([body.subarray(0, 1000), body.subarray(1000)]), smallObjectMeta(body));
    expect(up.storedSize).toBe(storedSizeFor(sealed, body.length));
    for (const key of ['wal/a', 'wal/b', 'wal/c']) {
      const raw = await readFile(join(dir, key));
      expect(raw.includes(marker), key).toBe(false);
      const info = (await plain.head(key))!;
      expect(info.storedSize, key).toBe(storedSizeFor(sealed, body.length));
      expect(info.meta, key).toMatchObject({ cipher: 'aes-256-gcm-v1', 'key-id': 'a1' });
      expect(info.meta['sha256'], key).toBeUndefined();
      const got = (await sealed.get(key))!;
      expect(got.info.meta['sha256'], key).toBe(smallObjectMeta(body).sha256);
      expect((await buffer(got.body)).equals(body), key).toBe(true);
      expect((await sealed.head(key))!.meta['sha256'], key).toBe(smallObjectMeta(body).sha256);
    }
    // putIfAbsent on an existing object answers with its opened metadata (wal-push compares the hash).
    const again = await sealed.putIfAbsent('wal/a', body, smallObjectMeta(body));
    expect(again.created === false && again.existing.meta['sha256']).toBe(smallObjectMeta(body).sha256);
  });

  it('encryption layer: rotation: objects of an older key open while the first key seals new ones', async () => {
    const old = keyring('old');
    const { dir, sealed } = await repo(old);
    const body = randomBytes(5000);
    await sealed.put('state/x', body, smallObjectMeta(body));
    const rotated: Keyring = parseKeyring(`new ${randomBytes(32).toString('hex')}\nold ${old.current.key.toString('hex')}`, 'rotated');
    const after = withEncryption(createFileStorage(dir), rotated);
    await after.put('state/y', body, smallObjectMeta(body));
    expect((await after.head('state/x'))!.meta['key-id']).toBe('old');
    expect((await after.head('state/y'))!.meta['key-id']).toBe('new');
    for (const k of ['state/x', 'state/y']) expect((await buffer((await after.get(k))!.body)).equals(body), k).toBe(true);
  });

  it('encryption layer: without the key, or without any keyring, a read names the key id (ConfigError); unencrypted objects stay readable', async () => {
    const { dir, plain, sealed } = await repo(keyring('k7'));
    const body = randomBytes(100);
    await sealed.put('state/s', body, smallObjectMeta(body));
    await plain.put('state/old', body, smallObjectMeta(body));
    await plain.putIfAbsent('walvault.json', body, smallObjectMeta(body)); // a repository created without encryption
    for (const [ring, text] of [[null, /is encrypted \(key id k7\)/], [keyring('k8'), /key k7, which is not in the keyring/]] as const) {
      const s = withEncryption(createFileStorage(dir), ring);
      const e = await s.get('state/s').catch((x: unknown) => x);
      expect(codeOf(e)).toBe('ConfigError');
      expect((e as Error).message).toMatch(text);
      expect((await buffer((await s.get('state/old'))!.body)).equals(body)).toBe(true);
    }
  });

  it('encryption layer: unsealed object planted in an encrypted repository is refused; an unencrypted repository reads as before', async () => {
    const ring = keyring('p1');
    const { dir, plain, sealed } = await repo(ring);
    const manifest = Buffer.from('{}');
    await sealed.putIfAbsent('walvault.json', manifest, smallObjectMeta(manifest));
    // Someone who may PUT (a pusher's stolen credentials) plants a plaintext object with its own hash.
    const evil = randomBytes(100);
    await plain.put('wal/planted', evil, smallObjectMeta(evil));
    const e = await withEncryption(createFileStorage(dir), ring).get('wal/planted').catch((x: unknown) => x);
    expect(codeOf(e)).toBe('CorruptObject');
    expect((e as Error).message).toMatch(/is not encrypted, but this repository is/);
    // A repository created without encryption: a keyring reads its objects.
    const old = await repo(null);
    await old.plain.putIfAbsent('walvault.json', manifest, smallObjectMeta(manifest));
    await old.plain.put('wal/old', evil, smallObjectMeta(evil));
    const keyed = withEncryption(createFileStorage(old.dir), ring);
    expect((await buffer((await keyed.get('wal/old'))!.body)).equals(evil)).toBe(true);
    void sealed;
  });

  it('encryption layer: a sealed hash moved to another object does not open (CorruptObject)', async () => {
    const { dir, plain, sealed } = await repo(keyring('h1'));
    const a = randomBytes(100);
    const b = randomBytes(100);
    await sealed.put('state/a', a, smallObjectMeta(a));
    await sealed.put('state/b', b, smallObjectMeta(b));
    // state/b's bytes, rewritten with state/a's metadata (sealed hash, key id): the layer's own view.
    const metaA = (await plain.head('state/a'))!.meta;
    const rawB = (await plain.get('state/b'))!;
    await plain.put('state/b', await buffer(rawB.body), metaA);
    const e = await sealed.head('state/b').catch((x: unknown) => x);
    expect(codeOf(e)).toBe('CorruptObject');
    expect((e as Error).message).toMatch(/sealed SHA-256 does not open with key h1/);
    void dir;
  });

  it('encryption layer: a stream body that changed since it was hashed is refused and nothing is stored', async () => {
    const { sealed } = await repo(keyring('c1'));
    const body = randomBytes(300_000);
    let opens = 0;
    const e = await sealed
      .putIfAbsent('wal/changed', { size: body.length, md5: md5(body), open: () => Readable.from([opens++ === 0 ? randomBytes(body.length) : body]) }, smallObjectMeta(body))
      .catch((x: unknown) => x);
    expect(codeOf(e)).toBe('IntegrityError');
    expect(await sealed.head('wal/changed')).toBeNull();
  });

  it('encryption layer: without a keyring nothing changes: bytes and metadata as written', async () => {
    const { dir, sealed } = await repo(null);
    const body = randomBytes(1000);
    await sealed.put('state/p', body, smallObjectMeta(body));
    expect(storedSizeFor(sealed, 1000)).toBe(1000);
    expect(sealed.encryption).toBeUndefined();
    const raw = await readFile(join(dir, 'state/p'));
    expect(raw.subarray(raw.length - body.length).equals(body)).toBe(true);
  });
});
