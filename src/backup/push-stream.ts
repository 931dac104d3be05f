import { pipeline } from 'node:stream';
import { backupError, isWalvaultError } from '../common/errors.js';
import type { Config } from '../common/config.js';
import { HashingStream } from '../fs/hash.js';
import { log } from '../common/log.js';
import type { Storage } from '../storage/types.js';
import { makeBackupId } from './catalog.js';
import { parseBackupLabel, type BackupLabel } from './label.js';
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
import { storeFileList } from './push-files.js';
import { finishBackup, uniqueId } from './push-finish.js';
import { removeIncompleteBackup } from './push-cleanup.js';
import { packTarStream, type StreamedFiles, type StreamState } from './stream-objects.js';
import { within } from './wait.js';

// backup-push --method stream: pg_basebackup -D - -Ft -X none, its tar parsed member by member and
// stored as backup format 2 (stream-objects.ts: data objects, files.json) like --method files, so
// that no single upload nears the store's limits whatever the database size. backup_label and
// backup_manifest are pg_basebackup's. Format 1 (one base.tar) was written by earlier walvault versions;
// backup-fetch still restores it.

/** Uploads in flight while the stream is read: each is a compressed object in the spool. */
const MAX_UPLOADS = 4;

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

  // pg_basebackup stdout -> byte count -> tar parser -> data objects (stream-objects.ts). Until
  // backup_label has been read (the first member) nothing is stored; back-pressure holds pg_basebackup.
  const counted = new HashingStream();
  let pipelineError: unknown;
  const pipelineDone = new Promise<void>((resolve) => {
    pipeline(pgbb.child.stdout!, counted, (e) => {
      if (e) pipelineError ??= e;
      resolve();
    });
  });
  // A failed pg_basebackup must not complete a backup of a truncated stream.
  let childError: unknown;
  // Set when the server kept the stream open past backupWaitTimeout waiting for archive_command.
  let archiveStalled = false;
  const childFailed = pgbb.exit.then((r) => {
    if (r.code !== 0 || r.signal) {
      const err = signal.aborted ? (signal.reason as Error) : baseBackupFailure(pgbb, r);
      childError = err;
      counted.destroy(err);
      throw err;
    }
    return r;
  });
  childFailed.catch(() => undefined);
  const onAbort = () => counted.destroy(signal.reason as Error);
  signal.addEventListener('abort', onAbort, { once: true });
  const state: StreamState = { files: new Map() };
  const watch = watchArchiveWait({
    source: pgbb.child.stdout!,
    // pg_control is sent last, and pg_basebackup's stdio may hold back the end of it.
    streamed: () => state.lastEntry === 'global/pg_control',
    released: () => state.files.has('backup_manifest'),
    timeoutMs: config.backupWaitTimeout * 1000,
    onTimeout: () => {
      archiveStalled = true;
      log.warn(`the server is still waiting for WAL to be archived ${config.backupWaitTimeout}s after the data was streamed; stopping pg_basebackup (pid ${pgbb.child.pid})`);
      counted.destroy(backupError('the WAL archive wait timed out'));
    },
  });

  let uploadedId: string | undefined;
  let label: BackupLabel | undefined;
  let progress: Progress | undefined;
  let ticker: NodeJS.Timeout | undefined;
  let packed: Promise<StreamedFiles> | undefined;
  try {
    packed = packTarStream(counted, state, {
      storage,
      config,
      bundleSize: config.backupBundleSize,
      // The tar is read in order: one object is read while up to this many are uploaded.
      uploads: Math.max(1, Math.min(config.backupJobs ?? 2, MAX_UPLOADS)),
      signal,
      start: async (labelBuf) => {
        label = parseBackupLabel(labelBuf.toString('utf8'));
        const startTime = label.startTime ?? new Date();
        const id = await uniqueId(storage, makeBackupId(label.startSegment, startTime), config);
        uploadedId = id;
        log.info(`backup ${id}: started at ${label.startLsn} on timeline ${label.startTimeline} (${label.startSegment}), uploading to ${storage.url}`);
        const prog = (progress = new Progress(`backup-push ${id}`, undefined));
        ticker = setInterval(() => {
          prog.setTotal(pgbb.estimate());
          prog.update(counted.bytes);
        }, 200);
        ticker.unref();
        return id;
      },
    });
    packed.catch(() => undefined);
    let streamed: StreamedFiles;
    try {
      streamed = await Promise.race([packed, childFailed.then(() => packed!)]);
      // The tar ended only after pg_basebackup closed its output: what follows is immediate, unless
      // a stage or the child hangs, which must not hang backup-push.
      if ((await within(pipelineDone, EXIT_AFTER_EOF_MS)) === 'timeout') {
        throw backupError(`the backup stream did not finish ${EXIT_AFTER_EOF_MS / 1000}s after its last member was stored`);
      }
      if (pipelineError) throw pipelineError;
      if ((await within(pgbb.exit, EXIT_AFTER_EOF_MS)) === 'timeout') {
        throw backupError(`pg_basebackup (pid ${pgbb.child.pid}) closed its output but did not exit within ${EXIT_AFTER_EOF_MS / 1000}s`);
      }
      await childFailed;
    } finally {
      watch.stop();
      clearInterval(ticker);
      progress?.update(counted.bytes);
      progress?.done();
    }
    const localStop = new Date();

    // What the tar said about itself.
    const manifestBuf = state.files.get('backup_manifest');
    if (!manifestBuf) {
      throw backupError('the backup stream has no backup_manifest (pg_basebackup 13 or later writes one unless --no-manifest is given)');
    }
    const pgVersion = Number((state.files.get('PG_VERSION') ?? Buffer.from('')).toString('utf8').trim());
    const control = state.files.get('global/pg_control');
    if (!control || control.length < 8) throw backupError('the backup has no global/pg_control');
    const startNextXid = nextXidFromControl(control);
    const list = await storeFileList(storage, config, streamed.list);
    await finishBackup(storage, config, {
      id: streamed.list.backup,
      format: { format: 2, method: 'stream', type: 'full' },
      label: label!,
      manifest: manifestBuf,
      ...(state.files.has('tablespace_map') ? { tablespaceMap: state.files.get('tablespace_map')!.toString('utf8') } : {}),
      sizeBytes: streamed.sizeBytes,
      sha256: list.sha256,
      storedBytes: streamed.storedBytes + list.storedBytes,
      systemIdentifier: control.readBigUInt64LE(0).toString(),
      pgVersion: Number.isInteger(pgVersion) && pgVersion > 0 ? pgVersion : 0,
      ...(startNextXid ? { startNextXid } : {}),
      localStart,
      localStop,
    }, signal);
    return 0;
  } catch (caught) {
    watch.stop();
    clearInterval(ticker);
    progress?.done();
    counted.destroy();
    await stopBaseBackup(pgbb);
    // Every upload has settled once the packer gave up: only then can its objects be removed.
    await packed?.catch(() => undefined);
    // The root cause first: a failed pg_basebackup, an archive that never caught up or an interrupt
    // also break the stream being stored.
    const e = archiveStalled
      ? await archiveWaitError(storage, config, label?.startSegment, opts.dbname)
      : (childError ?? (signal.aborted ? signal.reason : caught));
    // Nothing without backup.json counts; still, do not leave stray objects behind when we can help it.
    if (uploadedId) await removeIncompleteBackup(storage, config, uploadedId);
    throw e instanceof Error && !isWalvaultError(e) ? backupError(`backup-push failed: ${e.message}`, { cause: e }) : e;
  } finally {
    signal.removeEventListener('abort', abortChild);
    signal.removeEventListener('abort', onAbort);
  }
}
