import { PassThrough, pipeline, type Readable } from 'node:stream';
import { backupError, isWalvaultError } from '../common/errors.js';
import type { Config } from '../common/config.js';
import { HashingStream } from '../fs/hash.js';
import { log } from '../common/log.js';
import { compressStream } from '../codec/codec.js';
import type { Storage } from '../storage/types.js';
import { backupKey, DATA_OBJECT, makeBackupId } from './catalog.js';
import { parseBackupLabel } from './label.js';
import { archiveWaitError, watchArchiveWait } from './archive-wait.js';
import {
  baseBackupFailure,
  EXIT_AFTER_EOF_MS,
  nextXidFromControl,
  startBaseBackup,
  stopBaseBackup,
  type BaseBackupOptions,
} from './pg-basebackup.js';
import { findPgProgram } from './pgbin.js';
import { Progress } from './progress.js';
import { finishBackup, uniqueId } from './push-finish.js';
import { removeIncompleteBackup } from './push-cleanup.js';
import { TarTap } from './tar.js';
import { within } from './wait.js';

// backup-push --method stream: pg_basebackup -D - -Ft -X none, streamed through SHA-256, compression
// and a multipart upload (memory bounded by part size x queue size, whatever the database size), with
// the tar parsed on the side for backup_label and backup_manifest; backup format 1 (one base.tar).

/** pg_basebackup's path: looked up before anything else, so a missing one is the first thing said. */
export function findBaseBackup(config: Config): string {
  const bin = findPgProgram('pg_basebackup', config.pgBinDir);
  if (!bin) throw backupError('pg_basebackup not found: install the PostgreSQL client programs or set pgBinDir (--pg-bin-dir)');
  return bin;
}

export async function pushStream(storage: Storage, config: Config, opts: BaseBackupOptions, bin: string, signal: AbortSignal): Promise<number> {
  const localStart = new Date();
  const pgbb = startBaseBackup(bin, opts, `walvault-${localStart.toISOString()}`);
  const abortChild = () => pgbb.child.kill('SIGTERM');
  signal.addEventListener('abort', abortChild, { once: true });

  // pg_basebackup stdout -> SHA-256 -> tar tap -> compression -> upload. Until backup_label has been
  // read (the first tar member) the upload does not start; back-pressure holds pg_basebackup.
  const hashing = new HashingStream();
  const tap = new TarTap();
  const compress = compressStream(config.compression, config.compressionLevel);
  const out = new PassThrough({ highWaterMark: 1024 * 1024 });
  const stages: NodeJS.ReadWriteStream[] = [hashing, tap, ...(compress ? [compress] : []), out];
  let pipelineError: unknown;
  const pipelineDone = new Promise<void>((resolve) => {
    (pipeline as (...a: unknown[]) => void)(pgbb.child.stdout!, ...stages, (e: unknown) => {
      if (e) pipelineError ??= e;
      resolve();
    });
  });
  // A failed pg_basebackup must not complete the upload of a truncated stream.
  let childError: unknown;
  // Set when the server kept the stream open past backupWaitTimeout waiting for archive_command.
  let archiveStalled = false;
  const childFailed = pgbb.exit.then((r) => {
    if (r.code !== 0 || r.signal) {
      const err = signal.aborted ? (signal.reason as Error) : baseBackupFailure(pgbb, r);
      childError = err;
      out.destroy(err);
      throw err;
    }
    return r;
  });
  childFailed.catch(() => undefined);
  const onAbort = () => out.destroy(signal.reason as Error);
  signal.addEventListener('abort', onAbort, { once: true });
  const watch = watchArchiveWait({
    source: pgbb.child.stdout!,
    // pg_control is sent last, and pg_basebackup's stdio may hold back the end of it.
    streamed: () => tap.lastEntry === 'global/pg_control',
    released: () => tap.files.has('backup_manifest'),
    timeoutMs: config.backupWaitTimeout * 1000,
    onTimeout: () => {
      archiveStalled = true;
      log.warn(`the server is still waiting for WAL to be archived ${config.backupWaitTimeout}s after the data was streamed; stopping pg_basebackup (pid ${pgbb.child.pid})`);
      out.destroy(backupError('the WAL archive wait timed out'));
    },
  });

  let uploadedId: string | undefined;
  let labelStart: string | undefined;
  let progress: Progress | undefined;
  try {
    const labelBuf = await Promise.race([tap.label, childFailed.then(() => tap.label)]);
    const label = parseBackupLabel(labelBuf.toString('utf8'));
    labelStart = label.startSegment;
    const startTime = label.startTime ?? new Date();
    const id = await uniqueId(storage, makeBackupId(label.startSegment, startTime), config);
    log.info(`backup ${id}: started at ${label.startLsn} on timeline ${label.startTimeline} (${label.startSegment}), uploading to ${storage.url}`);

    progress = new Progress(`backup-push ${id}`, undefined);
    const prog = progress;
    const ticker = setInterval(() => {
      prog.setTotal(pgbb.estimate());
      prog.update(hashing.bytes);
    }, 200);
    ticker.unref();
    const dataKey = backupKey(id, DATA_OBJECT);
    uploadedId = id;
    let uploaded: { storedSize: number };
    try {
      const expectedSize = pgbb.estimate();
      uploaded = await storage.upload(dataKey, out as Readable, { codec: config.compression, format: 'tar', backup: id }, {
        signal,
        ...(expectedSize ? { expectedSize } : {}),
      });
      // The upload ends only after pg_basebackup closed its output: what follows is immediate, unless
      // a stage or the child hangs, which must not hang backup-push.
      if ((await within(pipelineDone, EXIT_AFTER_EOF_MS)) === 'timeout') {
        throw backupError(`the backup stream did not finish ${EXIT_AFTER_EOF_MS / 1000}s after its upload completed`);
      }
      if (pipelineError) throw pipelineError;
      if ((await within(pgbb.exit, EXIT_AFTER_EOF_MS)) === 'timeout') {
        throw backupError(`pg_basebackup (pid ${pgbb.child.pid}) closed its output but did not exit within ${EXIT_AFTER_EOF_MS / 1000}s`);
      }
      await childFailed;
    } finally {
      watch.stop();
      clearInterval(ticker);
      prog.update(hashing.bytes);
      prog.done();
    }
    const localStop = new Date();

    // What the tar said about itself.
    const manifestBuf = tap.files.get('backup_manifest');
    if (!manifestBuf) {
      throw backupError('the backup stream has no backup_manifest (pg_basebackup 13 or later writes one unless --no-manifest is given)');
    }
    const pgVersion = Number((tap.files.get('PG_VERSION') ?? Buffer.from('')).toString('utf8').trim());
    const control = tap.files.get('global/pg_control');
    if (!control || control.length < 8) throw backupError('the backup has no global/pg_control');
    const startNextXid = nextXidFromControl(control);
    await finishBackup(storage, config, {
      id,
      format: { format: 1 },
      label,
      manifest: manifestBuf,
      ...(tap.files.has('tablespace_map') ? { tablespaceMap: tap.files.get('tablespace_map')!.toString('utf8') } : {}),
      sizeBytes: hashing.bytes,
      sha256: hashing.digest(),
      storedBytes: uploaded.storedSize,
      systemIdentifier: control.readBigUInt64LE(0).toString(),
      pgVersion: Number.isInteger(pgVersion) && pgVersion > 0 ? pgVersion : 0,
      ...(startNextXid ? { startNextXid } : {}),
      localStart,
      localStop,
    }, signal);
    return 0;
  } catch (caught) {
    watch.stop();
    progress?.done();
    out.destroy();
    await stopBaseBackup(pgbb);
    // The root cause first: a failed pg_basebackup, an archive that never caught up or an interrupt
    // also break the upload's source. The upload itself was aborted when its source failed.
    const e = archiveStalled
      ? await archiveWaitError(storage, config, labelStart, opts.dbname)
      : (childError ?? (signal.aborted ? signal.reason : caught));
    // Nothing without backup.json counts; still, do not leave a stray tar behind when we can help it.
    if (uploadedId) await removeIncompleteBackup(storage, config, uploadedId);
    throw e instanceof Error && !isWalvaultError(e) ? backupError(`backup-push failed: ${e.message}`, { cause: e }) : e;
  } finally {
    signal.removeEventListener('abort', abortChild);
    signal.removeEventListener('abort', onAbort);
  }
}
