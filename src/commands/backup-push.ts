import { backupError } from '../common/errors.js';
import type { Config } from '../common/config.js';
import { log } from '../common/log.js';
import { openRepository } from '../archive/repository.js';
import type { BaseBackupOptions } from '../backup/pg-basebackup.js';
import { chooseBackupMethod, type BackupMethod } from '../backup/choose-method.js';
import { cleanStaleUploads } from '../backup/push-cleanup.js';
import { pushFiles } from '../backup/push-files.js';
import { findBaseBackup, pushStream } from '../backup/push-stream.js';

// walvault backup-push: a base backup read by pg_basebackup (--method stream, format 1) or file by
// file from the data directory with jobs workers (--method files, format 2), then the same end
// (backup/push-finish.ts): backup.json, the sentinel, is written only once the WAL segment that ends
// the backup is in the archive; until then the backup does not exist for backup-list and backup-fetch.

export interface BackupPushOptions extends BaseBackupOptions {
  /** Undefined: files when the server's data directory is readable here, else stream (resolveMethod). */
  method?: BackupMethod;
  /** Store only what changed since the newest backup of this system and timeline history. */
  incremental?: boolean;
}

export async function backupPush(config: Config, opts: BackupPushOptions): Promise<number> {
  if (opts.method === 'files' && opts.maxRate !== undefined) throw backupError('--max-rate applies to --method stream only');
  const method = await resolveMethod(config, opts);
  if (method === 'stream' && opts.incremental) throw backupError('--incremental needs --method files (walvault reads the files itself to compare their blocks)');
  const bin = method === 'stream' ? findBaseBackup(config) : undefined;
  const storage = await openRepository(config);
  const abort = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => {
    if (abort.signal.aborted) return; // stopping already
    log.warn(`received ${sig}: stopping the backup and aborting the upload`);
    abort.abort(backupError(`interrupted by ${sig}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    await cleanStaleUploads(storage, config);
    if (bin) return await pushStream(storage, config, opts, bin, abort.signal);
    return await pushFiles(storage, config, opts, abort.signal);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    storage.close();
  }
}

/** An explicit --method wins; --max-rate means stream (the files method has no rate limit). */
async function resolveMethod(config: Config, opts: BackupPushOptions): Promise<BackupMethod> {
  if (opts.method) return opts.method;
  if (opts.maxRate !== undefined) {
    log.info('using --method stream: --max-rate limits pg_basebackup only');
    return 'stream';
  }
  const choice = await chooseBackupMethod(config, opts.dbname);
  log.info(`using --method ${choice.method}: ${choice.reason}`);
  return choice.method;
}
