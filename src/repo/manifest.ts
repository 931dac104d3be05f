import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { repoMismatchError, WalvaultError, ExitCode } from '../common/errors.js';
import { ensureDir, writeFileAtomic } from '../common/fs-atomic.js';
import { sha256Hex } from '../common/hash.js';
import { log } from '../common/log.js';
import { withRetry, type Deadline, type RetryPolicy } from '../common/retry.js';
import type { Storage } from '../storage/types.js';
import { VERSION } from '../version.js';
import type { WalHeader } from '../wal/header.js';
import { repoCacheDir } from './cache-dir.js';
import { readAll } from './objects.js';

export { repoCacheDir };

// <prefix>/walvault.json binds a repository to one PostgreSQL system: created by the first segment
// pushed, then every push must match it. Two clusters on one prefix (split brain, a copy-pasted
// config) are refused instead of interleaving their WAL.
export const MANIFEST_KEY = 'walvault.json';

export interface RepoManifest {
  format: 1;
  systemIdentifier: string;
  pgVersion?: number;
  walMagic: number;
  walSegmentSize: number;
  walBlockSize: number;
  createdAt: string;
  createdBy: string;
}

export function manifestFromHeader(h: WalHeader): RepoManifest {
  return {
    format: 1,
    systemIdentifier: h.systemIdentifier,
    ...(h.pgVersion ? { pgVersion: h.pgVersion } : {}),
    walMagic: h.magic,
    walSegmentSize: h.segmentSize,
    walBlockSize: h.blockSize,
    createdAt: new Date().toISOString(),
    createdBy: `walvault ${VERSION}`,
  };
}

function describeSystem(m: Pick<RepoManifest, 'systemIdentifier' | 'pgVersion' | 'walMagic' | 'walSegmentSize'>): string {
  const version = m.pgVersion ? `PostgreSQL ${m.pgVersion}` : `WAL magic 0x${m.walMagic.toString(16)}`;
  return `system ${m.systemIdentifier} (${version}, ${m.walSegmentSize / (1024 * 1024)} MiB segments)`;
}

export function checkManifest(m: RepoManifest, h: WalHeader, what: string, repoUrl: string): void {
  if (m.systemIdentifier !== h.systemIdentifier || m.walMagic !== h.magic || m.walSegmentSize !== h.segmentSize) {
    throw repoMismatchError(
      `${what} belongs to ${describeSystem(manifestFromHeader(h))} but repository ${repoUrl} holds ${describeSystem(m)}; ` +
        'use a separate repository prefix per cluster and major version',
    );
  }
}

function parseManifest(text: string, repoUrl: string): RepoManifest {
  try {
    const m = JSON.parse(text) as RepoManifest;
    if (m.format === 1 && typeof m.systemIdentifier === 'string' && typeof m.walSegmentSize === 'number') return m;
  } catch {
    // fall through
  }
  throw new WalvaultError('CorruptObject', ExitCode.integrity, `repository manifest ${repoUrl}/${MANIFEST_KEY} is not a walvault manifest`);
}


export async function readRemoteManifest(
  storage: Storage,
  policy: RetryPolicy,
  deadline: Deadline,
): Promise<RepoManifest | null> {
  const text = await withRetry(`read ${MANIFEST_KEY}`, policy, deadline, async (signal) => {
    const got = await storage.get(MANIFEST_KEY, { signal });
    return got ? (await readAll(got.body)).toString('utf8') : null;
  });
  return text === null ? null : parseManifest(text, storage.url);
}

/** Returns the repository manifest, creating it from `h` on the first push, and checks `h` against it. */
export async function ensureManifest(
  storage: Storage,
  h: WalHeader,
  what: string,
  ctx: { spool: string; policy: RetryPolicy; deadline: Deadline },
): Promise<RepoManifest> {
  const cacheFile = join(repoCacheDir(ctx.spool, storage.cacheKey), MANIFEST_KEY);
  const cached = await readFile(cacheFile, 'utf8').then(
    (t) => parseManifest(t, storage.url),
    () => null,
  );
  if (cached) {
    checkManifest(cached, h, what, storage.url);
    return cached;
  }
  let manifest = await readRemoteManifest(storage, ctx.policy, ctx.deadline);
  if (!manifest) {
    const fresh = manifestFromHeader(h);
    const body = Buffer.from(JSON.stringify(fresh, null, 2) + '\n');
    const meta = { sha256: sha256Hex(body), size: String(body.length), codec: 'none' };
    const res = await withRetry(`create ${MANIFEST_KEY}`, ctx.policy, ctx.deadline, (signal) =>
      storage.putIfAbsent(MANIFEST_KEY, body, meta, { signal }),
    );
    if (res.created) {
      log.info(`created repository manifest in ${storage.url} for ${describeSystem(fresh)}`);
      manifest = fresh;
    } else {
      manifest = await readRemoteManifest(storage, ctx.policy, ctx.deadline);
      if (!manifest) throw repoMismatchError(`repository manifest ${storage.url}/${MANIFEST_KEY} vanished while being created`);
    }
  }
  checkManifest(manifest, h, what, storage.url);
  await ensureDir(join(cacheFile, '..'))
    .then(() => writeFileAtomic(cacheFile, Buffer.from(JSON.stringify(manifest))))
    .catch((e) => log.debug(`cannot cache the repository manifest in ${cacheFile}: ${String(e)}`));
  return manifest;
}
