import { PassThrough, pipeline, type Readable } from 'node:stream';
import { backupError, describe as describeError, isWalvaultError } from '../common/errors.js';
import { retryPolicy, type Config } from '../common/config.js';
import { HashingStream } from '../fs/hash.js';
import { formatBytes, log } from '../common/log.js';
import { Deadline, withRetry } from '../common/retry.js';
import { compressStream } from '../codec/codec.js';
import {
  BACKUPS_PREFIX,
  backupKey,
  DATA_OBJECT,
  makeBackupId,
  MANIFEST_OBJECT,
  SENTINEL_OBJECT,
  sentinelBody,
} from '../backup/catalog.js';
import type { BackupInfo } from '../backup/backup-info.js';
import { backupHistoryFileName, parseBackupLabel } from '../backup/label.js';
import { manifestWalSpan, parseBackupManifest } from '../backup/manifest.js';
import { archiveWaitError, watchArchiveWait } from '../backup/archive-wait.js';
import {
  baseBackupFailure,
  EXIT_AFTER_EOF_MS,
  nextXidFromControl,
  startBaseBackup,
  stopBaseBackup,
  type BaseBackupOptions,
} from '../backup/pg-basebackup.js';
import { findPgProgram } from '../backup/pgbin.js';
import { Progress } from '../backup/progress.js';
import { TarTap } from '../backup/tar.js';
import { phase, waitForRepoManifest, waitForWal, within } from '../backup/wait.js';
import { openRepository } from '../archive/repository.js';
import type { Storage } from '../storage/types.js';
import { VERSION } from '../common/version.js';
import { segmentOfEndLsn, segmentOfLsn } from '../wal/names.js';
import { smallObjectMeta } from '../archive/objects.js';

// walvault backup-push: pg_basebackup -D - -Ft -X none, streamed through SHA-256, compression and a
// multipart upload (memory bounded by part size x queue size, whatever the database size), with the
// tar parsed on the side for backup_label and backup_manifest. backup.json, the sentinel, is written
// only once the WAL segment that ends the backup is in the archive: until then the backup does not
// exist for backup-list and backup-fetch.

/** The pg_basebackup flags backup-push passes through (see BaseBackupOptions). */
export type BackupPushOptions = BaseBackupOptions;

export async function backupPush(config: Config, opts: BackupPushOptions): Promise<number> {
  const bin = findPgProgram('pg_basebackup', config.pgBinDir);
  if (!bin) throw backupError('pg_basebackup not found: install the PostgreSQL client programs or set pgBinDir (--pg-bin-dir)');
  const storage = await openRepository(config);
  const abort = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => {
    log.warn(`received ${sig}: stopping pg_basebackup and aborting the upload`);
    abort.abort(backupError(`interrupted by ${sig}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    await cleanStaleUploads(storage, config);
    return await pushOne(storage, config, opts, bin, abort.signal);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    storage.close();
  }
}

/** A backup-push killed with SIGKILL cannot abort its multipart upload: the next one does. */
async function cleanStaleUploads(storage: Storage, config: Config): Promise<void> {
  const olderThan = new Date(Date.now() - config.backupStaleUploadAge * 1000);
  const deadline = new Deadline(config.deadline * 1000);
  try {
    const n = await withRetry('abort stale backup uploads', retryPolicy(config), deadline, (signal) =>
      storage.abortStaleUploads(BACKUPS_PREFIX, olderThan, { signal }),
    );
    if (n > 0) log.info(`aborted ${n} incomplete backup upload${n === 1 ? '' : 's'} older than ${config.backupStaleUploadAge}s (left by an interrupted backup-push)`);
  } catch (e) {
    log.warn(`cannot clean up incomplete backup uploads: ${describeError(e)}`);
  } finally {
    deadline.dispose();
  }
}

async function pushOne(storage: Storage, config: Config, opts: BackupPushOptions, bin: string, signal: AbortSignal): Promise<number> {
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

  let uploadedKey: string | undefined;
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
    uploadedKey = dataKey;
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
    const sizeBytes = hashing.bytes;
    const sha256 = hashing.digest();

    // What the tar said about itself.
    const manifestBuf = tap.files.get('backup_manifest');
    if (!manifestBuf) {
      throw backupError('the backup stream has no backup_manifest (pg_basebackup 13 or later writes one unless --no-manifest is given)');
    }
    const manifest = parseBackupManifest(manifestBuf.toString('utf8'));
    const tsMap = tap.files.get('tablespace_map');
    if ((tsMap && tsMap.toString('utf8').trim() !== '') || manifest.tablespaceFiles > 0) {
      throw backupError('the cluster has tablespaces besides pg_default and pg_global; walvault backup-push does not support them yet');
    }
    const span = manifestWalSpan(manifest);
    const pgVersion = Number((tap.files.get('PG_VERSION') ?? Buffer.from('')).toString('utf8').trim());
    const control = tap.files.get('global/pg_control');
    if (!control || control.length < 8) throw backupError('the backup has no global/pg_control');
    const systemIdentifier = control.readBigUInt64LE(0).toString();
    const startNextXid = nextXidFromControl(control);

    // The manifest as its own object (small; pg_verifybackup reads it back at restore time).
    const manifestMeta = smallObjectMeta(manifestBuf);
    await phase(config, `upload ${MANIFEST_OBJECT}`, (s) => storage.put(backupKey(id, MANIFEST_OBJECT), manifestBuf, manifestMeta, { signal: s }));

    // The backup is usable only with the WAL up to its end in the archive.
    const repo = await waitForRepoManifest(storage, config, signal);
    if (repo.systemIdentifier !== systemIdentifier) {
      throw backupError(
        `the backed-up cluster has system identifier ${systemIdentifier} but ${storage.url} archives WAL of system ${repo.systemIdentifier}: ` +
          'point backup-push at the cluster whose archive_command writes to this repository',
      );
    }
    const segSize = repo.walSegmentSize;
    const startSegment = segmentOfLsn(span.startLsn, span.startTimeline, segSize);
    const stopSegment = segmentOfEndLsn(span.stopLsn, span.stopTimeline, segSize);
    const history = label.backupFrom === 'primary' ? backupHistoryFileName(label.startSegment, label.startLsn, segSize) : undefined;
    const historyLabel = await waitForWal(storage, config, stopSegment, history, signal);

    // An instant at or after the true end: recovery targets after it are reachable from this backup.
    let stopTime = localStop;
    if (historyLabel?.stopTime) {
      const serverStopCeil = new Date(historyLabel.stopTime.getTime() + 1000);
      if (serverStopCeil > stopTime) stopTime = serverStopCeil;
    }
    const info: BackupInfo = {
      format: 1,
      id,
      label: label.label,
      startTime: startTime.toISOString(),
      stopTime: stopTime.toISOString(),
      startLsn: span.startLsn,
      stopLsn: span.stopLsn,
      checkpointLsn: label.checkpointLsn,
      timeline: label.startTimeline,
      stopTimeline: span.stopTimeline,
      startSegment,
      stopSegment,
      walSegmentSize: segSize,
      sizeBytes,
      sha256,
      storedBytes: uploaded.storedSize,
      codec: config.compression,
      fileCount: manifest.fileCount,
      filesBytes: manifest.filesBytes,
      manifestSha256: manifestMeta.sha256,
      pgVersion: Number.isInteger(pgVersion) && pgVersion > 0 ? pgVersion : (repo.pgVersion ?? 0),
      systemIdentifier,
      ...(startNextXid ? { startNextXid } : {}),
      backupFrom: label.backupFrom,
      serverStartTime: label.startTimeText,
      ...(historyLabel?.stopTimeText ? { serverStopTime: historyLabel.stopTimeText } : {}),
      walvaultVersion: VERSION,
    };
    const { body, meta } = sentinelBody(info);
    const res = await phase(config, `write ${SENTINEL_OBJECT}`, (s) => storage.putIfAbsent(backupKey(id, SENTINEL_OBJECT), body, meta, { signal: s }));
    if (!res.created) throw backupError(`${storage.url}/${backupKey(id, SENTINEL_OBJECT)} already exists; not overwriting it`);
    const secs = (localStop.getTime() - localStart.getTime()) / 1000;
    log.info(
      `backup ${id} complete: ${formatBytes(sizeBytes)} (${config.compression} ${formatBytes(uploaded.storedSize)}), ` +
        `${info.startLsn} - ${info.stopLsn} on timeline ${info.timeline}, WAL ${startSegment} - ${stopSegment} archived, ` +
        `${secs.toFixed(1)} s, ${formatBytes(Math.round(sizeBytes / Math.max(secs, 0.001)))}/s`,
    );
    process.stdout.write(`${id}\n`);
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
    if (uploadedKey) await removeQuietly(storage, config, uploadedKey);
    throw e instanceof Error && !isWalvaultError(e) ? backupError(`backup-push failed: ${e.message}`, { cause: e }) : e;
  } finally {
    signal.removeEventListener('abort', abortChild);
    signal.removeEventListener('abort', onAbort);
  }
}

async function removeQuietly(storage: Storage, config: Config, dataKey: string): Promise<void> {
  const dir = dataKey.slice(0, dataKey.lastIndexOf('/') + 1);
  try {
    await phase(config, `remove the incomplete backup ${dir}`, (s) =>
      storage.delete([dataKey, `${dir}${MANIFEST_OBJECT}`], { signal: s }),
    );
    // The reason follows as the error line: repeating it here would only double a long line.
    log.info(`removed the incomplete backup ${storage.url}/${dir}`);
  } catch (e) {
    log.warn(`could not remove the incomplete backup ${storage.url}/${dir} (it has no ${SENTINEL_OBJECT}, so it is ignored): ${describeError(e)}`);
  }
}

async function uniqueId(storage: Storage, base: string, config: Config): Promise<string> {
  for (let n = 0; ; n++) {
    const id = n === 0 ? base : `${base}_${n + 1}`;
    const taken = await phase(config, `check ${BACKUPS_PREFIX}${id}/`, async (signal) => {
      for await (const _ of storage.list(`${BACKUPS_PREFIX}${id}/`, { signal })) return true;
      return false;
    });
    if (!taken) return id;
  }
}
