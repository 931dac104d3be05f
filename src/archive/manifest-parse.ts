import type { Readable } from 'node:stream';
import { controlChar } from '../common/control-chars.js';
import { corruptObjectError, type WalvaultError } from '../common/errors.js';
import type { ObjectInfo } from '../storage/types.js';
import { isValidSegmentSize } from '../wal/header.js';
import { verifiedBody } from './small-objects.js';

// walvault.json as read back from a repository (or the spool's copy) is data from outside: every
// field is checked before anything uses it (the system identifier names spool directories, the
// segment size drives segment arithmetic, pgVersion picks /usr/lib/postgresql/<n>/bin).

export interface RepoManifest {
  format: 1;
  systemIdentifier: string;
  pgVersion?: number;
  walMagic: number;
  walSegmentSize: number;
  walBlockSize: number;
  createdAt: string;
  createdBy: string;
  /** The cipher every object is sealed with (src/storage/encrypting.ts); absent: not encrypted. */
  encryption?: string;
}

/** A manifest is a few hundred bytes; anything much larger is not one (and is not read whole). */
const MAX_MANIFEST_BYTES = 64 * 1024;
const UINT64_MAX = (1n << 64n) - 1n;

function corrupt(where: string, why: string): WalvaultError {
  return corruptObjectError(`repository manifest ${where} is not a valid walvault manifest: ${why}`);
}

const isPowerOfTwo = (n: number) => Number.isSafeInteger(n) && n > 0 && (n & (n - 1)) === 0;
// Printed in messages: short, and no control characters that could forge log lines.
const isLabel = (v: unknown): v is string => typeof v === 'string' && v.length <= 200 && controlChar(v) === undefined;

/** Parses and validates every field; the result holds only the validated fields. */
export function parseManifest(text: string, where: string): RepoManifest {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw corrupt(where, 'not JSON');
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw corrupt(where, 'not a JSON object');
  const m = raw as Record<string, unknown>;
  if (m['format'] !== 1) throw corrupt(where, `format ${JSON.stringify(m['format'])} (expected 1)`);
  const sysid = m['systemIdentifier'];
  if (typeof sysid !== 'string' || !/^[0-9]{1,20}$/.test(sysid) || BigInt(sysid) > UINT64_MAX) {
    throw corrupt(where, 'systemIdentifier is not a decimal 64-bit integer');
  }
  const pgVersion = m['pgVersion'];
  if (pgVersion !== undefined && !(Number.isInteger(pgVersion) && (pgVersion as number) >= 9 && (pgVersion as number) <= 99)) {
    throw corrupt(where, 'pgVersion is not a PostgreSQL major version (9..99)');
  }
  const magic = m['walMagic'];
  if (!Number.isInteger(magic) || (magic as number) < 0xd000 || (magic as number) > 0xdfff) throw corrupt(where, 'walMagic is not a WAL page magic');
  const segSize = m['walSegmentSize'];
  if (typeof segSize !== 'number' || !Number.isSafeInteger(segSize) || !isValidSegmentSize(segSize)) throw corrupt(where, 'walSegmentSize is not a power of two from 1 MiB to 1 GiB');
  const blockSize = m['walBlockSize'];
  if (typeof blockSize !== 'number' || !isPowerOfTwo(blockSize) || blockSize < 1024 || blockSize > 65536) {
    throw corrupt(where, 'walBlockSize is not a power of two from 1 KiB to 64 KiB');
  }
  if (!isLabel(m['createdAt'])) throw corrupt(where, 'createdAt is not a short string');
  if (!isLabel(m['createdBy'])) throw corrupt(where, 'createdBy is not a short string');
  const encryption = m['encryption'];
  if (encryption !== undefined && !(typeof encryption === 'string' && /^[a-z0-9-]{1,40}$/.test(encryption))) throw corrupt(where, 'encryption is not a cipher name');
  return {
    format: 1,
    systemIdentifier: sysid,
    ...(pgVersion !== undefined ? { pgVersion: pgVersion as number } : {}),
    walMagic: magic as number,
    walSegmentSize: segSize,
    walBlockSize: blockSize,
    createdAt: m['createdAt'] as string,
    createdBy: m['createdBy'] as string,
    ...(encryption !== undefined ? { encryption: encryption as string } : {}),
  };
}

/**
 * The stored manifest object's text, checked against the SHA-256 and size its writer recorded.
 * A mismatch may be damage in transit (retryable IntegrityError); missing metadata, another codec
 * or an oversized object is not a manifest walvault wrote (CorruptObject).
 */
export async function verifiedManifestText(info: ObjectInfo, body: Readable, where: string): Promise<string> {
  if (info.meta['codec'] !== undefined && info.meta['codec'] !== 'none') {
    body.destroy();
    throw corrupt(where, `stored with codec ${info.meta['codec']}`);
  }
  if (info.storedSize > MAX_MANIFEST_BYTES) {
    body.destroy();
    throw corrupt(where, `${info.storedSize} bytes`);
  }
  return (await verifiedBody(info, body, where, MAX_MANIFEST_BYTES)).toString('utf8');
}
