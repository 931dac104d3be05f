import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../common/config.js';
import { elapsed } from '../common/log.js';
import { parseWalName, walObjectKey, type WalName } from '../wal/names.js';
import { logLine } from '../fs/sync-io.js';
import { readPushRecord, removePushRecord, verifyAgainstRecord } from './records.js';
import { repoCacheDir } from '../archive/cache-dir.js';
import { parseRepoUrl, repoKeyOf, repoUrlOf } from '../storage/open.js';

// The no-network path of wal-push: PostgreSQL asks to archive a file that an earlier wal-push already
// uploaded by look-ahead. Exit 0 is only allowed when the local file still has the identity recorded
// while it was read for the upload (one fstat, nothing read), or, when that changed, is absent or
// `fastPathHash` is set, after re-reading it and finding exactly the size and SHA-256 recorded;
// anything else (no record, unreadable record, different content under the same name) falls through
// to the normal push, which then uploads or refuses on conflict. Runs before the storage driver (and
// the AWS SDK) is loaded.
//
// A record only says the file WAS stored. For a file:// repository, whether the object is still
// there costs one stat(), so it is asked: a share unmounted (or a repository deleted) since the
// look-ahead upload sends the call to the normal push, which refuses (MissingBucket). On S3 that
// would be a request per file, the very cost the fast path exists to avoid; the record is seconds
// old and was written only after the store confirmed the write, under a verified manifest.

export interface FastPushHit {
  sha256: string;
  size: number;
  repo: string;
  /** How the file was found unchanged: its recorded identity, or its SHA-256 computed again. */
  by: 'identity' | 'sha256';
}

/** Returns the verified record, or null when the normal push must run. Never throws. */
export async function tryFastPush(config: Config, path: string, name: string): Promise<FastPushHit | null> {
  // Name validation before any I/O: the name becomes a file name in the spool.
  let wal: WalName;
  try {
    wal = parseWalName(name);
  } catch {
    return null; // the normal path reports it
  }
  const repo = repoUrlOf(config.repo);
  const key = repoKeyOf(config);
  if (!repo || !key) return null; // the normal path reports the configuration error
  const cache = repoCacheDir(config.spool, key);
  const rec = await readPushRecord(cache, name);
  if (!rec) return null;
  if (rec.repo !== repo) return null;
  if (!(await stillStored(config.repo, wal))) {
    logLine(config, 'wal-push', 'warn', `${name} was uploaded ahead to ${repo} but is not there now; pushing it normally`);
    return null;
  }
  const v = verifyAgainstRecord(path, rec, config.fastPathHash);
  if (!v.ok) {
    logLine(config, 'wal-push', 'warn', `look-ahead record for ${name} not trusted (${v.reason}); pushing it normally`);
    // A stale record would fail again at every retry: drop it.
    await removePushRecord(cache, name);
    return null;
  }
  return { sha256: rec.sha256, size: rec.size, repo, by: v.by ?? 'sha256' };
}

async function stillStored(repo: string | undefined, wal: WalName): Promise<boolean> {
  const object = localObjectPath(repo, wal);
  if (object === undefined) return true;
  return stat(object).then(
    (s) => s.isFile(),
    () => false,
  );
}

/** Where a file:// repository keeps `wal`'s object; undefined for other stores. */
export function localObjectPath(repo: string | undefined, wal: WalName): string | undefined {
  const loc = parseRepoUrl(repo);
  return loc.scheme === 'file' ? join(loc.dir, ...walObjectKey(wal).split('/')) : undefined;
}

export function logFastPathHit(config: Config, name: string, hit: FastPushHit, started: bigint): void {
  const sha = `SHA-256 ${hit.sha256.slice(0, 16)}...`;
  const how = hit.by === 'identity' ? `verified by identity: device, inode, size, mtime and ctime as when its ${sha} was computed` : `${sha} verified`;
  logLine(config, 'wal-push', 'info', `${name} was uploaded ahead to ${hit.repo} and is unchanged (${how}); nothing to do (${elapsed(started)})`);
}
