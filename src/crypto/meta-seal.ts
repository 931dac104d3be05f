import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';

// The SHA-256 of an object's original bytes is what every reader checks, and it sits in the
// object's metadata, which the store shows to anyone who may HEAD it. In an encrypted repository
// that hash would let the store confirm a guess of a small object's content (walvault.json's
// system identifier is a timestamp and a few random bits). So there it is sealed too: AES-256-GCM
// under a key derived from the master key, the key id and the object's name, random nonce.
// The metadata value is base64(nonce 12 || ciphertext || tag 16).

const NONCE = 12;
const TAG = 16;

function metaKey(master: Buffer, keyId: string, objectKey: string): Buffer {
  return Buffer.from(hkdfSync('sha256', master, Buffer.alloc(0), `walvault/meta/v1\0${keyId}\0${objectKey}`, 32));
}

export function sealValue(master: Buffer, keyId: string, objectKey: string, value: string): string {
  const nonce = randomBytes(NONCE);
  const c = createCipheriv('aes-256-gcm', metaKey(master, keyId, objectKey), nonce);
  const body = Buffer.concat([c.update(value, 'utf8'), c.final()]);
  return Buffer.concat([nonce, body, c.getAuthTag()]).toString('base64');
}

/** The sealed value, or null when it does not open (altered, another object's, another key). */
export function openValue(master: Buffer, keyId: string, objectKey: string, sealed: string): string | null {
  const raw = Buffer.from(sealed, 'base64');
  if (raw.length < NONCE + TAG || raw.toString('base64') !== sealed) return null;
  try {
    const d = createDecipheriv('aes-256-gcm', metaKey(master, keyId, objectKey), raw.subarray(0, NONCE));
    d.setAuthTag(raw.subarray(raw.length - TAG));
    return Buffer.concat([d.update(raw.subarray(NONCE, raw.length - TAG)), d.final()]).toString('utf8');
  } catch {
    return null;
  }
}
