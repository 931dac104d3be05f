import { describe } from '../common/errors.js';
import { log } from '../common/log.js';
import type { PreparedWal } from '../archive/local-wal.js';
import { writePushRecord } from './records.js';

// What a look-ahead batch (wal-push's own, or the worker's) adds to pushing one file: a memory budget
// shared by the files in flight, and a record of each upload for the file's own wal-push.

/**
 * Bytes of memory the uploads of one wal-push may hold at once (see ByteBudget); one file always fits.
 * A file up to IN_MEMORY_MAX counts its size, a larger (streamed) one STREAMED_MEMORY.
 */
export const LOOKAHEAD_MEMORY = 32 * 1024 * 1024;

/** Records a look-ahead upload in the spool so that the file's own wal-push can skip the network. */
export async function recordUpload(repoCache: string, repoUrl: string, file: PreparedWal): Promise<void> {
  await writePushRecord(repoCache, {
    v: 1,
    name: file.wal.name,
    size: file.size,
    sha256: file.sha256,
    ...file.stat,
    repo: repoUrl,
    pushedAt: new Date().toISOString(),
  }).catch((e) => log.debug(`cannot record the look-ahead upload of ${file.wal.name}: ${describe(e)}`));
}
