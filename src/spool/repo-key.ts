import { createHash } from 'node:crypto';
import { isAbsolute, join } from 'node:path';
import { fileURLToPath } from 'node:url';

// Import-light twins of storageUrlOf (src/storage/open.ts) and repoCacheDir (src/repo/manifest.ts)
// for the wal-push fast path: importing those modules pulls in the retry policy, codecs and stream
// code, which costs more than the whole fast path. test/unit/spool-fast.test.ts checks that both
// pairs agree.

/** The repository URL as storageUrlOf() reports it, or undefined if it is not a valid repository. */
export function repoUrlOf(repo: string | undefined): string | undefined {
  if (!repo) return undefined;
  const scheme = /^([a-z0-9+.-]+):\/\//i.exec(repo)?.[1]?.toLowerCase();
  if (scheme === 'file') {
    try {
      const dir = fileURLToPath(repo);
      return isAbsolute(dir) ? `file://${dir.replace(/\/+$/, '') || '/'}` : undefined;
    } catch {
      return undefined;
    }
  }
  if (scheme === 's3') {
    const rest = repo.slice('s3://'.length);
    const slash = rest.indexOf('/');
    const bucket = slash < 0 ? rest : rest.slice(0, slash);
    const prefix = (slash < 0 ? '' : rest.slice(slash + 1)).replace(/^\/+|\/+$/g, '').replace(/\/{2,}/g, '/');
    if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) return undefined;
    return `s3://${bucket}${prefix ? `/${prefix}` : ''}`;
  }
  return undefined;
}

/** Same directory as repoCacheDir(spool, url). */
export function repoCacheDirOf(spool: string, url: string): string {
  return join(spool, 'repos', createHash('sha256').update(url).digest('hex').slice(0, 16));
}
