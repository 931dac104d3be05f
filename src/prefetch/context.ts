import { join } from 'node:path';
import { retryPolicy, type Config } from '../common/config.js';
import { describe } from '../common/errors.js';
import { log } from '../common/log.js';
import type { Deadline } from '../common/retry.js';
import { cacheManifest, MANIFEST_KEY, readRemoteManifest } from '../archive/manifest.js';
import type { Storage } from '../storage/types.js';
import { contextFromManifest, prefetchContextFromCache, type PrefetchContext } from './spool-dir.js';
import { repoCacheDir } from '../archive/cache-dir.js';
import { repoKeyOf } from '../storage/open.js';

/**
 * The prefetch spool directory of this restore, keyed by repository, system identifier and data
 * directory. The system identifier comes from the cached repository manifest, read from the
 * repository once (and cached) when there is no copy yet. Null when prefetch cannot be keyed.
 */
export async function prefetchContext(config: Config, storage: Storage, deadline: Deadline): Promise<PrefetchContext | null> {
  try {
    const cached = await prefetchContextFromCache(config);
    if (cached) return cached;
    const key = repoKeyOf(config);
    if (!key) return null;
    const remote = await readRemoteManifest(storage, retryPolicy(config), deadline);
    if (!remote) return null;
    const cache = repoCacheDir(config.spool, key);
    await cacheManifest(join(cache, MANIFEST_KEY), remote);
    return contextFromManifest(cache, remote);
  } catch (e) {
    log.debug(`prefetch unavailable: ${describe(e)}`);
    return null;
  }
}
