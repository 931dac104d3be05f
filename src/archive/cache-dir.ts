import { join } from 'node:path';
import { shortHash } from '../fs/short-hash.js';

// The spool directory of one repository (manifest cache, push records, prefetch, high-water state).
// Its own tiny module: the per-file fast paths need it without loading the manifest/retry code.
// `repoKey` is storage/repo-key.ts's repoCacheKey() (Storage.cacheKey, or repoKeyOf(config) in src/storage/open.ts).
export function repoCacheDir(spool: string, repoKey: string): string {
  return join(spool, 'repos', shortHash(repoKey, 16));
}
