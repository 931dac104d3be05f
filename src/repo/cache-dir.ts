import { createHash } from 'node:crypto';
import { join } from 'node:path';

// The spool directory of one repository (manifest cache, push records, prefetch, high-water state).
// Its own tiny module: the per-file fast paths need it without loading the manifest/retry code.
export function repoCacheDir(spool: string, repoUrl: string): string {
  return join(spool, 'repos', createHash('sha256').update(repoUrl).digest('hex').slice(0, 16));
}
