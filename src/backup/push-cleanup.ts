import { retryPolicy, type Config } from '../common/config.js';
import { describe as describeError, isWalvaultError } from '../common/errors.js';
import { log } from '../common/log.js';
import { Deadline, withRetry } from '../common/retry.js';
import type { Storage } from '../storage/types.js';
import { BACKUPS_PREFIX, SENTINEL_OBJECT } from './catalog.js';
import { phase } from './wait.js';

// What a failed or interrupted backup-push leaves behind. Nothing without backup.json counts for
// backup-list or backup-fetch; still, its objects cost storage, so they go when we can help it.

/** A backup-push killed with SIGKILL cannot abort its multipart upload: the next one does. */
export async function cleanStaleUploads(storage: Storage, config: Config): Promise<void> {
  const olderThan = new Date(Date.now() - config.backupStaleUploadAge * 1000);
  const deadline = new Deadline(config.deadline * 1000);
  try {
    const n = await withRetry('abort stale backup uploads', retryPolicy(config), deadline, (signal) =>
      storage.abortStaleUploads(BACKUPS_PREFIX, olderThan, { signal }),
    );
    if (n > 0) log.info(`aborted ${n} incomplete backup upload${n === 1 ? '' : 's'} older than ${config.backupStaleUploadAge}s (left by an interrupted backup-push)`);
  } catch (e) {
    // Append-only credentials may lack these two rights: walvault delete aborts the uploads instead.
    const hint = denied(e) ? ' (these credentials may not list or abort multipart uploads: s3:ListBucketMultipartUploads, s3:AbortMultipartUpload; walvault delete aborts them)' : '';
    log.warn(`cannot clean up incomplete backup uploads${hint}: ${describeError(e)}`);
  } finally {
    deadline.dispose();
  }
}

/**
 * Time the store gets to finish a write we stopped waiting for. Aborting a request closes our side of
 * the connection; a store that already had the whole body (a block map, a small data object) still
 * completes the PUT, and the object can land after the first sweep listed the directory.
 */
export const LATE_WRITE_SETTLE_MS = 1000;

/**
 * Best effort: removes every object under backups/<id>/ (a backup that failed before its
 * backup.json was written, which is why nothing reads them). Call it once no upload of that backup
 * is in flight any more. A second sweep after LATE_WRITE_SETTLE_MS removes what the store completed
 * after the first; anything later still is a directory without backup.json, which restore ignores
 * and `walvault delete` removes once it is older than backupStaleUploadAge.
 */
export async function removeIncompleteBackup(storage: Storage, config: Config, id: string, settleMs = LATE_WRITE_SETTLE_MS): Promise<void> {
  const dir = `${BACKUPS_PREFIX}${id}/`;
  try {
    let removed = 0;
    for (let sweep = 0; sweep < 2; sweep++) {
      if (sweep > 0) await new Promise((r) => setTimeout(r, settleMs));
      const keys = await phase(config, `list ${dir}`, async (signal) => {
        const out: string[] = [];
        for await (const o of storage.list(dir, { signal })) out.push(o.key);
        return out;
      });
      if (keys.includes(`${dir}${SENTINEL_OBJECT}`)) return; // complete after all: never remove a recorded backup
      for (let i = 0; i < keys.length; i += 1000) {
        const batch = keys.slice(i, i + 1000);
        await phase(config, `remove the incomplete backup ${dir}`, (signal) => storage.delete(batch, { signal }));
      }
      removed += keys.length;
    }
    // The reason follows as the error line: repeating it here would only double a long line.
    if (removed > 0) log.info(`removed the incomplete backup ${storage.url}/${dir} (${removed} object${removed === 1 ? '' : 's'})`);
  } catch (e) {
    // Append-only credentials (README "Append-only credentials"): expected, and not this push's failure.
    const later = denied(e) ? `; walvault delete removes it once it is older than backupStaleUploadAge (${config.backupStaleUploadAge}s)` : '';
    log.warn(`could not remove the incomplete backup ${storage.url}/${dir} (it has no ${SENTINEL_OBJECT}, so it is ignored${later}): ${describeError(e)}`);
  }
}

const denied = (e: unknown) => isWalvaultError(e) && e.code === 'AccessDenied';
