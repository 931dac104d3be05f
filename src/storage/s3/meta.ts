// ObjectMeta <-> S3 user metadata (`x-amz-meta-walvault-<key>`), and key helpers.
import { internalError } from '../../common/errors.js';
import type { ObjectMeta } from '../types.js';

const META_PREFIX = 'walvault-';

/** `walvault-sha256` → `sha256`; other user metadata is not walvault's and is dropped. */
export function fromS3Meta(m: Record<string, string> | undefined): ObjectMeta {
  const out: ObjectMeta = {};
  for (const [k, v] of Object.entries(m ?? {})) {
    const key = k.toLowerCase();
    if (key.startsWith(META_PREFIX)) out[key.slice(META_PREFIX.length)] = v;
  }
  return out;
}

export function toS3Meta(meta: ObjectMeta): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(meta)) {
    if (!/^[a-z0-9-]+$/.test(k) || /[^\x20-\x7e]/.test(v)) {
      throw internalError(`invalid object metadata entry ${JSON.stringify(k)}`);
    }
    out[META_PREFIX + k] = v;
  }
  return out;
}

export function trimSlashes(s: string): string {
  return s.replace(/^\/+|\/+$/g, '');
}
