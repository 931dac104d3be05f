import { spawn, type ChildProcess } from 'node:child_process';
import { PassThrough, pipeline, type Readable } from 'node:stream';
import { backupError, describe as describeError, isWalvaultError, WalvaultError } from '../common/errors.js';
import { retryPolicy, type Config } from '../common/config.js';
import { HashingStream, sha256Hex } from '../common/hash.js';
import { formatBytes, log } from '../common/log.js';
import { Deadline, withRetry } from '../common/retry.js';
import { compressStream } from '../codec/codec.js';
import {
  BACKUPS_PREFIX,
  backupKey,
  DATA_OBJECT,
  makeBackupId,
  readObjectText,
  MANIFEST_OBJECT,
  SENTINEL_OBJECT,
  sentinelBody,
  type BackupInfo,
} from '../backup/catalog.js';
import { backupHistoryFileName, parseBackupLabel, type BackupLabel } from '../backup/label.js';
import { manifestWalSpan, parseBackupManifest } from '../backup/manifest.js';
import { findPgProgram } from '../backup/pgbin.js';
import { Progress } from '../backup/progress.js';
import { TarTap } from '../backup/tar.js';
import { readRemoteManifest, type RepoManifest } from '../repo/manifest.js';
import { openStorage } from '../storage/open.js';
import type { Storage } from '../storage/types.js';
import { VERSION } from '../version.js';
import { parseWalName, segmentOfLsn, walObjectKey } from '../wal/names.js';

// walvault backup-push: pg_basebackup -D - -Ft -X none, streamed through SHA-256, compression and a
// multipart upload (memory bounded by part size x queue size, whatever the database size), with the
// tar parsed on the side for backup_label and backup_manifest. backup.json, the sentinel, is written
// only once the WAL segment that ends the backup is in the archive: until then the backup does not
// exist for backup-list and backup-fetch.

export interface BackupPushOptions {
  dbname?: string;
  checkpoint: 'fast' | 'spread';
  /** pg_basebackup --max-rate, e.g. "50M" (32 kB/s to 1 GB/s). */
  maxRate?: string;
}

interface BaseBackupProcess {
  child: ChildProcess;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderrTail: () => string;
  /** pg_basebackup --progress: the server's estimate of the total size, in bytes. */
  estimate: () => number | undefined;
}

function startBaseBackup(bin: string, opts: BackupPushOptions, label: string): BaseBackupProcess {
  const args = ['-D', '-', '-Ft', '-X', 'none', `--checkpoint=${opts.checkpoint}`, '--label', label, '--progress', '--no-password'];
  if (opts.dbname) args.push('--dbname', opts.dbname);
  if (opts.maxRate) args.push(`--max-rate=${opts.maxRate}`);
  log.info(`running ${bin} ${args.map((a) => (/\s/.test(a) ? JSON.stringify(a) : a)).join(' ').replace(/--dbname \S+/, '--dbname ****')}`);
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let estimate: number | undefined;
  let partial = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => {
    const parts = (partial + d).split(/[\r\n]/);
    partial = parts.pop() ?? '';
    for (const line of parts) {
      if (!line.trim()) continue;
      const m = /^\s*(\d+)\/(\d+) kB \(\d+%\)/.exec(line);
      if (m) {
        estimate = Number(m[2]) * 1024;
        continue;
      }
      lines.push(line);
      if (lines.length > 30) lines.shift();
      log.debug(`pg_basebackup: ${line}`);
    }
  });
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('error', (e) => {
      lines.push(`cannot run ${bin}: ${e.message}`);
      resolve({ code: 127, signal: null });
    });
    child.on('close', (code, signal) => resolve({ code, signal }));
  });
  return { child, exit, stderrTail: () => [...lines, partial].filter((l) => l.trim()).join('\n'), estimate: () => estimate };
}

function baseBackupFailure(p: BaseBackupProcess, r: { code: number | null; signal: NodeJS.Signals | null }): WalvaultError {
  const tail = p.stderrTail();
  const how = r.signal ? `was killed by ${r.signal}` : `exited with ${r.code}`;
  if (/can only write single tablespace to stdout/.test(tail)) {
    return backupError(
      `the cluster has more than one tablespace; walvault backup-push supports only clusters without additional tablespaces for now (pg_basebackup: ${tail.split('\n').find((l) => /tablespace/.test(l))?.trim()})`,
    );
  }
  return backupError(`pg_basebackup ${how}${tail ? `: ${tail.replace(/\n/g, ' | ')}` : ''}`);
}

export async function backupPush(config: Config, opts: BackupPushOptions): Promise<number> {
  const bin = findPgProgram('pg_basebackup', config.pgBinDir);
  if (!bin) throw backupError('pg_basebackup not found: install the PostgreSQL client programs or set pgBinDir (--pg-bin-dir)');
  const storage = await openStorage(config);
  const policy = retryPolicy(config);
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

  let uploadedKey: string | undefined;
  let progress: Progress | undefined;
  try {
    const labelBuf = await Promise.race([tap.label, childFailed.then(() => tap.label)]);
    const label = parseBackupLabel(labelBuf.toString('utf8'));
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
      await pipelineDone;
      if (pipelineError) throw pipelineError;
      await childFailed;
    } finally {
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
    const manifestMeta = { sha256: sha256Hex(manifestBuf), size: String(manifestBuf.length), codec: 'none' };
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
    const stopSegment = segmentOfLsn(span.stopLsn, span.stopTimeline, segSize);
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
    progress?.done();
    pgbb.child.kill('SIGTERM');
    out.destroy();
    // The root cause first: a failed pg_basebackup or an interrupt also breaks the upload's source.
    await Promise.race([pgbb.exit, new Promise((r) => setTimeout(r, 2000))]);
    const e = childError ?? (signal.aborted ? signal.reason : caught);
    // Nothing without backup.json counts; still, do not leave a stray tar behind when we can help it.
    if (uploadedKey) await removeQuietly(storage, config, uploadedKey, e);
    throw e instanceof Error && !isWalvaultError(e) ? backupError(`backup-push failed: ${e.message}`, { cause: e }) : e;
  } finally {
    signal.removeEventListener('abort', abortChild);
    signal.removeEventListener('abort', onAbort);
    await pgbb.exit;
  }
}

/**
 * checkPointCopy.nextXid from pg_control (ControlFileData: system_identifier u64 @0,
 * pg_control_version u32 @8, ..., checkPoint @32, checkPointCopy @40 whose nextXid, a 64-bit
 * FullTransactionId, sits at +24). That layout holds for pg_control versions 1201 (PostgreSQL 12),
 * 1300 (13-16) and 1700 (17); for any other version nothing is recorded.
 */
export function nextXidFromControl(control: Buffer): string | undefined {
  if (control.length < 72) return undefined;
  const version = control.readUInt32LE(8);
  if (![1201, 1300, 1700].includes(version)) return undefined;
  return control.readBigUInt64LE(64).toString();
}

async function phase<T>(config: Config, what: string, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const deadline = new Deadline(config.deadline * 1000);
  try {
    return await withRetry(what, retryPolicy(config), deadline, fn);
  } finally {
    deadline.dispose();
  }
}

async function removeQuietly(storage: Storage, config: Config, dataKey: string, why: unknown): Promise<void> {
  const dir = dataKey.slice(0, dataKey.lastIndexOf('/') + 1);
  try {
    await phase(config, `remove the incomplete backup ${dir}`, (s) =>
      storage.delete([dataKey, `${dir}${MANIFEST_OBJECT}`], { signal: s }),
    );
    log.info(`removed the incomplete backup ${storage.url}/${dir} after: ${describeError(why)}`);
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

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    }, { once: true });
  });

async function waitForRepoManifest(storage: Storage, config: Config, signal: AbortSignal): Promise<RepoManifest> {
  const until = Date.now() + config.backupWaitTimeout * 1000;
  for (let delay = 500; ; delay = Math.min(delay * 2, 5000)) {
    const m = await phaseManifest(storage, config);
    if (m) return m;
    if (signal.aborted) throw signal.reason;
    if (Date.now() >= until) {
      throw backupError(
        `${storage.url} has no walvault.json: no WAL has ever been archived there. Set archive_command = 'walvault wal-push %p %f' ` +
          'on this cluster (same repository) before taking backups',
      );
    }
    await sleep(delay, signal);
  }
}

async function phaseManifest(storage: Storage, config: Config): Promise<RepoManifest | null> {
  const deadline = new Deadline(config.deadline * 1000);
  try {
    return await readRemoteManifest(storage, retryPolicy(config), deadline);
  } finally {
    deadline.dispose();
  }
}

/**
 * Polls until the segment holding the stop LSN (and the backup history file, for a backup taken
 * from a primary) is archived, at most backupWaitTimeout. Returns the parsed history file if found.
 */
async function waitForWal(
  storage: Storage,
  config: Config,
  stopSegment: string,
  historyName: string | undefined,
  signal: AbortSignal,
): Promise<BackupLabel | undefined> {
  const started = Date.now();
  const until = started + config.backupWaitTimeout * 1000;
  const segKey = walObjectKey(parseWalName(stopSegment));
  const histKey = historyName ? walObjectKey(parseWalName(historyName)) : undefined;
  let segDone = false;
  let history: BackupLabel | undefined;
  let histDone = histKey === undefined;
  let announced = false;
  for (let delay = 250; ; delay = Math.min(delay * 2, 5000)) {
    if (!segDone) segDone = (await phase(config, `head ${segKey}`, (s) => storage.head(segKey, { signal: s }))) !== null;
    if (!histDone && histKey) {
      const text = await phase(config, `read ${histKey}`, (s) => readObjectText(storage, histKey, s));
      if (text !== null) {
        histDone = true;
        try {
          history = parseBackupLabel(text, historyName);
        } catch (e) {
          log.warn(`cannot read the backup history file ${historyName}: ${describeError(e)}`);
        }
      }
    }
    if (segDone && histDone) {
      log.info(`WAL segment ${stopSegment} that ends the backup is archived${announced ? ` (after ${((Date.now() - started) / 1000).toFixed(1)} s)` : ''}`);
      return history;
    }
    if (signal.aborted) throw signal.reason;
    if (Date.now() >= until) {
      if (segDone) {
        log.warn(`the backup history file ${historyName} did not appear in ${storage.url}; using walvault's clock for the stop time`);
        return undefined;
      }
      throw backupError(
        `WAL segment ${stopSegment}, which holds the end of the backup, was not archived to ${storage.url} within ${config.backupWaitTimeout}s ` +
          '(backupWaitTimeout): is archive_command walvault wal-push with this repository, and is archiving keeping up? The backup is not usable without it and was not recorded',
      );
    }
    if (!announced) {
      log.info(`waiting for WAL segment ${stopSegment} to be archived (at most ${config.backupWaitTimeout}s)`);
      announced = true;
    }
    await sleep(delay, signal);
  }
}
