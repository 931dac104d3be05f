import { createHash } from 'node:crypto';
import { Transform, pipeline, type Readable } from 'node:stream';
import { configError, corruptObjectError, integrityError } from '../common/errors.js';
import { CIPHER, decryptStream, encryptBuffer, encryptedSize, encryptReopenable, encryptStream, type Key } from '../crypto/frames.js';
import type { Keyring } from '../crypto/keyring.js';
import { openValue, sealValue } from '../crypto/meta-seal.js';
import type { CallOptions, GetResult, ObjectInfo, ObjectMeta, PutBody, PutIfAbsentResult, Storage, StreamBody, UploadOptions } from './types.js';

// Client-side encryption as a Storage in front of a driver: every write is sealed with the keyring's
// first key (src/crypto/frames.ts: AES-256-GCM frames bound to the object's key), every read of an
// object whose metadata names a cipher is opened with the key its metadata names. Everything above
// sees the bytes it wrote (compressed, hashed as before); the store sees key names, sizes and
// metadata only. Sizes stay the store's: storedSizeFor() tells writers what a body will occupy.

/** Metadata names: `cipher` (CIPHER), the id of the key that sealed the object, its sealed SHA-256. */
export const META_CIPHER = 'cipher';
export const META_KEY_ID = 'key-id';
export const META_SEALED_SHA256 = 'sha256-sealed';

/** The key an encrypted object needs, or the error that says why it cannot be read. */
export function keyFor(keyring: Keyring | null, info: ObjectInfo, where: string): Key | null {
  const cipher = info.meta[META_CIPHER];
  if (cipher === undefined) return null;
  const id = info.meta[META_KEY_ID] ?? '';
  if (cipher !== CIPHER) throw corruptObjectError(`${where} is encrypted with an unknown cipher ${JSON.stringify(cipher)} (this walvault reads ${CIPHER})`);
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(id)) throw corruptObjectError(`${where} is encrypted but its metadata names no valid key id`);
  if (!keyring) throw configError(`${where} is encrypted (key id ${id}); configure encryptionKeyFile or encryptionKeyCommand with that key`);
  const key = keyring.byId.get(id);
  if (!key) throw configError(`${where} is encrypted with key ${id}, which is not in the keyring (${keyring.source}: ${[...keyring.byId.keys()].join(', ')})`);
  return key;
}

/**
 * A body sealed for `objectKey`. A StreamBody is read twice per attempt (the MD5 the store checks
 * comes first); the first pass also checks the plaintext against the MD5 its writer recorded, so a
 * file that changed since it was hashed is refused here as the store would have refused it.
 */
async function seal(key: Key, objectKey: string, body: PutBody): Promise<PutBody> {
  if (Buffer.isBuffer(body)) return encryptBuffer(key, objectKey, body);
  let passes = 0;
  const sealed = await encryptReopenable(key, objectKey, () => (passes++ === 0 ? checkedMd5(body) : body.open()));
  return sealed satisfies StreamBody;
}

function checkedMd5(body: StreamBody): Readable {
  const md5 = createHash('md5');
  let bytes = 0;
  const check = new Transform({
    transform(chunk: Buffer, _enc, done) {
      md5.update(chunk);
      bytes += chunk.length;
      done(null, chunk);
    },
    flush(done) {
      const got = md5.digest('base64');
      done(bytes === body.size && got === body.md5 ? null : integrityError(`the body changed since it was hashed (${bytes} bytes, MD5 ${got}; expected ${body.size} bytes, MD5 ${body.md5})`));
    },
  });
  return pipeline(body.open(), check, () => undefined);
}

/** The metadata of a sealed object: the SHA-256 of its original bytes sealed too (src/crypto/meta-seal.ts). */
function sealMeta(key: Key, objectKey: string, meta: ObjectMeta): ObjectMeta {
  const { sha256, ...rest } = meta;
  return { ...rest, ...(sha256 === undefined ? {} : { [META_SEALED_SHA256]: sealValue(key.key, key.id, objectKey, sha256) }), [META_CIPHER]: CIPHER, [META_KEY_ID]: key.id };
}

/** `info` as its writer saw it (the SHA-256 opened), or the error that says why it cannot be. */
export function openInfo(keyring: Keyring | null, info: ObjectInfo, objectKey: string, where: string): { info: ObjectInfo; key: Key | null } {
  const key = keyFor(keyring, info, where);
  if (!key) return { info, key };
  const { [META_SEALED_SHA256]: sealed, ...rest } = info.meta;
  if (sealed === undefined) return { info: { ...info, meta: rest }, key };
  const sha256 = openValue(key.key, key.id, objectKey, sealed);
  if (sha256 === null) throw corruptObjectError(`${where}: its sealed SHA-256 does not open with key ${key.id}: the metadata was altered or belongs to another object, or the keyring's key ${key.id} is not the one that sealed it`);
  return { info: { ...info, meta: { ...rest, sha256 } }, key };
}

/** Where the repository's manifest lives (archive/manifest.ts MANIFEST_KEY; storage/ may not import archive/). */
const MANIFEST_OBJECT = 'walvault.json';

export function withEncryption(inner: Storage, keyring: Keyring | null): Storage {
  const where = (key: string) => `${inner.url}/${key}`;
  const opened = (key: string, info: ObjectInfo) => openInfo(keyring, info, key, where(key)).info;
  // With a keyring, an object without a seal is read only from a repository created without
  // encryption (its walvault.json unsealed): in an encrypted one it was not written by walvault,
  // and its self-declared hash proves nothing (anyone who may PUT can compute one).
  let unsealedRepository: Promise<boolean> | undefined;
  const refuseUnsealed = async (key: string, opts?: CallOptions): Promise<void> => {
    if (!keyring) return;
    unsealedRepository ??= inner.head(MANIFEST_OBJECT, opts).then((m) => m !== null && m.meta[META_CIPHER] === undefined);
    let allowed: boolean;
    try {
      allowed = await unsealedRepository;
    } catch (e) {
      unsealedRepository = undefined; // a failed HEAD is asked again next time
      throw e;
    }
    if (!allowed) {
      throw corruptObjectError(`${where(key)} is not encrypted, but this repository is (or is new and a keyring is configured): walvault did not write it; refusing it`);
    }
  };
  return {
    url: inner.url,
    cacheKey: inner.cacheKey,
    encryption: keyring ? CIPHER : undefined,
    storedSizeFor: (bytes: number) => (keyring ? encryptedSize(bytes) : bytes),

    async putIfAbsent(key: string, body: PutBody, meta: ObjectMeta, opts?: CallOptions): Promise<PutIfAbsentResult> {
      if (!keyring) {
        const res = await inner.putIfAbsent(key, body, meta, opts);
        return res.created ? res : { created: false, existing: opened(key, res.existing) };
      }
      const res = await inner.putIfAbsent(key, await seal(keyring.current, key, body), sealMeta(keyring.current, key, meta), opts);
      return res.created ? res : { created: false, existing: opened(key, res.existing) };
    },
    async put(key: string, body: PutBody, meta: ObjectMeta, opts?: CallOptions): Promise<void> {
      if (!keyring) return inner.put(key, body, meta, opts);
      return inner.put(key, await seal(keyring.current, key, body), sealMeta(keyring.current, key, meta), opts);
    },
    async upload(key: string, body: Readable, meta: ObjectMeta, opts?: UploadOptions): Promise<{ storedSize: number }> {
      if (!keyring) return inner.upload(key, body, meta, opts);
      const sealed = pipeline(body, encryptStream(keyring.current, key), () => undefined);
      const expectedSize = opts?.expectedSize === undefined ? undefined : encryptedSize(opts.expectedSize);
      return inner.upload(key, sealed, sealMeta(keyring.current, key, meta), { ...opts, ...(expectedSize === undefined ? {} : { expectedSize }) });
    },
    async head(key: string, opts?: CallOptions): Promise<ObjectInfo | null> {
      const info = await inner.head(key, opts);
      return info && opened(key, info);
    },
    async get(key: string, opts?: CallOptions): Promise<GetResult | null> {
      const got = await inner.get(key, opts);
      if (!got) return null;
      let o: ReturnType<typeof openInfo>;
      try {
        o = openInfo(keyring, got.info, key, where(key));
      } catch (e) {
        got.body.destroy();
        throw e;
      }
      if (!o.key) {
        if (key !== MANIFEST_OBJECT) {
          try {
            await refuseUnsealed(key, opts);
          } catch (e) {
            got.body.destroy();
            throw e;
          }
        }
        return got;
      }
      return { info: o.info, body: pipeline(got.body, decryptStream(o.key, key, where(key)), () => undefined) };
    },
    list: (prefix, opts) => inner.list(prefix, opts),
    delete: (keys, opts) => inner.delete(keys, opts),
    deleteEach: (keys, opts) => inner.deleteEach(keys, opts),
    objectLockEnabled: (opts) => inner.objectLockEnabled(opts),
    objectLock: (key, opts) => inner.objectLock(key, opts),
    abortStaleUploads: (prefix, olderThan, opts) => inner.abortStaleUploads(prefix, olderThan, opts),
    close: () => inner.close(),
  };
}
