import { readFile, stat, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { configError, missingBucketError, repoMismatchError } from '../common/errors.js';
import { ensureDir, writeFileAtomic, writeJsonAtomic } from '../fs/atomic.js';
import { log } from '../common/log.js';
import { withRetry, type Deadline, type RetryPolicy } from '../common/retry.js';
import type { Storage } from '../storage/types.js';
import { VERSION } from '../common/version.js';
import type { WalHeader } from '../wal/header.js';
import { repoCacheDir } from './cache-dir.js';
import { parseManifest, verifiedManifestText, type RepoManifest } from './manifest-parse.js';
import { smallObjectMeta } from './objects.js';
import { shortHash } from '../fs/short-hash.js';

// <prefix>/walvault.json binds a repository to one PostgreSQL system: created by the first segment
// pushed, then every push must match it. Two clusters on one prefix (split brain, a copy-pasted
// config) are refused instead of interleaving their WAL.
//
// The spool keeps a copy, but only as a cache and as the memory that this spool has archived to
// the repository: the repository's own walvault.json is read back (see ensureManifest), so an
// unmounted share, a wrong endpoint or a deleted repository is refused instead of being archived
// into, and a manifest changed in the store wins over the copy.
export const MANIFEST_KEY = 'walvault.json';

/**
 * How long the copy in the spool stands for the repository's manifest after it was last found
 * equal to it (the copy's mtime), on S3 only. There an upload lands in the store whatever the
 * manifest, so trusting the copy for a minute saves a GET on every wal-push of a busy cluster,
 * and costs at most a minute of uploads into a repository that was deleted or recreated. A
 * file:// repository is read back on every push: a local open(), and an unmounted share would
 * otherwise receive WAL on the local disk.
 */
const REVERIFY_MS = 60_000;
/** One read of the repository's manifest in flight per repository (wal-push and its look-ahead). */
const reading = new Map<string, Promise<RepoManifest | null>>();

export function manifestFromHeader(h: WalHeader, encryption?: string): RepoManifest {
  return {
    format: 1,
    systemIdentifier: h.systemIdentifier,
    ...(h.pgVersion ? { pgVersion: h.pgVersion } : {}),
    walMagic: h.magic,
    walSegmentSize: h.segmentSize,
    walBlockSize: h.blockSize,
    createdAt: new Date().toISOString(),
    createdBy: `walvault ${VERSION}`,
    ...(encryption ? { encryption } : {}),
  };
}

/**
 * A repository is encrypted from its first object or never (the manifest says which): a writer
 * without a key in an encrypted one, or with a key in one created without, would mix the two, and a
 * key-less writer would leave readable WAL beside the encrypted. To encrypt an existing archive,
 * archive to a new prefix and take a base backup there.
 */
export function checkEncryption(m: RepoManifest, storage: Pick<Storage, 'url' | 'encryption'>): void {
  if (m.encryption && !storage.encryption) {
    throw configError(`repository ${storage.url} is encrypted (${m.encryption}) but no encryption key is configured: set encryptionKeyFile or encryptionKeyCommand; nothing was written`);
  }
  if (!m.encryption && storage.encryption) {
    throw configError(
      `repository ${storage.url} was created without encryption and an encryption key is configured: walvault does not mix encrypted and unencrypted objects in one repository; ` +
        'archive to a new prefix (and take a base backup there) to encrypt, or remove encryptionKeyFile/encryptionKeyCommand; nothing was written',
    );
  }
  if (m.encryption && storage.encryption && m.encryption !== storage.encryption) {
    throw configError(`repository ${storage.url} is encrypted with ${m.encryption}, which this walvault does not write (${storage.encryption}); nothing was written`);
  }
}

function describeSystem(m: Pick<RepoManifest, 'systemIdentifier' | 'pgVersion' | 'walMagic' | 'walSegmentSize'>): string {
  const version = m.pgVersion ? `PostgreSQL ${m.pgVersion}` : `WAL magic 0x${m.walMagic.toString(16)}`;
  return `system ${m.systemIdentifier} (${version}, ${m.walSegmentSize / (1024 * 1024)} MiB segments)`;
}

function matches(m: RepoManifest, h: WalHeader): boolean {
  return m.systemIdentifier === h.systemIdentifier && m.walMagic === h.magic && m.walSegmentSize === h.segmentSize;
}

export function checkManifest(m: RepoManifest, h: WalHeader, what: string, repoUrl: string): void {
  if (!matches(m, h)) {
    throw repoMismatchError(
      `${what} belongs to ${describeSystem(manifestFromHeader(h))} but repository ${repoUrl} holds ${describeSystem(m)}; ` +
        'use a separate repository prefix per cluster and major version',
    );
  }
}

/** The repository's walvault.json, verified (SHA-256, size, every field); null when it has none. */
export async function readRemoteManifest(storage: Storage, policy: RetryPolicy, deadline: Deadline): Promise<RepoManifest | null> {
  const where = `${storage.url}/${MANIFEST_KEY}`;
  const text = await withRetry(`read ${MANIFEST_KEY}`, policy, deadline, async (signal) => {
    const got = await storage.get(MANIFEST_KEY, { signal });
    return got ? await verifiedManifestText(got.info, got.body, where) : null;
  });
  return text === null ? null : parseManifest(text, where);
}

function readShared(storage: Storage, ctx: { policy: RetryPolicy; deadline: Deadline }): Promise<RepoManifest | null> {
  let pending = reading.get(storage.cacheKey);
  if (!pending) {
    pending = readRemoteManifest(storage, ctx.policy, ctx.deadline).finally(() => reading.delete(storage.cacheKey));
    reading.set(storage.cacheKey, pending);
  }
  return pending;
}

interface Cached {
  /** The file exists at all (even damaged): this spool has archived to the repository. */
  seen: boolean;
  manifest: RepoManifest | null;
  /** Found equal to the repository's manifest less than REVERIFY_MS ago. */
  fresh: boolean;
}

async function readCached(cacheFile: string): Promise<Cached> {
  let text: string;
  let age: number;
  try {
    [text, age] = await Promise.all([readFile(cacheFile, 'utf8'), stat(cacheFile).then((s) => Date.now() - s.mtimeMs)]);
  } catch {
    return { seen: false, manifest: null, fresh: false };
  }
  try {
    return { seen: true, manifest: parseManifest(text, cacheFile), fresh: age >= 0 && age < REVERIFY_MS };
  } catch {
    return { seen: true, manifest: null, fresh: false };
  }
}

function vanished(storage: Storage, cacheFile: string): Error {
  return missingBucketError(
    `repository ${storage.url} holds no ${MANIFEST_KEY}, but this spool has archived to it before (${cacheFile}): ` +
      'the share may not be mounted, the endpoint or bucket may be wrong, or the repository was deleted; nothing was written. ' +
      `If the repository was recreated on purpose, remove ${join(cacheFile, '..')} and retry`,
  );
}

/**
 * `<spool>/repos/by-url/<hash>`: the spool key (URL and endpoint) this spool last archived a URL
 * through. The spool is keyed by endpoint, so a wrong endpoint is a repository it has never seen;
 * this remembers that the same bucket and prefix were archived elsewhere, so that an empty bucket of
 * that name on a wrong endpoint is refused rather than started as a new repository.
 */
function urlIndexFile(spool: string, url: string): string {
  return join(spool, 'repos', 'by-url', shortHash(url, 16));
}

async function refuseOtherEndpoint(storage: Storage, spool: string): Promise<void> {
  const index = urlIndexFile(spool, storage.url);
  const other = await readFile(index, 'utf8').catch(() => null);
  if (other === null || other === storage.cacheKey) return;
  throw missingBucketError(
    `repository ${storage.url} holds no ${MANIFEST_KEY} at this endpoint, but this spool archived ${storage.url} through another ` +
      `endpoint or profile (${repoCacheDir(spool, other)}): the endpoint may be wrong; nothing was written. ` +
      `If this is a new repository on purpose, remove ${index} and retry`,
  );
}

async function remember(storage: Storage, spool: string): Promise<void> {
  const index = urlIndexFile(spool, storage.url);
  if ((await readFile(index, 'utf8').catch(() => null)) === storage.cacheKey) return;
  await ensureDir(join(index, '..'))
    .then(() => writeFileAtomic(index, Buffer.from(storage.cacheKey)))
    .catch((e) => log.debug(`cannot record the repository in ${index}: ${String(e)}`));
}

/**
 * Keeps the spool's copy of the repository manifest, which the fast paths read without the storage
 * driver. Best effort: without it they only take the normal path.
 */
export async function cacheManifest(cacheFile: string, manifest: RepoManifest): Promise<void> {
  await ensureDir(join(cacheFile, '..'))
    .then(() => writeJsonAtomic(cacheFile, manifest))
    .catch((e) => log.debug(`cannot cache the repository manifest in ${cacheFile}: ${String(e)}`));
}

/**
 * Checks that the repository is the one this spool archived to and holds `h`'s system, creating
 * walvault.json from `h` on the very first push. Without a header (history, backup label files)
 * it only checks the repository is there. Returns the repository's manifest (null: none yet).
 */
export async function ensureManifest(
  storage: Storage,
  h: WalHeader | undefined,
  what: string,
  ctx: { spool: string; policy: RetryPolicy; deadline: Deadline },
): Promise<RepoManifest | null> {
  const cacheFile = join(repoCacheDir(ctx.spool, storage.cacheKey), MANIFEST_KEY);
  const cached = await readCached(cacheFile);
  // (a mismatch is never decided from the copy: the repository may have been recreated since)
  if (cached.manifest && cached.fresh && !storage.url.startsWith('file://') && (!h || matches(cached.manifest, h))) {
    checkEncryption(cached.manifest, storage);
    return cached.manifest;
  }
  let manifest = await readShared(storage, ctx);
  if (!manifest) {
    if (cached.seen) throw vanished(storage, cacheFile);
    await refuseOtherEndpoint(storage, ctx.spool);
    if (!h) return null;
    manifest = await createOnce(storage, h, ctx);
  }
  if (h) checkManifest(manifest, h, what, storage.url);
  checkEncryption(manifest, storage);
  if (!cached.manifest || JSON.stringify(cached.manifest) !== JSON.stringify(manifest)) {
    if (cached.manifest) log.warn(`the repository manifest in ${storage.url} differs from this spool's copy ${cacheFile}; using the repository's`);
    await cacheManifest(cacheFile, manifest);
    await remember(storage, ctx.spool);
  } else {
    await utimes(cacheFile, new Date(), new Date()).catch(() => undefined); // found equal: fresh again
  }
  return manifest;
}

/**
 * One creation per repository in a process: the first push with look-ahead pushes several files at
 * once, and where a store does not enforce If-None-Match (radosgw on a versioned bucket) each HEAD
 * would find nothing and each PUT would add a version of walvault.json.
 */
const creating = new Map<string, Promise<RepoManifest>>();
function createOnce(storage: Storage, h: WalHeader, ctx: { policy: RetryPolicy; deadline: Deadline }): Promise<RepoManifest> {
  let p = creating.get(storage.cacheKey);
  if (!p) {
    p = createManifest(storage, h, ctx).finally(() => creating.delete(storage.cacheKey));
    creating.set(storage.cacheKey, p);
  }
  return p;
}

async function createManifest(storage: Storage, h: WalHeader, ctx: { policy: RetryPolicy; deadline: Deadline }): Promise<RepoManifest> {
  const fresh = manifestFromHeader(h, storage.encryption);
  const body = Buffer.from(JSON.stringify(fresh, null, 2) + '\n');
  const res = await withRetry(`create ${MANIFEST_KEY}`, ctx.policy, ctx.deadline, (signal) =>
    storage.putIfAbsent(MANIFEST_KEY, body, smallObjectMeta(body), { signal }),
  );
  let manifest: RepoManifest | null = fresh;
  if (res.created) {
    log.info(`created repository manifest in ${storage.url} for ${describeSystem(fresh)}`);
  } else {
    manifest = await readRemoteManifest(storage, ctx.policy, ctx.deadline);
    if (!manifest) throw repoMismatchError(`repository manifest ${storage.url}/${MANIFEST_KEY} vanished while being created`);
  }
  return manifest;
}
